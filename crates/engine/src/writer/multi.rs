//! Planning a multi-stream append into the current batch: every check is decided against the
//! committed state plus the batch so far, then all events are encoded as one run of records
//! whose last one carries the commit flag.

use super::*;
use crate::multi::{CheckViolation, MultiAppend, MultiAppendResult, StreamAppended};

impl Writer {
    /// `None`: defer to the next batch (a retry racing its original inside this batch).
    pub(super) fn plan_multi(&mut self, m: &MultiAppend) -> Option<Result<MultiAppendResult>> {
        let hashes: Vec<u64> = m.streams.iter().map(|w| stream_hash(&w.stream)).collect();
        let mut ids: Vec<Vec<Uuid>> = vec![Vec::new(); m.streams.len()];
        for (i, e) in &m.events {
            let id = e.event_id.expect("IDs assigned before the writer");
            if self.batch_ids.contains(&IdKey::hashed(hashes[*i], id)) {
                return None;
            }
            ids[*i].push(id);
        }
        Some(self.plan_multi_now(m, &hashes, &ids))
    }

    fn plan_multi_now(
        &mut self,
        m: &MultiAppend,
        hashes: &[u64],
        ids: &[Vec<Uuid>],
    ) -> Result<MultiAppendResult> {
        let states: Vec<Pending> = m.streams.iter().map(|w| self.state(&w.stream)).collect();
        for (w, st) in m.streams.iter().zip(&states) {
            if st.tombstoned {
                return Err(Error::StreamDeleted {
                    stream: w.stream.clone(),
                });
            }
        }
        if let Some(replay) = self.multi_replay(m, hashes, ids, &states)? {
            return Ok(replay);
        }
        for (w, st) in m.streams.iter().zip(&states) {
            if !Self::expected_ok(w.expected, st) {
                return Err(Self::wrong(&w.stream, w.expected, st));
            }
        }
        let mut violations = Vec::new();
        for (i, c) in m.checks.iter().enumerate() {
            let st = self.state(&c.stream);
            if st.tombstoned {
                return Err(Error::StreamDeleted {
                    stream: c.stream.clone(),
                });
            }
            if !Self::expected_ok(c.expected, &st) {
                violations.push(CheckViolation {
                    check: i,
                    stream: c.stream.clone(),
                    expected: c.expected,
                    actual: CurrentRevision::from_last(st.last_revision),
                });
            }
        }
        if !violations.is_empty() {
            return Err(Error::ChecksFailed { violations });
        }
        Ok(self.encode_multi(m, hashes, states))
    }

    /// A retry of a multi-stream append already written: every stream's events are there.
    fn multi_replay(
        &self,
        m: &MultiAppend,
        hashes: &[u64],
        ids: &[Vec<Uuid>],
        states: &[Pending],
    ) -> Result<Option<MultiAppendResult>> {
        let mut replays = Vec::with_capacity(m.streams.len());
        for (i, w) in m.streams.iter().enumerate() {
            let found =
                self.idempotent_check(&w.stream, hashes[i], w.expected, &states[i], &ids[i])?;
            replays.push(found);
        }
        let written = replays.iter().filter(|r| r.is_some()).count();
        if written == 0 {
            return Ok(None);
        }
        if written < replays.len() {
            let done = replays.iter().position(Option::is_some).expect("some");
            let missing = replays.iter().position(Option::is_none).expect("some");
            return Err(Error::IdempotencyConflict {
                stream: m.streams[missing].stream.clone(),
                event_id: ids[missing][0],
                detail: format!(
                    "was never written, but the events for stream '{}' in the same multi-stream append were",
                    m.streams[done].stream
                ),
            });
        }
        let streams: Vec<StreamAppended> = m
            .streams
            .iter()
            .zip(replays)
            .map(|(w, r)| {
                let r = r.expect("all written");
                StreamAppended {
                    stream: w.stream.clone(),
                    revision: r.revision,
                    position: r.position,
                }
            })
            .collect();
        let position = streams.iter().map(|s| s.position).max().unwrap_or(0);
        Ok(Some(MultiAppendResult {
            streams,
            position,
            idempotent_replay: true,
        }))
    }

    fn encode_multi(
        &mut self,
        m: &MultiAppend,
        hashes: &[u64],
        states: Vec<Pending>,
    ) -> MultiAppendResult {
        let names: Vec<Arc<str>> = m.streams.iter().map(|w| Arc::from(&*w.stream)).collect();
        let mut next: Vec<u64> = states
            .iter()
            .map(|st| st.last_revision.map_or(0, |r| r + 1))
            .collect();
        let mut last_position = vec![0u64; m.streams.len()];
        let mut position = 0;
        // Streams coming back from a soft delete get a `$metadata` record after the events,
        // which then carries the commit flag.
        let recreated: Vec<usize> = (0..states.len())
            .filter(|i| Self::recreates(&states[*i]))
            .collect();
        for (k, (i, e)) in m.events.iter().enumerate() {
            let id = e.event_id.expect("IDs assigned before the writer");
            position = self.base_pos() + self.buf.len() as u64;
            encode_event(
                &mut self.buf,
                &EventRecord {
                    commit: k + 1 == m.events.len() && recreated.is_empty(),
                    content_type: e.content_type,
                    stream: &names[*i],
                    event_type: &e.event_type,
                    revision: next[*i],
                    timestamp_ns: self.timestamp,
                    event_id: id,
                    data: &e.data,
                    metadata: &e.metadata,
                },
            );
            let key = IdKey::hashed(hashes[*i], id);
            self.batch_ids.insert(key);
            let event_type = self.derived_type(&names[*i], &e.event_type);
            self.planned.push(Planned {
                stream: names[*i].clone(),
                revision: next[*i],
                position,
                key,
                effect: None,
                event_type,
            });
            last_position[*i] = position;
            next[*i] += 1;
        }
        let mut states = states;
        for (k, i) in recreated.iter().enumerate() {
            let first = states[*i].last_revision.map_or(0, |r| r + 1);
            let st = states[*i].clone();
            let commit = k + 1 == recreated.len();
            states[*i].metadata = Some(self.encode_recreate(&names[*i], first, &st, commit));
        }
        let mut streams = Vec::with_capacity(names.len());
        for (i, (name, st)) in names.into_iter().zip(states).enumerate() {
            let last = next[i] - 1;
            streams.push(StreamAppended {
                stream: name.to_string(),
                revision: last,
                position: last_position[i],
            });
            self.pending.insert(
                name,
                Pending {
                    last_revision: Some(last),
                    ..st
                },
            );
        }
        MultiAppendResult {
            streams,
            position,
            idempotent_replay: false,
        }
    }
}
