//! Derived streams (`$ce-<category>`, `$et-<event type>`) the KurrentDB way. KurrentDB fills
//! them with link events (type `$>`, data `"<revision>@<stream>"`) written by its system
//! projections; Strata writes none, and presents each entry of its derived index as such a
//! link, with a stable ID, and with the linked event beside it when the client resolves links.

use std::collections::HashMap;

use strata_proto::v1;

use super::{event_parts, stream_id, to_commit, uuid_to, EventParts};

/// The event type of a link.
pub const LINK_TYPE: &str = "$>";

/// An entry of a derived stream: the link, and the event it points to unless that is no
/// longer readable (deleted, truncated, aged out).
pub struct Entry {
    pub link: EventParts,
    pub event: Option<EventParts>,
}

/// An event read: an ordinary one, or the entry of a derived stream.
pub enum Read {
    Plain(v1::RecordedEvent),
    Linked(Entry),
}

/// Splits `e` into link and event when it was read through a derived stream.
pub fn entry(mut e: v1::RecordedEvent, structured: bool) -> Read {
    let Some(listed) = e.listed_in.take() else {
        return Read::Plain(e);
    };
    let id = strata_engine::derived::entry_id(&listed.stream, listed.revision);
    let created = (e.timestamp_unix_nanos / 100).to_string();
    let metadata = HashMap::from([
        ("type".to_owned(), LINK_TYPE.to_owned()),
        (
            "content-type".to_owned(),
            "application/octet-stream".to_owned(),
        ),
        ("created".to_owned(), created),
    ]);
    // The stream the event came from, as KurrentDB's category projection notes it.
    let custom_metadata = serde_json::json!({ "$o": e.stream }).to_string();
    let link = EventParts {
        id: uuid_to(id, structured),
        stream_identifier: stream_id(&listed.stream),
        stream_revision: listed.revision,
        position: to_commit(e.position),
        metadata,
        custom_metadata: custom_metadata.into(),
        data: format!("{}@{}", e.revision, e.stream).into(),
    };
    let event = (!listed.unresolved).then(|| event_parts(e, structured));
    Read::Linked(Entry { link, event })
}

/// What a KurrentDB `ReadEvent` carries as (event, link): an ordinary event alone; an entry
/// of a derived stream as its link, with the linked event beside it when the client resolves
/// links (and the event is still there), or as the link alone in the event's place when not.
pub fn event_and_link(
    e: v1::RecordedEvent,
    structured: bool,
    resolve_links: bool,
) -> (Option<EventParts>, Option<EventParts>) {
    match entry(e, structured) {
        Read::Plain(e) => (Some(event_parts(e, structured)), None),
        Read::Linked(entry) if resolve_links => (entry.event, Some(entry.link)),
        Read::Linked(entry) => (Some(entry.link), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(unresolved: bool) -> v1::RecordedEvent {
        v1::RecordedEvent {
            stream: "order-1".into(),
            revision: 4,
            position: 1000,
            timestamp_unix_nanos: 1_700_000_000_000_000_000,
            event_id: uuid::Uuid::new_v4().to_string(),
            event_type: "Placed".into(),
            data: "{}".into(),
            listed_in: Some(v1::ListedIn {
                stream: "$ce-order".into(),
                revision: 9,
                unresolved,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_entry_is_a_link_to_its_event() {
        let Read::Linked(e) = entry(listed(false), false) else {
            panic!("not linked")
        };
        assert_eq!(&e.link.data[..], b"4@order-1");
        assert_eq!(e.link.metadata["type"], "$>");
        assert_eq!(e.link.stream_revision, 9);
        assert_eq!(e.link.position, to_commit(1000));
        let event = e.event.unwrap();
        assert_eq!(event.stream_revision, 4);
        assert_eq!(event.metadata["type"], "Placed");
        // The link's ID is the same on every read.
        let Read::Linked(again) = entry(listed(false), false) else {
            panic!("not linked")
        };
        assert_eq!(e.link.id, again.link.id);
    }

    #[test]
    fn an_unresolved_entry_is_the_link_alone() {
        let Read::Linked(e) = entry(listed(true), false) else {
            panic!("not linked")
        };
        assert!(e.event.is_none());
        assert_eq!(&e.link.data[..], b"4@order-1");
    }

    #[test]
    fn an_ordinary_event_is_given_back() {
        let mut e = listed(false);
        e.listed_in = None;
        assert!(matches!(entry(e, false), Read::Plain(_)));
    }
}
