//! Reading a group's source stream: an ordinary stream, or a derived one (`$ce-<category>`,
//! `$et-<event type>`), whose entries are numbered by their revision in the derived stream and
//! carry where they are listed.

use strata_engine::derived::{entry_id, is_derived};
use strata_engine::{Direction, Engine, Error as EngineError, RecordedEvent, StreamFrom};
use uuid::Uuid;

/// Where a delivered event is listed when the group reads a derived stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The derived stream.
    pub stream: String,
    /// The entry's revision there (the group's sequence number for it).
    pub revision: u64,
    /// Whether the event can still be read in its own stream; if not, only its stream,
    /// revision and position may be shown.
    pub resolvable: bool,
}

impl Listed {
    /// The entry's own ID: what consumers acknowledge.
    pub fn entry_id(&self) -> Uuid {
        entry_id(&self.stream, self.revision)
    }
}

/// A page of a group's source stream.
pub(crate) struct Page {
    /// (sequence number, event, where it is listed) in order.
    pub events: Vec<(u64, RecordedEvent, Option<Listed>)>,
    pub next_revision: Option<u64>,
    pub last_revision: u64,
}

/// Reads forwards from revision `from`: at most `max` events, stopping once `max_bytes` are
/// reached (at least one event is returned).
pub(crate) fn read(
    engine: &Engine,
    stream: &str,
    from: u64,
    max: usize,
    max_bytes: usize,
) -> Result<Page, EngineError> {
    let from = StreamFrom::Revision(from);
    if is_derived(stream) {
        let slice = engine.read_derived(stream, from, Direction::Forwards, max, max_bytes)?;
        return Ok(Page {
            events: slice
                .events
                .into_iter()
                .map(|d| {
                    let listed = Listed {
                        stream: stream.to_owned(),
                        revision: d.revision,
                        resolvable: d.resolvable,
                    };
                    (d.revision, d.event, Some(listed))
                })
                .collect(),
            next_revision: slice.next_revision,
            last_revision: slice.last_revision,
        });
    }
    let slice = engine.read_stream_budget(stream, from, Direction::Forwards, max, max_bytes)?;
    Ok(Page {
        events: slice
            .events
            .into_iter()
            .map(|e| (e.revision, e, None))
            .collect(),
        next_revision: slice.next_revision,
        last_revision: slice.last_revision,
    })
}

/// The entry at `revision` of a derived stream, if it is still the one at `position`.
pub(crate) fn derived_entry(
    engine: &Engine,
    stream: &str,
    revision: u64,
    position: u64,
) -> Result<Option<(RecordedEvent, Listed)>, EngineError> {
    let slice = match engine.read_derived(
        stream,
        StreamFrom::Revision(revision),
        Direction::Forwards,
        1,
        usize::MAX,
    ) {
        Ok(s) => s,
        Err(EngineError::StreamNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(slice
        .events
        .into_iter()
        .find(|d| d.revision == revision && d.event.position == position)
        .map(|d| {
            let listed = Listed {
                stream: stream.to_owned(),
                revision,
                resolvable: d.resolvable,
            };
            (d.event, listed)
        }))
}
