//! Handing buffered and retried messages to consumers with room, by the group's strategy.

use super::*;

pub(super) const BUCKETS: usize = 1024;

/// What `PinnedByCorrelation` pins on: the `$correlationId` of the event's JSON metadata (as
/// KurrentDB clients write it), or the stream name when there is none.
fn correlation_key(event: &RecordedEvent) -> String {
    serde_json::from_slice::<serde_json::Value>(&event.metadata)
        .ok()
        .and_then(|m| m.get("$correlationId")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| event.stream.clone())
}

impl Group {
    pub(super) fn has_room(&self) -> bool {
        self.consumers.iter().any(|c| c.in_flight < c.capacity)
    }

    /// The consumer (index) that should get this event, if one has room.
    pub(super) fn pick(&mut self, event: &RecordedEvent) -> Option<usize> {
        let n = self.consumers.len();
        match self.settings.strategy {
            ConsumerStrategy::RoundRobin => {
                for k in 0..n {
                    let i = (self.rr + k) % n;
                    if self.consumers[i].in_flight < self.consumers[i].capacity {
                        self.rr = (i + 1) % n;
                        return Some(i);
                    }
                }
                None
            }
            ConsumerStrategy::DispatchToSingle => {
                self.consumers.iter().position(|c| c.in_flight < c.capacity)
            }
            ConsumerStrategy::Pinned | ConsumerStrategy::PinnedByCorrelation => {
                let mut h = DefaultHasher::new();
                match self.settings.strategy {
                    ConsumerStrategy::PinnedByCorrelation => correlation_key(event).hash(&mut h),
                    _ => event.stream.hash(&mut h),
                }
                let bucket = (h.finish() % BUCKETS as u64) as usize;
                let owner = match self.buckets[bucket] {
                    Some(id) => id,
                    None => {
                        // The consumer owning the fewest buckets takes this one.
                        let id = self
                            .consumers
                            .iter()
                            .min_by_key(|c| {
                                self.buckets.iter().filter(|b| **b == Some(c.id)).count()
                            })?
                            .id;
                        self.buckets[bucket] = Some(id);
                        id
                    }
                };
                let i = self.consumers.iter().position(|c| c.id == owner)?;
                (self.consumers[i].in_flight < self.consumers[i].capacity).then_some(i)
            }
        }
    }

    pub(super) fn dispatch(&mut self) {
        if self.consumers.is_empty() {
            return;
        }
        let mut retry = std::mem::take(&mut self.retry);
        self.dispatch_from(&mut retry);
        // Anything pushed meanwhile (a failed send) goes first next time.
        retry.extend(std::mem::take(&mut self.retry));
        self.retry = retry;
        let mut buffer = std::mem::take(&mut self.buffer);
        self.dispatch_from(&mut buffer);
        self.buffer = buffer;
    }

    pub(super) fn dispatch_from(&mut self, queue: &mut VecDeque<Msg>) {
        let pinned = matches!(
            self.settings.strategy,
            ConsumerStrategy::Pinned | ConsumerStrategy::PinnedByCorrelation
        );
        let mut i = 0;
        while i < queue.len() && self.has_room() {
            let id = queue[i].ack_id();
            if self.in_flight.contains_key(&id) {
                // The same event ID is already out (a duplicate ID in the log): wait for it.
                i += 1;
                continue;
            }
            let Some(ci) = self.pick(&queue[i].event) else {
                if pinned {
                    i += 1;
                    continue;
                }
                return;
            };
            let msg = queue.remove(i).expect("index checked");
            let consumer = &mut self.consumers[ci];
            let sent = consumer.tx.send(Ok(Delivery::Event {
                event: msg.event.clone(),
                retry_count: msg.retry_count,
                listed: msg.listed.clone(),
            }));
            if sent.is_err() {
                // The consumer went away; the message stays queued and the consumer is
                // removed (its in-flight messages are retried) on the next Leave or tick.
                consumer.capacity = 0;
                queue.insert(i, msg);
                continue;
            }
            consumer.in_flight += 1;
            let deadline = self.settings.message_timeout().map(|t| Instant::now() + t);
            if let Some(seq) = msg.seq {
                self.last_delivered = Some(self.last_delivered.map_or(seq, |d| d.max(seq)));
            }
            let consumer = consumer.id;
            self.in_flight.insert(
                id,
                InFlight {
                    msg,
                    consumer,
                    deadline,
                },
            );
        }
    }
}
