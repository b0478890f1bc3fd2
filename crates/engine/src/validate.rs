//! Checks on names and events that every write passes before it is queued for the writer.

use std::collections::HashSet;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::record::framed_len;
use crate::types::EventData;

/// Longest stream name, in bytes of UTF-8.
pub const MAX_STREAM_NAME: usize = 1000;
/// Longest event type, in bytes of UTF-8.
pub const MAX_EVENT_TYPE: usize = 1000;

pub(crate) fn validate_stream_name(stream: &str) -> Result<()> {
    if stream.is_empty() {
        return Err(Error::invalid("stream name", "must not be empty"));
    }
    if stream.len() > MAX_STREAM_NAME {
        return Err(Error::invalid(
            "stream name",
            format!(
                "is {} bytes, over the limit of {MAX_STREAM_NAME}",
                stream.len()
            ),
        ));
    }
    if stream.chars().any(char::is_control) {
        return Err(Error::invalid(
            "stream name",
            format!("{stream:?} contains control characters"),
        ));
    }
    Ok(())
}

pub(crate) fn validate_user_stream(stream: &str) -> Result<()> {
    validate_stream_name(stream)?;
    if stream.starts_with('$') {
        return Err(Error::ReservedStream {
            stream: stream.into(),
        });
    }
    Ok(())
}

pub(crate) fn validate_system_stream(stream: &str) -> Result<()> {
    validate_stream_name(stream)?;
    if !stream.starts_with('$') || stream.starts_with("$$") {
        return Err(Error::invalid(
            "stream name",
            format!("system streams start with a single '$', got {stream:?}"),
        ));
    }
    if stream == "$all" {
        return Err(Error::invalid(
            "stream name",
            "$all is the global log: it is read, never written to as a stream",
        ));
    }
    if crate::derived::is_derived(stream) {
        return Err(Error::invalid(
            "stream name",
            format!("{stream} is a derived stream, kept by the server from the log: it is read, never written to"),
        ));
    }
    Ok(())
}

/// Checks an append's events (stream name aside) and gives each an ID. An absent ID, or the
/// nil UUID (which no client means as an identity), gets a fresh random one.
pub(crate) fn prepare_events(
    stream: &str,
    mut events: Vec<EventData>,
    max_append_size: usize,
) -> Result<Vec<EventData>> {
    if events.is_empty() {
        return Err(Error::invalid(
            "events",
            "an append needs at least one event",
        ));
    }
    let mut size = 0usize;
    for (i, e) in events.iter_mut().enumerate() {
        if e.event_type.is_empty() {
            return Err(Error::invalid(
                "event type",
                format!("event {i} of the append has an empty event type"),
            ));
        }
        if e.event_type.len() > MAX_EVENT_TYPE {
            return Err(Error::invalid(
                "event type",
                format!(
                    "event {i} has a type of {} bytes, over the limit of {MAX_EVENT_TYPE}",
                    e.event_type.len()
                ),
            ));
        }
        if e.event_type.chars().any(char::is_control) {
            return Err(Error::invalid(
                "event type",
                format!(
                    "event {i} has the type {:?}, which contains control characters",
                    e.event_type
                ),
            ));
        }
        if e.event_id.is_none_or(|id| id.is_nil()) {
            e.event_id = Some(Uuid::new_v4());
        }
        size += framed_len(stream, &e.event_type, e.data.len(), e.metadata.len());
    }
    if size > max_append_size {
        return Err(Error::AppendTooLarge {
            stream: stream.into(),
            size,
            max: max_append_size,
        });
    }
    let mut seen = HashSet::with_capacity(events.len());
    for e in &events {
        let id = e.event_id.expect("assigned above");
        if !seen.insert(id) {
            return Err(Error::invalid(
                "event id",
                format!("event ID {id} appears twice in one append"),
            ));
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nil_and_absent_ids_get_fresh_ones() {
        let mut a = EventData::json("E", "{}");
        a.event_id = Some(Uuid::nil());
        let mut b = EventData::json("E", "{}");
        b.event_id = Some(Uuid::nil());
        let c = EventData::json("E", "{}");
        let out = prepare_events("s", vec![a, b, c], 1 << 20).unwrap();
        let ids: HashSet<Uuid> = out.iter().map(|e| e.event_id.unwrap()).collect();
        assert_eq!(ids.len(), 3);
        assert!(!ids.contains(&Uuid::nil()));
    }

    #[test]
    fn control_characters_in_event_types_are_refused() {
        let e = EventData::json("Order\0Placed", "{}");
        let err = prepare_events("s", vec![e], 1 << 20).unwrap_err();
        assert!(err.to_string().contains("control characters"), "{err}");
    }
}
