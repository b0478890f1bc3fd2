//! The client's own types: what applications build and receive.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use strata_proto::v1::{self, expected_revision::Kind};
use uuid::Uuid;

/// The precondition of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedRevision {
    Any,
    NoStream,
    StreamExists,
    Exact(u64),
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no stream"),
            ExpectedRevision::StreamExists => f.write_str("stream exists"),
            ExpectedRevision::Exact(n) => write!(f, "{n}"),
        }
    }
}

pub(crate) fn expected_to_proto(e: ExpectedRevision) -> v1::ExpectedRevision {
    let kind = match e {
        ExpectedRevision::Any => Kind::Any(v1::Empty {}),
        ExpectedRevision::NoStream => Kind::NoStream(v1::Empty {}),
        ExpectedRevision::StreamExists => Kind::StreamExists(v1::Empty {}),
        ExpectedRevision::Exact(n) => Kind::Exact(n),
    };
    v1::ExpectedRevision { kind: Some(kind) }
}

pub(crate) fn expected_from_proto(e: Option<v1::ExpectedRevision>) -> ExpectedRevision {
    match e.and_then(|e| e.kind) {
        None | Some(Kind::Any(_)) => ExpectedRevision::Any,
        Some(Kind::NoStream(_)) => ExpectedRevision::NoStream,
        Some(Kind::StreamExists(_)) => ExpectedRevision::StreamExists,
        Some(Kind::Exact(n)) => ExpectedRevision::Exact(n),
    }
}

/// An event to append. Every event gets a fresh ID when built, so a retried append is
/// recognised by the server and not written twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    pub id: Uuid,
    pub event_type: String,
    pub data: Bytes,
    pub metadata: Bytes,
    pub is_json: bool,
}

impl EventData {
    /// An event whose data is `value` serialised as JSON.
    pub fn json<T: Serialize + ?Sized>(
        event_type: impl Into<String>,
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(EventData {
            id: Uuid::new_v4(),
            event_type: event_type.into(),
            data: serde_json::to_vec(value)?.into(),
            metadata: Bytes::new(),
            is_json: true,
        })
    }

    /// An event with opaque bytes.
    pub fn binary(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        EventData {
            id: Uuid::new_v4(),
            event_type: event_type.into(),
            data: data.into(),
            metadata: Bytes::new(),
            is_json: false,
        }
    }

    /// Raw bytes already holding JSON.
    pub fn json_bytes(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        EventData {
            is_json: true,
            ..Self::binary(event_type, data)
        }
    }

    pub fn id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    pub fn metadata(mut self, metadata: impl Into<Bytes>) -> Self {
        self.metadata = metadata.into();
        self
    }

    pub fn metadata_json<T: Serialize + ?Sized>(
        mut self,
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        self.metadata = serde_json::to_vec(value)?.into();
        Ok(self)
    }

    pub(crate) fn into_proto(self) -> v1::EventData {
        v1::EventData {
            event_id: self.id.to_string(),
            event_type: self.event_type,
            data: self.data,
            metadata: self.metadata,
            content_type: if self.is_json {
                v1::ContentType::Json as i32
            } else {
                v1::ContentType::Binary as i32
            },
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub stream: String,
    pub revision: u64,
    pub position: u64,
    pub id: Uuid,
    pub event_type: String,
    pub data: Bytes,
    pub metadata: Bytes,
    pub is_json: bool,
    /// Server time of the append.
    pub created: SystemTime,
    /// Where the event is listed when it was read through a derived stream (`$ce-<category>`,
    /// `$et-<event type>`); the other fields are the event's own.
    pub listed_in: Option<Box<ListedIn>>,
}

/// An event's place in a derived stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedIn {
    /// The derived stream's name.
    pub stream: String,
    /// Dense from 0 in log order and never reassigned: resume reads and subscriptions of the
    /// derived stream from it.
    pub revision: u64,
    /// The event is no longer readable in its own stream (deleted, truncated, aged out): only
    /// `stream`, `revision` and `position` of the event are set.
    pub unresolved: bool,
    /// On deliveries of a consumer group reading a derived stream: the entry's own ID, stable,
    /// which the consumer acknowledges (see [`RecordedEvent::ack_id`]). `None` on reads and
    /// subscriptions.
    pub entry_id: Option<Uuid>,
}

impl RecordedEvent {
    /// Deserialises the data as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.data)
    }

    /// The ID to acknowledge this event by in a consumer group: the entry's when it came
    /// through a derived stream, the event's own otherwise.
    pub fn ack_id(&self) -> Uuid {
        self.listed_in
            .as_ref()
            .and_then(|l| l.entry_id)
            .unwrap_or(self.id)
    }

    pub(crate) fn from_proto(e: v1::RecordedEvent) -> Self {
        let created = if e.timestamp_unix_nanos >= 0 {
            UNIX_EPOCH + Duration::from_nanos(e.timestamp_unix_nanos as u64)
        } else {
            UNIX_EPOCH
        };
        RecordedEvent {
            stream: e.stream,
            revision: e.revision,
            position: e.position,
            id: Uuid::parse_str(&e.event_id).unwrap_or_default(),
            event_type: e.event_type,
            data: e.data,
            metadata: e.metadata,
            is_json: e.content_type == v1::ContentType::Json as i32,
            created,
            listed_in: e.listed_in.map(|l| {
                Box::new(ListedIn {
                    stream: l.stream,
                    revision: l.revision,
                    unresolved: l.unresolved,
                    entry_id: Uuid::parse_str(&l.entry_id).ok(),
                })
            }),
        }
    }
}

