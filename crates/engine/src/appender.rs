//! Writing at the end of the log: the open segment, rollover to a new one, and syncing.
//!
//! Used by the single writer thread on a single node, and by the replicated entry log on a
//! cluster node. Either way there is exactly one appender per store. Any failure turns the
//! store read-only (a write that may have half-happened cannot be retried in place).

use std::sync::Arc;

use crate::engine::{Durability, Shared};
use crate::segment::Segment;

pub(crate) struct Appender {
    pub(crate) active: Arc<Segment>,
    /// Logical end of the log: where the next record goes.
    pub(crate) write_pos: u64,
    /// Segments written since the last sync (more than one after a rollover).
    unsynced: Vec<Arc<Segment>>,
}

fn durable(shared: &Shared) -> bool {
    shared.config.durability == Durability::Fsync
}

impl Appender {
    pub(crate) fn new(active: Arc<Segment>, write_pos: u64) -> Self {
        Appender {
            active,
            write_pos,
            unsynced: Vec::new(),
        }
    }

    /// Writes `buf` at the end of the log, first starting a new segment when it would take
    /// the open one past the segment size (so `buf` is never split across segments). With
    /// `sync`, the write is followed by an fdatasync of everything written so far.
    pub(crate) fn write(&mut self, shared: &Shared, buf: &[u8], sync: bool) -> Result<(), String> {
        if let Some(reason) = shared.poisoned() {
            return Err(reason);
        }
        let durable = durable(shared);
        let used = self.write_pos - self.active.base;
        if used > 0 && used + buf.len() as u64 > shared.config.segment_size {
            match shared.log.create_segment(self.write_pos, durable) {
                Ok(seg) => {
                    tracing::debug!(base = seg.base, path = %seg.path.display(), "rolled over to a new segment");
                    if let Err(e) = shared.index.note_newest_segment(seg.base) {
                        tracing::error!(error = %e, "could not record the new segment in the index; a later loss of it would go unnoticed at open");
                    }
                    self.active = seg;
                }
                Err(e) => return Err(shared.poison(format!("creating a new segment failed: {e}"))),
            }
        }
        let offset = self.active.offset_of(self.write_pos);
        let sync_now = sync && durable && self.unsynced.is_empty();
        let written = if sync_now {
            self.active.file.write_all_at_durable(buf, offset)
        } else {
            self.active.file.write_all_at(buf, offset)
        };
        if let Err(e) = written {
            let what = if sync_now {
                "durable write (write + fdatasync)"
            } else {
                "write"
            };
            return Err(shared.poison(format!(
                "{what} of {} bytes to {} at offset {offset} failed: {e}",
                buf.len(),
                self.active.path.display()
            )));
        }
        self.write_pos += buf.len() as u64;
        if !sync_now && durable && !self.unsynced.iter().any(|s| s.base == self.active.base) {
            self.unsynced.push(self.active.clone());
        }
        if sync && !sync_now {
            self.sync(shared)?;
        }
        // Acknowledge nothing that went into a deleted file.
        if let Some(reason) = crate::unlinked::check(shared, &self.active, true) {
            return Err(reason);
        }
        Ok(())
    }

    /// Makes everything written so far durable (nothing to do in no-sync mode).
    pub(crate) fn sync(&mut self, shared: &Shared) -> Result<(), String> {
        for seg in std::mem::take(&mut self.unsynced) {
            if let Err(e) = seg.file.sync_data() {
                return Err(
                    shared.poison(format!("fdatasync of {} failed: {e}", seg.path.display()))
                );
            }
        }
        Ok(())
    }

    /// Cuts the log back to `position` (an entry boundary at or past the committed end):
    /// later segments are removed, the one holding `position` is shortened, and the cut is
    /// made durable before anything else is written.
    pub(crate) fn cut(&mut self, shared: &Shared, position: u64) -> Result<(), String> {
        if let Some(reason) = shared.poisoned() {
            return Err(reason);
        }
        let durable = durable(shared);
        let fail = |what: String| shared.poison(what);
        let (keep, removed) = shared.log.cut_segments(position);
        for seg in &removed {
            if let Err(e) = shared.log.fs.remove(&seg.path) {
                return Err(fail(format!(
                    "removing {} to truncate the log failed: {e}",
                    seg.path.display()
                )));
            }
        }
        if let Err(e) = keep.file.set_len(keep.offset_of(position)) {
            return Err(fail(format!(
                "truncating {} failed: {e}",
                keep.path.display()
            )));
        }
        if durable {
            if let Err(e) = keep.file.sync_data() {
                return Err(fail(format!(
                    "fdatasync of {} failed: {e}",
                    keep.path.display()
                )));
            }
            if !removed.is_empty() {
                if let Err(e) = shared.log.fs.sync_dir(&shared.log.dir) {
                    return Err(fail(format!(
                        "fsync of {} failed: {e}",
                        shared.log.dir.display()
                    )));
                }
            }
        }
        if !removed.is_empty() {
            if let Err(e) = shared.index.note_newest_segment(keep.base) {
                return Err(fail(format!(
                    "recording the newest segment after a truncation failed: {e}"
                )));
            }
        }
        self.unsynced.retain(|s| s.base <= keep.base);
        self.active = keep;
        self.write_pos = position;
        Ok(())
    }
}
