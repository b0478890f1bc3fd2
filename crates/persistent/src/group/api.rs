//! What a group's handles send to its task and get back.

use super::*;

/// What a consumer receives.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// An event to process. `retry_count` is 0 on the first delivery. When the group reads
    /// a derived stream, `listed` says where the event is listed there, and consumers
    /// acknowledge it by the entry's ID ([`Listed::entry_id`]), not the event's.
    Event {
        event: RecordedEvent,
        retry_count: u32,
        listed: Option<Listed>,
    },
    /// Acks or nacks for IDs that are not in flight in this group (unknown, or already
    /// settled); they changed nothing.
    Rejected {
        event_ids: Vec<Uuid>,
        reason: String,
    },
}

/// What a consumer asks for a message it could not process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackAction {
    /// Deliver it again (to any consumer) after `delay`, with a higher retry count; parked
    /// instead once the retry count reaches the group's maximum.
    Retry { delay: Duration },
    /// Park it now.
    Park,
    /// Treat it as done.
    Skip,
    /// Disconnect this consumer; its in-flight messages go to the others.
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStatus {
    /// No consumer is connected.
    Idle,
    /// Reading history: the buffer has not reached the log end.
    CatchingUp,
    /// Everything up to the log end has been read.
    Live,
    /// The group's stream was tombstoned: nothing more will come.
    StreamDeleted,
}

#[derive(Debug, Clone)]
pub struct ConsumerInfo {
    pub id: u64,
    pub name: String,
    /// How many messages it may hold unacknowledged.
    pub capacity: u32,
    pub in_flight: u32,
    pub acked: u64,
    pub nacked: u64,
    /// Acks per second over the last completed second.
    pub ack_rate: f64,
    pub connected_for: Duration,
}

#[derive(Debug, Clone)]
pub struct GroupInfo {
    pub target: Target,
    pub group: String,
    pub settings: Settings,
    pub status: GroupStatus,
    pub consumers: Vec<ConsumerInfo>,
    /// The last durably written checkpoint (`None`: none yet).
    pub last_checkpoint: Option<u64>,
    /// Every event before this sequence number is settled (written at the next checkpoint).
    pub settled_up_to: u64,
    /// Sequence number of the newest delivered event.
    pub last_delivered: Option<u64>,
    /// Where the next storage read starts.
    pub read_position: u64,
    pub in_flight: u64,
    /// Read and waiting for a consumer.
    pub buffered: u64,
    /// Waiting for redelivery (retries and replayed parked messages).
    pub retry_queued: u64,
    pub parked: u64,
    /// Events between `settled_up_to` and the log end (filled in by the manager).
    pub lag: u64,
    /// True when counting the lag stopped at a limit: the lag is at least `lag`.
    pub lag_is_lower_bound: bool,
}

pub(crate) enum StopReason {
    Deleted,
    Shutdown,
    Restart,
    /// This cluster node stopped leading; the groups run on the new leader.
    LeaderChanged,
}

pub(crate) type ConsumerTx = mpsc::UnboundedSender<Result<Delivery>>;

pub(crate) enum Command {
    Join {
        name: String,
        capacity: u32,
        tx: ConsumerTx,
        reply: oneshot::Sender<Result<u64>>,
    },
    Leave {
        consumer: u64,
    },
    Ack {
        consumer: u64,
        ids: Vec<Uuid>,
    },
    Nack {
        consumer: u64,
        ids: Vec<Uuid>,
        action: NackAction,
        reason: String,
    },
    Update {
        settings: Settings,
    },
    ReplayParked {
        max: Option<u64>,
        reply: oneshot::Sender<u64>,
    },
    Info {
        reply: oneshot::Sender<GroupInfo>,
    },
    Stop {
        reason: StopReason,
        reply: oneshot::Sender<()>,
    },
}
