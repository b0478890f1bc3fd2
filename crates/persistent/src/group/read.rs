//! Filling the group's buffer from storage, and its retry queue from parked messages.

use super::*;

impl Group {
    pub(super) fn replay_pending(&self) -> bool {
        self.replay_next < self.replay_until
            && (self.retry.len() as u32) < self.settings.live_buffer_size
            && self.may_buffer(self.retry.is_empty())
    }

    /// Whether the shared buffer memory lets this group read more now. A group holding
    /// nothing may always read one event (see `crate::memory`).
    pub(super) fn may_buffer(&self, holds_nothing: bool) -> bool {
        holds_nothing || self.memory.room() > 0
    }

    /// Bytes the next read may return (at least one event is always returned).
    fn read_budget(&self) -> usize {
        self.memory.room().max(1)
    }

    fn charge(&self, event: &RecordedEvent) -> Charge {
        // The bodies, the names, and the message's own bookkeeping.
        let overhead = 160 + event.stream.len() + event.event_type.len();
        self.memory
            .charge(event.data.len() + event.metadata.len() + overhead)
    }

    /// Reads from storage into the buffer (and parked messages into the retry queue).
    pub(super) fn fill(&mut self, end_rx: &mut watch::Receiver<u64>) -> Result<()> {
        // Mark the current end as seen before reading: a commit after this wakes the loop.
        // Only when about to read: marking it while at the end (the loop woken by a tick or a
        // command) would swallow a commit that landed meanwhile, and the group would wait
        // for the next one with an event unread.
        if !self.at_end {
            end_rx.borrow_and_update();
        }
        let mut reads = 0;
        while self.replay_pending() && reads < READS_PER_TURN {
            reads += 1;
            let room = self.settings.live_buffer_size as u64 - self.retry.len() as u64;
            let n = room
                .min(self.replay_until - self.replay_next)
                .min(self.settings.read_batch_size as u64) as usize;
            let from = self.replay_next.max(self.parked_start);
            let parked = store::read_parked(&self.engine, &self.target, &self.name, from, n)?;
            if parked.is_empty() {
                self.replay_next = self.replay_until;
                break;
            }
            for (rev, original) in parked {
                self.replay_next = rev + 1;
                if rev >= self.replay_until {
                    self.replay_next = self.replay_until;
                    break;
                }
                match original {
                    Some((event, listed)) => {
                        self.replaying.insert(rev);
                        let _charge = self.charge(&event);
                        self.retry.push_back(Msg {
                            _charge,
                            event,
                            listed,
                            seq: None,
                            retry_count: 0,
                            parked_rev: Some(rev),
                            last_reason: None,
                        });
                    }
                    None => tracing::warn!(target_stream = %self.target, group = %self.name,
                        parked_revision = rev, "parked message points at an event that no longer exists; dropping it"),
                }
            }
        }
        while !self.at_end
            && (self.buffer.len() as u32) < self.settings.live_buffer_size
            && self.may_buffer(self.buffer.is_empty())
            && reads < READS_PER_TURN
        {
            reads += 1;
            let room = self.settings.live_buffer_size as usize - self.buffer.len();
            let n = room.min(self.settings.read_batch_size as usize);
            match &self.target {
                Target::Stream(stream) => {
                    let page = match source::read(
                        &self.engine,
                        stream,
                        self.next_read,
                        n,
                        self.read_budget(),
                    ) {
                        Ok(p) => p,
                        Err(EngineError::StreamNotFound { .. }) => {
                            self.at_end = true;
                            break;
                        }
                        Err(EngineError::StreamDeleted { .. }) => {
                            self.stream_deleted = true;
                            self.at_end = true;
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    for (seq, event, listed) in page.events {
                        if seq < self.next_read {
                            continue;
                        }
                        self.next_read = seq + 1;
                        self.push_read(seq, event, listed);
                    }
                    match page.next_revision {
                        Some(n) => self.next_read = self.next_read.max(n),
                        None => {
                            self.next_read = self.next_read.max(page.last_revision + 1);
                            self.at_end = true;
                        }
                    }
                }
                Target::All => {
                    let max_scan = if self.filter.is_some() {
                        n.saturating_mul(32)
                    } else {
                        n
                    };
                    let slice = self.engine.read_all_budget(
                        AllFrom::Position(self.next_read),
                        Direction::Forwards,
                        n,
                        self.filter.as_ref(),
                        max_scan,
                        self.read_budget(),
                    )?;
                    for event in slice.events {
                        // System streams (the groups' own checkpoints among them) are not
                        // delivered to $all groups.
                        if event.stream.starts_with('$') {
                            continue;
                        }
                        self.push_read(event.position, event, None);
                    }
                    self.next_read = self.next_read.max(slice.next_position);
                    self.at_end = slice.is_end;
                }
            }
        }
        Ok(())
    }

    pub(super) fn push_read(&mut self, seq: u64, mut event: RecordedEvent, listed: Option<Listed>) {
        self.outstanding.insert(seq);
        // The bodies point into the block they were read from (up to 1 MiB): copy them, so a
        // buffered event holds its own bytes only, not the whole block.
        event.data = bytes::Bytes::copy_from_slice(&event.data);
        event.metadata = bytes::Bytes::copy_from_slice(&event.metadata);
        let _charge = self.charge(&event);
        self.buffer.push_back(Msg {
            _charge,
            event,
            listed,
            seq: Some(seq),
            retry_count: 0,
            parked_rev: None,
            last_reason: None,
        });
    }
}
