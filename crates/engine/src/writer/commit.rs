//! Committing a planned batch: one durable write on a single node, or a proposal to the
//! cluster; then publishing it and answering its requests.

use super::*;
use crate::replica::Refusal;

impl Writer {
    /// Writes and syncs the batch (or has it replicated), then publishes it and replies.
    pub(super) fn commit(&mut self) {
        let mut outcomes = std::mem::take(&mut self.outcomes);
        let planned = std::mem::take(&mut self.planned);
        let planned_len = planned.len();
        let requests_in_batch = outcomes.len();
        self.pending.clear();
        self.batch_ids.clear();
        let bytes = self.buf.len() as u64;
        let started = std::time::Instant::now();
        let replicated = matches!(self.sink, Sink::Replicated);
        let result = if self.buf.is_empty() {
            Ok(0)
        } else if replicated {
            self.propose()
        } else {
            self.write_batch()
                .map(|()| 0)
                .map_err(Refusal::NotAcknowledged)
        };
        let write_time = started.elapsed();
        self.buf.clear();
        let base = match result {
            Ok(base) => base,
            Err(refusal) => {
                let err = move || match &refusal {
                    Refusal::NotLeader(reason) => Error::NotLeader {
                        reason: reason.clone(),
                    },
                    Refusal::NotAcknowledged(reason) if replicated => Error::NotAcknowledged {
                        reason: reason.clone(),
                    },
                    Refusal::NotAcknowledged(reason) => Error::ReadOnly {
                        reason: reason.clone(),
                    },
                };
                for outcome in outcomes {
                    outcome.fail(&err);
                }
                return;
            }
        };
        if !planned.is_empty() {
            if replicated {
                // The entry log indexed and published the entry when it was committed.
                for o in &mut outcomes {
                    o.place_at(base);
                }
            } else {
                let end = self.base_pos();
                let entries: Vec<Entry> = planned
                    .iter()
                    .map(|p| Entry {
                        stream: p.stream.clone(),
                        revision: p.revision,
                        position: p.position,
                        effect: p.effect.clone(),
                        event_type: p.event_type.clone(),
                    })
                    .collect();
                // The log end moves first: a reader that finds an entry in the index
                // must also find its record below the committed end it reads next.
                self.shared.log.set_committed_end(end);
                self.shared.index.apply(&entries, end);
                self.shared.publish_end(end);
            }
            // A cluster node's window learns committed events from the entry log instead.
            for p in planned.into_iter().filter(|_| !replicated) {
                self.recent.insert_keyed(
                    p.key,
                    Seen {
                        stream: p.stream,
                        revision: p.revision,
                        position: p.position,
                    },
                );
            }
            self.shared
                .counters
                .record_batch(planned_len as u64, requests_in_batch as u64);
            if let Some(o) = &self.shared.config.observer {
                o.batch_committed(
                    planned_len as u64,
                    requests_in_batch as u64,
                    bytes,
                    write_time,
                );
            }
        }
        for outcome in outcomes {
            outcome.send();
        }
    }

    /// Hands the batch to the replication layer as one data entry and waits until it is
    /// committed and indexed; returns where its body starts in the log.
    fn propose(&mut self) -> std::result::Result<u64, Refusal> {
        let Some(proposer) = self.shared.proposer() else {
            return Err(Refusal::NotAcknowledged(
                "this node is not connected to its cluster yet".into(),
            ));
        };
        let body = bytes::Bytes::copy_from_slice(&self.buf);
        proposer.propose(body)
    }

    /// One write and (in durable mode) one fdatasync. On failure the store turns read-only.
    fn write_batch(&mut self) -> std::result::Result<(), String> {
        let durable = self.shared.config.durability == Durability::Fsync;
        match &mut self.sink {
            Sink::Local(a) => a.write(&self.shared, &self.buf, durable),
            Sink::Replicated => unreachable!("replicated batches are proposed"),
        }
    }
}
