//! Gives memory that the server has freed back to the operating system.
//!
//! glibc's allocator keeps freed memory in per-thread arenas for reuse. After a burst (large
//! appends whose answers nobody read, pages of a read whose client stalled) the arenas can hold
//! hundreds of MiB that nothing uses, and the resident set never comes down: an operator sees a
//! server that kept what its clients made it hold. A background thread looks once a second at
//! how much the arenas hold free and, past a threshold, asks glibc to return it (`malloc_trim`).
//! The threshold keeps a busy server from handing back and faulting in the same pages
//! continuously; the check itself walks the free lists and costs well under a millisecond.

use std::time::Duration;

/// Free memory the allocator may keep for reuse before it is asked to give it back.
const KEEP_FREE_BYTES: usize = 32 << 20;
const EVERY: Duration = Duration::from_secs(1);

/// Starts the thread (glibc only; other allocators manage this themselves).
pub fn start() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("strata-trim".into())
            .spawn(|| loop {
                std::thread::sleep(EVERY);
                trim_if_worthwhile();
            });
        if let Err(e) = spawned {
            tracing::warn!(
                "cannot start the memory-trim thread ({e}); freed memory stays with the allocator"
            );
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_if_worthwhile() {
    // SAFETY: both are plain glibc calls with no pointer arguments; they lock the arenas
    // themselves.
    let free = unsafe { libc::mallinfo2() }.fordblks;
    if free > KEEP_FREE_BYTES {
        unsafe { libc::malloc_trim(0) };
        let after = unsafe { libc::mallinfo2() }.fordblks;
        tracing::debug!(
            free,
            after,
            "gave freed memory back to the operating system"
        );
    }
}
