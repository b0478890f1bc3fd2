//! The task that owns one group. It reads the group's source from storage into a bounded
//! buffer, hands messages to consumers that have room, tracks what is in flight, retries on
//! nack or timeout, parks after too many retries, and writes the checkpoint: the lowest
//! sequence number (stream revision, or `$all` position) not yet settled. A message is settled
//! when it is acked, skipped, or durably parked, so a checkpoint never passes an event that
//! could still be lost.
//!
//! Files: `api` (what the group's handles send and receive), `read` (filling the buffer from
//! storage), `dispatch` (handing messages to consumers by strategy), `upkeep` (the tick:
//! timeouts, delayed retries, gone consumers; checkpoints and parked-stream trimming).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_engine::{AllFrom, Direction, Engine, Error as EngineError, EventFilter, RecordedEvent};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::memory::{BufferMemory, Charge};
use crate::settings::{ConsumerStrategy, Settings, StartFrom, Target};
use crate::source::{self, Listed};
use crate::store;

mod api;
mod dispatch;
mod read;
mod upkeep;

pub use api::*;
use dispatch::BUCKETS;

const TICK: Duration = Duration::from_millis(100);
/// How often a read failure that keeps recurring is logged again.
const READ_ERROR_LOG_EVERY: Duration = Duration::from_secs(30);
/// Storage reads per turn of the loop, so commands are served during a long catch-up.
const READS_PER_TURN: usize = 8;
/// Delay before retrying a park whose write failed.
const PARK_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Msg {
    event: RecordedEvent,
    /// Where the event is listed, when the group reads a derived stream.
    listed: Option<Listed>,
    /// Revision or position in the source; `None` for a replayed parked message.
    seq: Option<u64>,
    retry_count: u32,
    /// The parked-stream revision this message was replayed from.
    parked_rev: Option<u64>,
    /// The reason given by the last nack (used when it ends up parked).
    last_reason: Option<String>,
    /// Its bytes, counted against the memory of all groups' buffers while it is held.
    _charge: Charge,
}

impl Msg {
    /// What consumers acknowledge it by: the entry's ID in a derived stream, else the
    /// event's.
    fn ack_id(&self) -> Uuid {
        self.listed
            .as_ref()
            .map_or(self.event.event_id, Listed::entry_id)
    }
}

struct InFlight {
    msg: Msg,
    consumer: u64,
    deadline: Option<Instant>,
}

struct ConsumerState {
    id: u64,
    name: String,
    capacity: u32,
    in_flight: u32,
    tx: ConsumerTx,
    acked: u64,
    nacked: u64,
    window_start: Instant,
    window_acks: u64,
    rate: f64,
    connected_at: Instant,
}

pub(crate) struct Group {
    engine: Arc<Engine>,
    memory: Arc<BufferMemory>,
    target: Target,
    name: String,
    incarnation: u64,
    settings: Settings,
    filter: Option<EventFilter>,
    consumers: Vec<ConsumerState>,
    next_consumer_id: u64,
    rr: usize,
    buckets: Vec<Option<u64>>,
    buffer: VecDeque<Msg>,
    retry: VecDeque<Msg>,
    delayed: Vec<(Instant, Msg)>,
    in_flight: HashMap<Uuid, InFlight>,
    outstanding: BTreeSet<u64>,
    next_read: u64,
    at_end: bool,
    read_failed: bool,
    /// When a failed read was last logged.
    read_error_logged: Option<Instant>,
    stream_deleted: bool,
    written_checkpoint: Option<u64>,
    settled_since_checkpoint: u64,
    last_checkpoint_at: Instant,
    last_delivered: Option<u64>,
    parked_start: u64,
    parked_end: u64,
    replay_next: u64,
    replay_until: u64,
    replaying: BTreeSet<u64>,
}

