//! Notices segment files deleted from under a running store, while their contents are still
//! reachable through the open file, and puts them back.
//!
//! A deleted segment keeps working for this process (reads and writes go to the open file),
//! but everything in it is lost when the store closes. So the writer checks the segment it
//! writes after every batch, before acknowledging it, and the index flusher checks every
//! segment on each tick. A deleted segment is copied back to its path from the open file and
//! made durable. If it was the segment being written, the store also turns read-only: later
//! writes would go to the old, deleted file. A restart opens the restored file.

use std::io::Write;
use std::sync::Mutex;

use crate::engine::Shared;
use crate::segment::Segment;

/// One restore at a time (the writer and the flusher may both notice the same file).
static RESTORING: Mutex<()> = Mutex::new(());

/// Checks `seg`; if it was deleted, restores it and returns what happened (for the log and,
/// for the active segment, the read-only reason).
pub(crate) fn check(shared: &Shared, seg: &Segment, active: bool) -> Option<String> {
    if !seg.file.is_unlinked().unwrap_or(false) {
        return None;
    }
    let _one = RESTORING.lock().unwrap_or_else(|p| p.into_inner());
    if !seg.file.is_unlinked().unwrap_or(false) {
        return None;
    }
    let name = seg.path.display();
    let outcome = match restore(seg) {
        Ok(bytes) => format!(
            "segment {name} was deleted while the store was open; its {bytes} bytes were copied back from the open file"
        ),
        Err(e) => format!(
            "segment {name} was deleted while the store was open, and copying it back from the open file failed ({e}): its data will be lost when this process exits unless the file is restored"
        ),
    };
    if active {
        Some(shared.poison(format!(
            "{outcome}; writes stop until a restart opens the restored file"
        )))
    } else {
        tracing::error!("{outcome}");
        Some(outcome)
    }
}

/// Copies the open (deleted) file to a new file at its path and makes it durable.
fn restore(seg: &Segment) -> std::io::Result<u64> {
    let len = seg.file.len()?;
    let tmp = seg.path.with_extension("seg.restoring");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < len {
        let n = seg.file.read_full_at(&mut buf, offset)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        offset += n as u64;
    }
    out.sync_all()?;
    // Never replace a file someone put back in the meantime.
    if seg.path.exists() {
        std::fs::remove_file(&tmp)?;
        return Err(std::io::Error::other(
            "a different file now has its name; left it alone",
        ));
    }
    std::fs::rename(&tmp, &seg.path)?;
    if let Some(dir) = seg.path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(offset)
}
