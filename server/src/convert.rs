//! Conversions between the `strata.v1` messages and engine types.

use std::time::Duration;

use strata_engine::{
    ContentType, Direction, EventData, EventFilter, ExpectedRevision, FilterOn, RecordedEvent,
    StreamMetadata,
};
use strata_proto::v1::{self, expected_revision::Kind};
use tonic::Status;
use uuid::Uuid;

use crate::status::invalid;

pub fn expected_from_proto(e: Option<v1::ExpectedRevision>) -> ExpectedRevision {
    match e.and_then(|e| e.kind) {
        None | Some(Kind::Any(_)) => ExpectedRevision::Any,
        Some(Kind::NoStream(_)) => ExpectedRevision::NoStream,
        Some(Kind::StreamExists(_)) => ExpectedRevision::StreamExists,
        Some(Kind::Exact(n)) => ExpectedRevision::Exact(n),
    }
}

pub fn expected_to_proto(e: ExpectedRevision) -> v1::ExpectedRevision {
    let kind = match e {
        ExpectedRevision::Any => Kind::Any(v1::Empty {}),
        ExpectedRevision::NoStream => Kind::NoStream(v1::Empty {}),
        ExpectedRevision::StreamExists => Kind::StreamExists(v1::Empty {}),
        ExpectedRevision::Exact(n) => Kind::Exact(n),
    };
    v1::ExpectedRevision { kind: Some(kind) }
}

/// The events of an append; an error names the first bad event by its index.
pub fn events_from_proto(events: Vec<v1::EventData>) -> Result<Vec<EventData>, Status> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| event_from_proto(i, e))
        .collect()
}

pub fn event_from_proto(i: usize, e: v1::EventData) -> Result<EventData, Status> {
    let event_id = if e.event_id.is_empty() {
        None
    } else {
        Some(Uuid::parse_str(&e.event_id).map_err(|err| {
            invalid(
                "event_id",
                format!("event {i}: {:?} is not a UUID: {err}", e.event_id),
            )
        })?)
    };
    Ok(EventData {
        event_id,
        event_type: e.event_type,
        data: e.data,
        metadata: e.metadata,
        content_type: match v1::ContentType::try_from(e.content_type) {
            Ok(v1::ContentType::Binary) => ContentType::Binary,
            Ok(v1::ContentType::Json) => ContentType::Json,
            Err(_) => {
                return Err(invalid(
                    "content_type",
                    format!("event {i}: unknown content type {}", e.content_type),
                ))
            }
        },
    })
}

pub fn event_to_proto(e: RecordedEvent) -> v1::RecordedEvent {
    v1::RecordedEvent {
        stream: e.stream,
        revision: e.revision,
        position: e.position,
        timestamp_unix_nanos: e.timestamp_ns,
        event_id: e.event_id.to_string(),
        event_type: e.event_type,
        data: e.data,
        metadata: e.metadata,
        content_type: match e.content_type {
            ContentType::Json => v1::ContentType::Json as i32,
            ContentType::Binary => v1::ContentType::Binary as i32,
        },
        listed_in: None,
    }
}

/// An entry of a derived stream (`stream`): the event with where it is listed, or, when the
/// event is no longer readable in its own stream, only where it was.
pub fn derived_to_proto(
    stream: &str,
    d: strata_engine::derived::DerivedEvent,
) -> v1::RecordedEvent {
    let listed_in = Some(v1::ListedIn {
        stream: stream.to_owned(),
        revision: d.revision,
        unresolved: !d.resolvable,
        entry_id: String::new(),
    });
    if d.resolvable {
        return v1::RecordedEvent {
            listed_in,
            ..event_to_proto(d.event)
        };
    }
    v1::RecordedEvent {
        stream: d.event.stream,
        revision: d.event.revision,
        position: d.event.position,
        listed_in,
        ..Default::default()
    }
}

/// A consumer group's delivery: the event, with where it is listed when the group reads a
/// derived stream.
pub fn delivered_to_proto(
    event: strata_engine::RecordedEvent,
    listed: Option<strata_persistent::Listed>,
) -> v1::RecordedEvent {
    let Some(l) = listed else {
        return event_to_proto(event);
    };
    let mut e = derived_to_proto(
        &l.stream,
        strata_engine::derived::DerivedEvent {
            revision: l.revision,
            event,
            resolvable: l.resolvable,
        },
    );
    if let Some(listed_in) = e.listed_in.as_mut() {
        // What the consumer acknowledges it by.
        listed_in.entry_id = l.entry_id().to_string();
    }
    e
}

pub fn direction_from_proto(d: i32) -> Result<Direction, Status> {
    match v1::Direction::try_from(d) {
        Ok(v1::Direction::Forwards) => Ok(Direction::Forwards),
        Ok(v1::Direction::Backwards) => Ok(Direction::Backwards),
        Err(_) => Err(invalid("direction", format!("unknown direction {d}"))),
    }
}

/// The engine filter and the checkpoint interval of a proto filter.
pub fn filter_from_proto(f: Option<v1::Filter>) -> Result<(Option<EventFilter>, u32), Status> {
    let Some(f) = f else { return Ok((None, 0)) };
    let on = match v1::FilterOn::try_from(f.on) {
        Ok(v1::FilterOn::StreamName) => FilterOn::StreamName,
        Ok(v1::FilterOn::EventType) => FilterOn::EventType,
        Err(_) => {
            return Err(invalid(
                "filter.on",
                format!("unknown filter target {}", f.on),
            ))
        }
    };
    let filter = match (f.prefixes.is_empty(), f.regex.is_empty()) {
        (true, true) => return Err(invalid("filter", "set either prefixes or regex")),
        (false, false) => return Err(invalid("filter", "set prefixes or regex, not both")),
        (false, true) => EventFilter::prefixes(on, f.prefixes),
        (true, false) => EventFilter::regex(on, &f.regex),
    }
    .map_err(crate::status::from_engine)?;
    Ok((Some(filter), f.checkpoint_interval))
}

pub fn metadata_from_proto(m: Option<v1::StreamMetadata>) -> Result<StreamMetadata, Status> {
    let m = m.unwrap_or_default();
    let custom = if m.custom_json.trim().is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_str::<serde_json::Value>(&m.custom_json) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err(invalid("metadata.custom_json", "must be a JSON object")),
            Err(e) => {
                return Err(invalid(
                    "metadata.custom_json",
                    format!("not valid JSON: {e}"),
                ))
            }
        }
    };
    Ok(StreamMetadata {
        max_count: m.max_count,
        max_age: m.max_age_seconds.map(Duration::from_secs),
        truncate_before: m.truncate_before,
        custom,
    })
}

pub fn metadata_to_proto(m: StreamMetadata) -> v1::StreamMetadata {
    v1::StreamMetadata {
        max_count: m.max_count,
        max_age_seconds: m.max_age.map(|a| a.as_secs()),
        truncate_before: m.truncate_before,
        custom_json: if m.custom.is_empty() {
            String::new()
        } else {
            serde_json::Value::Object(m.custom).to_string()
        },
    }
}