impl Group {
    /// Loads the group's checkpoint and parked range. `start` is the resolved start position
    /// used when no checkpoint of this incarnation exists.
    pub(crate) fn load(
        engine: Arc<Engine>,
        memory: Arc<BufferMemory>,
        target: Target,
        name: String,
        incarnation: u64,
        settings: Settings,
    ) -> Result<Group> {
        let checkpoint = store::read_checkpoint(&engine, &target, &name, incarnation)?;
        let start = match settings.start_from {
            StartFrom::Start => 0,
            StartFrom::Revision(r) => r,
            StartFrom::Position(p) => p,
            StartFrom::End if settings.resolved_start.is_some() => {
                settings.resolved_start.unwrap_or_default()
            }
            // Resolved at creation; only a group stored by an older version lacks it.
            StartFrom::End => match &target {
                Target::All => engine.log_end(),
                Target::Stream(s) => engine.last_revision(s).map_or(0, |l| l + 1),
            },
        };
        let (parked_start, parked_end) = store::parked_range(&engine, &target, &name)?;
        let filter = settings.filter.as_ref().map(|f| f.build()).transpose()?;
        Ok(Group {
            engine,
            memory,
            target,
            name,
            incarnation,
            filter,
            settings,
            consumers: Vec::new(),
            next_consumer_id: 1,
            rr: 0,
            buckets: vec![None; BUCKETS],
            buffer: VecDeque::new(),
            retry: VecDeque::new(),
            delayed: Vec::new(),
            in_flight: HashMap::new(),
            outstanding: BTreeSet::new(),
            next_read: checkpoint.unwrap_or(start),
            at_end: false,
            read_failed: false,
            read_error_logged: None,
            stream_deleted: false,
            written_checkpoint: checkpoint,
            settled_since_checkpoint: 0,
            last_checkpoint_at: Instant::now(),
            last_delivered: None,
            parked_start,
            parked_end,
            replay_next: parked_start,
            replay_until: parked_start,
            replaying: BTreeSet::new(),
        })
    }

