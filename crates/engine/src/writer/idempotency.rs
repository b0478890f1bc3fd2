//! Recognising retries of appends already written (the idempotency rule of
//! storage-format.md), against the recent-ID window and the events after an expected revision.

use super::*;

impl Writer {
    /// Recognises a retry of an append already written. `Ok(None)`: not a retry.
    ///
    /// 1. IDs in the recent-ID window: all of them at consecutive revisions of this stream (and,
    ///    for `Exact(n)`, starting at `n + 1`) is a retry; some but not all is a conflict.
    /// 2. Otherwise, when an `Exact`/`NoStream` check fails, the events after the expected
    ///    revision are compared with the append's IDs, whatever the window holds.
    pub(super) fn idempotent_check(
        &self,
        stream: &str,
        hash: u64,
        expected: ExpectedRevision,
        st: &Pending,
        ids: &[Uuid],
    ) -> Result<Option<AppendResult>> {
        let conflict = |id: Uuid, detail: String| Error::IdempotencyConflict {
            stream: stream.into(),
            event_id: id,
            detail,
        };
        let seen: Vec<Option<&Seen>> = ids
            .iter()
            .map(|id| self.recent.get_hashed(stream, hash, *id))
            .collect();
        if let Some(first_seen) = seen.iter().position(Option::is_some) {
            let Some(first) = seen[0] else {
                return Err(conflict(
                    ids[first_seen],
                    "was already written, but earlier events of the append were not".into(),
                ));
            };
            if let ExpectedRevision::Exact(n) = expected {
                if &*first.stream == stream && first.revision != n + 1 {
                    return Err(conflict(
                        ids[0],
                        format!("was already written at revision {}, not after the expected revision {n}", first.revision),
                    ));
                }
            }
            for (i, s) in seen.iter().enumerate() {
                let consistent = s.is_some_and(|s| {
                    &*s.stream == stream && s.revision == first.revision + i as u64
                });
                if !consistent {
                    let detail = match s {
                        None => {
                            "was never written, but earlier events of the append were".to_owned()
                        }
                        Some(s) => format!(
                            "was already written to stream '{}' at revision {}",
                            s.stream, s.revision
                        ),
                    };
                    return Err(conflict(ids[i], detail));
                }
            }
            let last = seen.last().and_then(|s| *s).expect("all seen");
            return Ok(Some(AppendResult {
                revision: last.revision,
                position: last.position,
                idempotent_replay: true,
            }));
        }
        let start = match expected {
            ExpectedRevision::Exact(n) => n + 1,
            ExpectedRevision::NoStream => {
                // Landed at 0, or after a soft delete at the truncate-before revision it set.
                let tb = st
                    .metadata
                    .as_ref()
                    .and_then(|m| m.truncate_before)
                    .unwrap_or(0);
                let last = st.last_revision.unwrap_or(0);
                if tb > 0 && tb <= last && self.event_id_at(stream, tb)? == Some(ids[0]) {
                    tb
                } else {
                    0
                }
            }
            ExpectedRevision::Any | ExpectedRevision::StreamExists => return Ok(None),
        };
        let Some(last) = st.last_revision else {
            return Ok(None);
        };
        if last < start || Self::expected_ok(expected, st) || self.pending.contains_key(stream) {
            return Ok(None);
        }
        let to = last.min(start + ids.len() as u64 - 1);
        let positions = self.shared.index.positions(stream, start, to)?;
        let mut cursor = Cursor::new(&self.shared.log, self.shared.log.committed_end(), 64 * 1024);
        for (i, (pos, id)) in positions.iter().zip(ids).enumerate() {
            if self.shared.read_at(&mut cursor, *pos)?.event_id != *id {
                if i == 0 {
                    return Ok(None);
                }
                return Err(conflict(
                    *id,
                    format!(
                        "is not at revision {} where the retried append would have put it (earlier events of the append are already there)",
                        start + i as u64
                    ),
                ));
            }
        }
        if positions.len() < ids.len() {
            return Err(conflict(
                ids[positions.len()],
                "was never written, but the events before it in the append were".into(),
            ));
        }
        Ok(Some(AppendResult {
            revision: to,
            position: *positions.last().expect("at least one event"),
            idempotent_replay: true,
        }))
    }

    /// The ID of the event at `revision` of `stream` (committed events only).
    fn event_id_at(&self, stream: &str, revision: u64) -> Result<Option<Uuid>> {
        let positions = self.shared.index.positions(stream, revision, revision)?;
        let Some(pos) = positions.first() else {
            return Ok(None);
        };
        let mut cursor = Cursor::new(&self.shared.log, self.shared.log.committed_end(), 4096);
        Ok(Some(self.shared.read_at(&mut cursor, *pos)?.event_id))
    }
}