/// The outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's revision after the append (its last event's revision).
    pub revision: u64,
    /// Log position of the append's last event.
    pub position: u64,
    /// The server recognised this append as a retry of one already written.
    pub idempotent_replay: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Forwards,
    Backwards,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// The start (forwards) or the end (backwards).
    #[default]
    Default,
    Start,
    End,
    /// Streams: this revision, inclusive.
    Revision(u64),
    /// `$all`: this position (inclusive forwards; backwards returns the events before it).
    Position(u64),
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscribeFrom {
    #[default]
    Start,
    /// Only events appended from now on.
    End,
    /// Streams: events after this revision.
    AfterRevision(u64),
    /// `$all`: events after the event at this position.
    AfterPosition(u64),
    /// `$all`: events from this position on, inclusive (a checkpoint's position).
    FromPosition(u64),
}

/// A `$all` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub on_event_type: bool,
    pub prefixes: Vec<String>,
    pub regex: Option<String>,
    /// Records examined between checkpoints (0: server default).
    pub checkpoint_interval: u32,
}

impl Filter {
    pub fn stream_prefix(prefixes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Filter {
            on_event_type: false,
            prefixes: prefixes.into_iter().map(Into::into).collect(),
            regex: None,
            checkpoint_interval: 0,
        }
    }
    pub fn event_type_prefix(prefixes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Filter {
            on_event_type: true,
            ..Self::stream_prefix(prefixes)
        }
    }
    /// The events of these categories and event types (exact names), answered from the
    /// server's indexes at a cost in proportion to the matches (the stream-name prefixes
    /// `$idx-ce-<category>` and `$idx-et-<type>`; the server needs `--derived-streams`).
    pub fn indexed<C, T>(
        categories: impl IntoIterator<Item = C>,
        event_types: impl IntoIterator<Item = T>,
    ) -> Self
    where
        C: std::fmt::Display,
        T: std::fmt::Display,
    {
        let categories = categories.into_iter().map(|c| format!("$idx-ce-{c}"));
        let types = event_types.into_iter().map(|t| format!("$idx-et-{t}"));
        Self::stream_prefix(categories.chain(types))
    }
    pub fn stream_regex(regex: impl Into<String>) -> Self {
        Filter {
            on_event_type: false,
            prefixes: Vec::new(),
            regex: Some(regex.into()),
            checkpoint_interval: 0,
        }
    }
    pub fn event_type_regex(regex: impl Into<String>) -> Self {
        Filter {
            on_event_type: true,
            ..Self::stream_regex(regex)
        }
    }
    pub fn checkpoint_interval(mut self, records: u32) -> Self {
        self.checkpoint_interval = records;
        self
    }
    pub(crate) fn into_proto(self) -> v1::Filter {
        v1::Filter {
            on: if self.on_event_type {
                v1::FilterOn::EventType as i32
            } else {
                v1::FilterOn::StreamName as i32
            },
            prefixes: self.prefixes,
            regex: self.regex.unwrap_or_default(),
            checkpoint_interval: self.checkpoint_interval,
        }
    }
}

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionMessage {
    Event(RecordedEvent),
    /// History delivered; live events follow. `position`: `$all` position, or the next
    /// stream revision.
    CaughtUp {
        position: u64,
    },
    /// Filtered `$all`: the log was examined up to here.
    Checkpoint {
        position: u64,
    },
}

/// Stream metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamMetadata {
    pub max_count: Option<u64>,
    pub max_age: Option<Duration>,
    pub truncate_before: Option<u64>,
    /// Other keys (a JSON object, or `Null` for none).
    pub custom: serde_json::Value,
}

impl StreamMetadata {
    pub(crate) fn into_proto(self) -> v1::StreamMetadata {
        v1::StreamMetadata {
            max_count: self.max_count,
            max_age_seconds: self.max_age.map(|a| a.as_secs()),
            truncate_before: self.truncate_before,
            custom_json: if self.custom.is_null() {
                String::new()
            } else {
                self.custom.to_string()
            },
        }
    }

    pub(crate) fn from_proto(m: v1::StreamMetadata) -> Self {
        StreamMetadata {
            max_count: m.max_count,
            max_age: m.max_age_seconds.map(Duration::from_secs),
            truncate_before: m.truncate_before,
            custom: serde_json::from_str(&m.custom_json).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A stream in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    pub last_revision: Option<u64>,
    pub soft_deleted: bool,
    pub tombstoned: bool,
}

/// Server information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub version: String,
    pub uptime: Duration,
    pub log_end_position: u64,
    pub stream_count: u64,
    pub data_bytes: u64,
    pub segment_count: u64,
    pub durability: String,
    pub read_only_reason: Option<String>,
    pub data_dir: String,
    /// Set when the server is a cluster node.
    pub cluster: Option<crate::ClusterStatus>,
}
