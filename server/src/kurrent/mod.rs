//! The KurrentDB client protocol v1, served on the same port as `strata.v1` and mapped onto the
//! same engine, so that existing KurrentDB/EventStoreDB clients work by changing only their
//! connection string.
//!
//! Conventions of the mapping:
//! - `$all` positions: KurrentDB's commit and prepare positions are both Strata's log position
//!   plus one, so the first event is at 1 and 0 keeps meaning "before everything" (clients
//!   use 0 that way, e.g. for an empty store).
//! - Errors carry no `grpc-status-details-bin` (the clients would not recognise ours) and use
//!   the texts the clients match on (see `status`).

/// KurrentDB's expected-revision oneofs (one generated enum per request type) as ours.
macro_rules! expected_of {
    ($e:expr, $enum:path, $exact:ident) => {{
        use $enum as E;
        match $e {
            Some(E::$exact(r)) => ExpectedRevision::Exact(r),
            Some(E::NoStream(_)) => ExpectedRevision::NoStream,
            Some(E::StreamExists(_)) => ExpectedRevision::StreamExists,
            Some(E::Any(_)) | None => ExpectedRevision::Any,
        }
    }};
}

pub mod append;
mod append_errors;
pub mod cluster;
#[macro_use]
mod group_settings;
mod links;
pub mod persistent;
mod read_stream;
pub mod status;
pub mod streams;
pub mod v2;

use std::collections::HashMap;

use strata_engine::{AllFrom, ContentType, Direction, Engine, EventData, ExpectedRevision};
use strata_kurrentdb_proto::event_store::client::{self as kc, uuid::Value as UuidValue};
use strata_proto::v1;
use tonic::Status;
use uuid::Uuid;

/// KurrentDB's position of the event at Strata position `p`.
pub fn to_commit(p: u64) -> u64 {
    p + 1
}

/// The Strata position of the event at KurrentDB commit position `c` (`None` for 0: before
/// the first event).
pub fn from_commit(c: u64) -> Option<u64> {
    c.checked_sub(1)
}

pub fn stream_name(id: Option<&kc::StreamIdentifier>) -> Result<String, Status> {
    let id = id.ok_or_else(|| Status::invalid_argument("stream_identifier is required"))?;
    String::from_utf8(id.stream_name.to_vec())
        .map_err(|_| Status::invalid_argument("stream_identifier is not UTF-8"))
}

pub fn stream_id(name: &str) -> kc::StreamIdentifier {
    kc::StreamIdentifier {
        stream_name: bytes::Bytes::copy_from_slice(name.as_bytes()),
    }
}

pub fn uuid_from(u: Option<&kc::Uuid>) -> Result<Option<Uuid>, Status> {
    match u.and_then(|u| u.value.as_ref()) {
        None => Ok(None),
        Some(UuidValue::String(s)) => Uuid::parse_str(s)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("invalid UUID {s:?}: {e}"))),
        Some(UuidValue::Structured(s)) => {
            let hi = s.most_significant_bits as u64;
            let lo = s.least_significant_bits as u64;
            Ok(Some(Uuid::from_u64_pair(hi, lo)))
        }
    }
}

pub fn uuid_to(u: Uuid, structured: bool) -> kc::Uuid {
    let value = if structured {
        let (hi, lo) = u.as_u64_pair();
        UuidValue::Structured(kc::uuid::Structured {
            most_significant_bits: hi as i64,
            least_significant_bits: lo as i64,
        })
    } else {
        UuidValue::String(u.to_string())
    };
    kc::Uuid { value: Some(value) }
}

/// An event proposed by a KurrentDB client: its type and content type travel in `metadata`.
pub fn proposed_event(
    id: Option<&kc::Uuid>,
    metadata: &HashMap<String, String>,
    custom_metadata: bytes::Bytes,
    data: bytes::Bytes,
) -> Result<EventData, Status> {
    let event_type = metadata
        .get("type")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Status::invalid_argument("every proposed message needs a \"type\" in its metadata")
        })?;
    let content_type = match metadata.get("content-type").map(String::as_str) {
        Some("application/json") | None => ContentType::Json,
        Some(_) => ContentType::Binary,
    };
    Ok(EventData {
        event_id: Some(uuid_from(id)?.unwrap_or_else(Uuid::new_v4)),
        event_type: event_type.clone(),
        data,
        metadata: custom_metadata,
        content_type,
    })
}

/// The fields of a KurrentDB `RecordedEvent`, from a Strata event (the read and persistent
/// services each have their own generated type with these fields).
pub struct EventParts {
    pub id: kc::Uuid,
    pub stream_identifier: kc::StreamIdentifier,
    pub stream_revision: u64,
    pub position: u64,
    pub metadata: HashMap<String, String>,
    pub custom_metadata: bytes::Bytes,
    pub data: bytes::Bytes,
}

/// The read and persistent services each have their own generated `RecordedEvent` message,
/// with the same fields.
macro_rules! recorded_from_parts {
    ($($ty:ty),*) => {$(
        impl From<EventParts> for $ty {
            fn from(p: EventParts) -> Self {
                Self {
                    id: Some(p.id),
                    stream_identifier: Some(p.stream_identifier),
                    stream_revision: p.stream_revision,
                    prepare_position: p.position,
                    commit_position: p.position,
                    metadata: p.metadata,
                    custom_metadata: p.custom_metadata,
                    data: p.data,
                }
            }
        }
    )*};
}

recorded_from_parts!(
    strata_kurrentdb_proto::event_store::client::streams::read_resp::read_event::RecordedEvent,
    strata_kurrentdb_proto::event_store::client::persistent_subscriptions::read_resp::read_event::RecordedEvent
);

pub fn event_parts(e: v1::RecordedEvent, structured: bool) -> EventParts {
    let id = Uuid::parse_str(&e.event_id).unwrap_or_default();
    let content_type = if e.content_type == v1::ContentType::Binary as i32 {
        "application/octet-stream"
    } else {
        "application/json"
    };
    // .NET ticks (100 ns) since the Unix epoch, as the clients parse them.
    let created = (e.timestamp_unix_nanos / 100).to_string();
    let metadata = HashMap::from([
        ("type".to_owned(), e.event_type),
        ("content-type".to_owned(), content_type.to_owned()),
        ("created".to_owned(), created),
    ]);
    EventParts {
        id: uuid_to(id, structured),
        stream_identifier: stream_id(&e.stream),
        stream_revision: e.revision,
        position: to_commit(e.position),
        metadata,
        custom_metadata: e.metadata,
        data: e.data,
    }
}

/// KurrentDB's signed form of an expected revision, as its error texts print it.
pub fn expected_number(e: ExpectedRevision) -> i64 {
    match e {
        ExpectedRevision::Any => -2,
        ExpectedRevision::NoStream => -1,
        ExpectedRevision::StreamExists => -4,
        ExpectedRevision::Exact(n) => n as i64,
    }
}

/// The KurrentDB commit position to resume after, when Strata's next unread position is `q`:
/// that of the record just before `q` (0 when there is none).
pub fn commit_before(engine: &Engine, q: u64) -> u64 {
    match engine.read_all_scan(AllFrom::Position(q), Direction::Backwards, 1, None, 1) {
        Ok(s) => s.events.first().map_or(0, |e| to_commit(e.position)),
        Err(_) => 0,
    }
}
