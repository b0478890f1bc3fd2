//! One memory budget for what all clients together can make the server hold while it waits on
//! them: read pages and subscription messages queued for clients that do not take them, and
//! appends read from clients but not yet answered. Each of these is also bounded per call (see
//! the Limits table in docs/operations.md); this bounds their sum, so that many clients at once
//! meet back-pressure or a clear RESOURCE_EXHAUSTED, never an out-of-memory kill.
//!
//! An item takes permits for its bytes from one semaphore and returns them when it is handed to
//! the transport (a response) or answered (an append). An item larger than the whole budget
//! takes all of it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// The budget when the server does not set one (unit tests of handlers).
const DEFAULT_BYTES: usize = 1 << 30;
/// How long a read or an append waits for the budget before it fails with RESOURCE_EXHAUSTED.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Budget {
    permits: Arc<Semaphore>,
    bytes: usize,
}

static BUDGET: OnceLock<Budget> = OnceLock::new();

/// Sets the server's budget; the first call wins.
pub fn init(bytes: usize) {
    let bytes = bytes.clamp(1 << 20, Semaphore::MAX_PERMITS);
    let _ = BUDGET.set(Budget {
        permits: Arc::new(Semaphore::new(bytes)),
        bytes,
    });
}

pub fn get() -> &'static Budget {
    BUDGET.get_or_init(|| Budget {
        permits: Arc::new(Semaphore::new(DEFAULT_BYTES)),
        bytes: DEFAULT_BYTES,
    })
}

impl Budget {
    /// Permits for `n` bytes, waiting while other clients hold the budget: for `wait` at most
    /// (`None`: until they come).
    pub async fn reserve(&self, n: usize, wait: Option<Duration>) -> Option<OwnedSemaphorePermit> {
        let n = n.clamp(1, self.bytes) as u32;
        let acquire = self.permits.clone().acquire_many_owned(n);
        match wait {
            None => acquire.await.ok(),
            Some(wait) => tokio::time::timeout(wait, acquire).await.ok()?.ok(),
        }
    }

    /// The answer when the budget stayed used up for as long as the call may wait.
    pub fn exhausted(&self, what: &str) -> Status {
        Status::resource_exhausted(format!(
            "the server's memory budget ({} MiB, --memory-budget) is held by data other clients have not taken yet, so this {what} cannot go on; retry later",
            self.bytes >> 20
        ))
    }

    /// Bytes not held by anyone now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    pub fn total(&self) -> usize {
        self.bytes
    }
}

/// What one request holds of the budget, growing as its bytes arrive (a client-streamed
/// append, chunk by chunk) and given back all at once when dropped (when it is answered).
#[derive(Debug, Default)]
pub struct Held(Option<OwnedSemaphorePermit>);

impl Held {
    /// Adds `n` bytes, waiting up to [`WAIT`] for other clients to give some back.
    pub async fn add(&mut self, n: usize, what: &str) -> Result<(), Status> {
        let budget = get();
        let more = budget
            .reserve(n, Some(WAIT))
            .await
            .ok_or_else(|| budget.exhausted(what))?;
        match &mut self.0 {
            Some(held) => held.merge(more),
            None => self.0 = Some(more),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_what_others_return() {
        let b = Budget {
            permits: Arc::new(Semaphore::new(100)),
            bytes: 100,
        };
        let a = b.reserve(80, None).await.unwrap();
        assert!(b
            .reserve(30, Some(Duration::from_millis(20)))
            .await
            .is_none());
        drop(a);
        assert!(b
            .reserve(30, Some(Duration::from_millis(20)))
            .await
            .is_some());
        // Larger than the whole budget: takes all of it rather than never.
        assert!(b
            .reserve(1000, Some(Duration::from_millis(20)))
            .await
            .is_some());
        assert_eq!(b.available(), 100);
    }
}
