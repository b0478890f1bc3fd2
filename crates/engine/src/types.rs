//! The data model: events as written and as recorded, expected revisions, read directions and
//! operation outcomes.

use std::fmt;

use bytes::Bytes;
use uuid::Uuid;

/// How an event's `data` is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ContentType {
    #[default]
    Json,
    Binary,
}

/// An event as an application proposes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    /// Unique ID, chosen by the client so that retries are idempotent. `None`: the engine
    /// assigns a random one (such an append cannot be recognised as a retry).
    pub event_id: Option<Uuid>,
    pub event_type: String,
    pub data: Bytes,
    pub metadata: Bytes,
    pub content_type: ContentType,
}

impl EventData {
    /// A JSON event with a fresh random ID.
    pub fn json(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        EventData {
            event_id: Some(Uuid::new_v4()),
            event_type: event_type.into(),
            data: data.into(),
            metadata: Bytes::new(),
            content_type: ContentType::Json,
        }
    }

    /// A binary event with a fresh random ID.
    pub fn binary(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        EventData {
            content_type: ContentType::Binary,
            ..Self::json(event_type, data)
        }
    }

    pub fn with_id(mut self, id: Uuid) -> Self {
        self.event_id = Some(id);
        self
    }

    pub fn with_metadata(mut self, metadata: impl Into<Bytes>) -> Self {
        self.metadata = metadata.into();
        self
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub stream: String,
    /// 0-based, gap-free within the stream.
    pub revision: u64,
    /// Position in the global log: strictly increasing, not dense.
    pub position: u64,
    /// Server time of the append, nanoseconds since the Unix epoch (UTC).
    pub timestamp_ns: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub data: Bytes,
    pub metadata: Bytes,
    pub content_type: ContentType,
}

/// The precondition of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedRevision {
    /// No check.
    Any,
    /// The stream must have no events (never written, or soft-deleted).
    NoStream,
    /// The stream must have at least one visible event.
    StreamExists,
    /// The stream's last revision must be exactly this.
    Exact(u64),
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any revision"),
            ExpectedRevision::NoStream => f.write_str("no stream"),
            ExpectedRevision::StreamExists => f.write_str("an existing stream"),
            ExpectedRevision::Exact(n) => write!(f, "revision {n}"),
        }
    }
}

/// The state of a stream as reported by a failed expected-revision check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrentRevision {
    NoStream,
    Revision(u64),
}

impl CurrentRevision {
    pub fn from_last(last: Option<u64>) -> Self {
        last.map_or(CurrentRevision::NoStream, CurrentRevision::Revision)
    }
}

impl fmt::Display for CurrentRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CurrentRevision::NoStream => f.write_str("does not exist"),
            CurrentRevision::Revision(n) => write!(f, "is at revision {n}"),
        }
    }
}

/// Read direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Forwards,
    Backwards,
}

/// The outcome of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Revision of the last event of the append (the stream's new last revision).
    pub revision: u64,
    /// Log position of the last event of the append.
    pub position: u64,
    /// True when the append was recognised as a retry of one already written: nothing new
    /// was written and the original revision and position are returned.
    pub idempotent_replay: bool,
}

/// A page of a stream read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSlice {
    pub events: Vec<RecordedEvent>,
    /// The revision to pass to the next read in the same direction, or `None` when the read
    /// reached the end (forwards: the current last event; backwards: the first visible one).
    pub next_revision: Option<u64>,
    /// The stream's last revision at the time of the read.
    pub last_revision: u64,
}

/// A page of a `$all` read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllSlice {
    pub events: Vec<RecordedEvent>,
    /// Where the next read in the same direction continues. It moves past every scanned
    /// record, matching or not, so a filtered reader can checkpoint it.
    pub next_position: u64,
    /// True when the read reached the committed end (forwards) or the start (backwards).
    pub is_end: bool,
    /// Log records examined, matching the filter or not.
    pub records_scanned: usize,
}

/// Where a `$all` read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllFrom {
    Start,
    End,
    /// A record position. Forwards reads include the record at this position; backwards
    /// reads return the records before it.
    Position(u64),
}

/// Where a stream read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrom {
    Start,
    End,
    /// Inclusive in both directions.
    Revision(u64),
}

/// Summary of a stream for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    /// Last revision ever written (even when soft-deleted), `None` if the stream has no events.
    pub last_revision: Option<u64>,
    pub soft_deleted: bool,
    pub tombstoned: bool,
}