    /// Runs until stopped or until every handle to the group is gone.
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut end_rx = self.engine.watch_log_end();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Err(e) = self.fill(&mut end_rx) {
                // Retried every tick; logged once, then at most every 30 s.
                let now = Instant::now();
                if self
                    .read_error_logged
                    .is_none_or(|t| now.duration_since(t) >= READ_ERROR_LOG_EVERY)
                {
                    tracing::error!(target_stream = %self.target, group = %self.name, error = %e,
                        "persistent subscription read failed; retrying every {} ms", TICK.as_millis());
                    self.read_error_logged = Some(now);
                }
                self.at_end = true;
                self.read_failed = true;
            }
            self.dispatch();
            self.maybe_checkpoint(false).await;
            let can_read = (!self.at_end
                && (self.buffer.len() as u32) < self.settings.live_buffer_size
                && self.may_buffer(self.buffer.is_empty()))
                || self.replay_pending();
            tokio::select! {
                biased;
                cmd = rx.recv() => match cmd {
                    None => {
                        self.stop(StopReason::Shutdown).await;
                        return;
                    }
                    Some(Command::Stop { reason, reply }) => {
                        self.stop(reason).await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.handle(cmd).await,
                },
                _ = tick.tick() => self.on_tick().await,
                changed = end_rx.changed(), if self.at_end => {
                    if changed.is_ok() {
                        self.at_end = false;
                    }
                }
                _ = std::future::ready(()), if can_read => {}
            }
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Join {
                name,
                capacity,
                tx,
                reply,
            } => {
                let _ = reply.send(self.join(name, capacity, tx));
            }
            Command::Leave { consumer } => self.leave(consumer).await,
            Command::Ack { consumer, ids } => {
                let mut rejected = Vec::new();
                for id in ids {
                    match self.take(id, consumer) {
                        Some(msg) => {
                            self.count_ack(consumer);
                            self.settle(&msg);
                        }
                        None => rejected.push(id),
                    }
                }
                self.reject(consumer, rejected, "ack");
                self.trim_parked().await;
            }
            Command::Nack {
                consumer,
                ids,
                action,
                reason,
            } => {
                let mut rejected = Vec::new();
                for id in ids {
                    let Some(mut msg) = self.take(id, consumer) else {
                        rejected.push(id);
                        continue;
                    };
                    if let Some(c) = self.consumer_mut(consumer) {
                        c.nacked += 1;
                    }
                    msg.last_reason = Some(reason.clone()).filter(|r| !r.is_empty());
                    match action {
                        NackAction::Retry { delay } => self.retry_later(msg, delay).await,
                        NackAction::Park => {
                            let why = if reason.is_empty() {
                                "parked by a consumer's nack".to_owned()
                            } else {
                                format!("parked by a consumer's nack: {reason}")
                            };
                            self.park(msg, &why).await;
                        }
                        NackAction::Skip => self.settle(&msg),
                        NackAction::Stop => {
                            // Back to the others without counting it as a failure.
                            self.retry.push_front(msg);
                        }
                    }
                }
                self.reject(consumer, rejected, "nack");
                if action == NackAction::Stop {
                    // Dropping its sender ends the consumer's stream normally.
                    self.leave(consumer).await;
                }
                self.trim_parked().await;
            }
            Command::Update { settings } => {
                match settings.filter.as_ref().map(|f| f.build()).transpose() {
                    Ok(filter) => self.filter = filter,
                    Err(e) => {
                        tracing::error!(error = %e, "stored filter is invalid; keeping the old one")
                    }
                }
                for c in &mut self.consumers {
                    c.capacity = c.capacity.min(settings.max_in_flight_per_consumer);
                }
                if settings.strategy != self.settings.strategy {
                    self.buckets.iter_mut().for_each(|b| *b = None);
                }
                self.settings = settings;
            }
            Command::ReplayParked { max, reply } => {
                let from = self.replay_until.max(self.parked_start);
                let available = self.parked_end.saturating_sub(from);
                let n = max.map_or(available, |m| m.min(available));
                self.replay_until = from + n;
                self.replay_next = self.replay_next.max(self.parked_start);
                let _ = reply.send(n);
            }
            Command::Info { reply } => {
                let _ = reply.send(self.info());
            }
            Command::Stop { .. } => unreachable!("handled by the loop"),
        }
    }

    fn join(&mut self, name: String, capacity: u32, tx: ConsumerTx) -> Result<u64> {
        let max = self.settings.max_consumers;
        if max > 0 && self.consumers.len() as u32 >= max {
            return Err(Error::MaxConsumers {
                target: self.target.to_string(),
                group: self.name.clone(),
                max,
            });
        }
        if capacity == 0 {
            return Err(Error::invalid(
                "capacity",
                "a consumer must be able to hold at least one message",
            ));
        }
        let id = self.next_consumer_id;
        self.next_consumer_id += 1;
        let now = Instant::now();
        self.consumers.push(ConsumerState {
            id,
            name,
            capacity: capacity.min(self.settings.max_in_flight_per_consumer),
            in_flight: 0,
            tx,
            acked: 0,
            nacked: 0,
            window_start: now,
            window_acks: 0,
            rate: 0.0,
            connected_at: now,
        });
        Ok(id)
    }

    /// Removes a consumer; its in-flight messages are retried by the others.
    async fn leave(&mut self, consumer: u64) {
        let Some(i) = self.consumers.iter().position(|c| c.id == consumer) else {
            return;
        };
        self.consumers.remove(i);
        for b in self.buckets.iter_mut() {
            if *b == Some(consumer) {
                *b = None;
            }
        }
        // Redelivered in event order, as KurrentDB does (not in the map's order).
        let mut mine: Vec<(u64, Uuid)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.consumer == consumer)
            .map(|(id, f)| (f.msg.event.position, *id))
            .collect();
        mine.sort_unstable();
        for (_, id) in mine {
            if let Some(f) = self.in_flight.remove(&id) {
                let mut msg = f.msg;
                msg.last_reason = Some("its consumer disconnected".into());
                self.retry_later(msg, Duration::ZERO).await;
            }
        }
    }

    fn consumer_mut(&mut self, id: u64) -> Option<&mut ConsumerState> {
        self.consumers.iter_mut().find(|c| c.id == id)
    }

    /// Takes a message out of flight (or out of the retry queues, when it timed out and an
    /// ack arrived late), for an ack or nack from `consumer`.
    fn take(&mut self, id: Uuid, _consumer: u64) -> Option<Msg> {
        if let Some(f) = self.in_flight.remove(&id) {
            if let Some(c) = self.consumer_mut(f.consumer) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
            return Some(f.msg);
        }
        if let Some(i) = self.retry.iter().position(|m| m.ack_id() == id) {
            return self.retry.remove(i);
        }
        if let Some(i) = self.delayed.iter().position(|(_, m)| m.ack_id() == id) {
            return Some(self.delayed.swap_remove(i).1);
        }
        None
    }

    fn count_ack(&mut self, consumer: u64) {
        if let Some(c) = self.consumer_mut(consumer) {
            c.acked += 1;
            c.window_acks += 1;
        }
    }

    fn reject(&mut self, consumer: u64, ids: Vec<Uuid>, what: &str) {
        if ids.is_empty() {
            return;
        }
        let reason = format!(
            "{what} for {} event ID(s) not in flight in group '{}' on '{}' (unknown, or already acked, skipped or parked); ignored",
            ids.len(),
            self.name,
            self.target
        );
        if let Some(c) = self.consumer_mut(consumer) {
            let _ = c.tx.send(Ok(Delivery::Rejected {
                event_ids: ids,
                reason,
            }));
        }
    }

    fn settle(&mut self, msg: &Msg) {
        if let Some(seq) = msg.seq {
            if self.outstanding.remove(&seq) {
                self.settled_since_checkpoint += 1;
            }
        }
        if let Some(rev) = msg.parked_rev {
            self.replaying.remove(&rev);
        }
    }

    /// Redelivers after `delay` with a higher retry count, or parks once retries run out.
    async fn retry_later(&mut self, mut msg: Msg, delay: Duration) {
        if msg.retry_count >= self.settings.max_retry_count {
            let mut why = format!(
                "maximum retry count ({}) reached",
                self.settings.max_retry_count
            );
            if let Some(r) = &msg.last_reason {
                why.push_str(": ");
                why.push_str(r);
            }
            self.park(msg, &why).await;
            return;
        }
        msg.retry_count += 1;
        if delay.is_zero() {
            self.retry.push_back(msg);
        } else {
            self.delayed.push((Instant::now() + delay, msg));
        }
    }

    /// Writes the message to the parked stream, then settles it. If the write fails the
    /// message stays unsettled and is tried again later.
    async fn park(&mut self, msg: Msg, reason: &str) {
        let listed_revision = msg.listed.as_ref().map(|l| l.revision);
        match store::park(
            &self.engine,
            &self.target,
            &self.name,
            &msg.event,
            listed_revision,
            reason,
        )
        .await
        {
            Ok(rev) => {
                self.parked_end = self.parked_end.max(rev + 1);
                tracing::info!(target_stream = %self.target, group = %self.name,
                    event_id = %msg.event.event_id, reason, "message parked");
                self.settle(&msg);
            }
            Err(e) => {
                tracing::error!(target_stream = %self.target, group = %self.name, error = %e,
                    "parking a message failed; it will be retried");
                self.delayed.push((Instant::now() + PARK_RETRY, msg));
            }
        }
    }

    async fn stop(&mut self, reason: StopReason) {
        if matches!(reason, StopReason::Shutdown | StopReason::Restart) {
            self.maybe_checkpoint(true).await;
        }
        for c in self.consumers.drain(..) {
            let err = match reason {
                StopReason::Deleted => Error::GroupDeleted {
                    target: self.target.to_string(),
                    group: self.name.clone(),
                },
                StopReason::Shutdown => Error::ShuttingDown,
                StopReason::Restart => Error::Restarted,
                StopReason::LeaderChanged => Error::LeaderChanged,
            };
            let _ = c.tx.send(Err(err));
        }
    }

    fn info(&self) -> GroupInfo {
        let now = Instant::now();
        GroupInfo {
            target: self.target.clone(),
            group: self.name.clone(),
            settings: self.settings.clone(),
            status: if self.stream_deleted {
                GroupStatus::StreamDeleted
            } else if self.consumers.is_empty() {
                GroupStatus::Idle
            } else if self.at_end {
                GroupStatus::Live
            } else {
                GroupStatus::CatchingUp
            },
            consumers: self
                .consumers
                .iter()
                .map(|c| ConsumerInfo {
                    id: c.id,
                    name: c.name.clone(),
                    capacity: c.capacity,
                    in_flight: c.in_flight,
                    acked: c.acked,
                    nacked: c.nacked,
                    ack_rate: c.rate,
                    connected_for: now.duration_since(c.connected_at),
                })
                .collect(),
            last_checkpoint: self.written_checkpoint,
            settled_up_to: self.settled_up_to(),
            last_delivered: self.last_delivered,
            read_position: self.next_read,
            in_flight: self.in_flight.len() as u64,
            buffered: self.buffer.len() as u64,
            retry_queued: (self.retry.len() + self.delayed.len()) as u64,
            parked: self.parked_end.saturating_sub(self.parked_start),
            lag: 0,
            lag_is_lower_bound: false,
        }
    }
}
