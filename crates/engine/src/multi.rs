//! Multi-stream appends: events for several streams written as one atomic unit, with an
//! expected revision per written stream and optional checks on other streams.
//!
//! The unit is one run of records whose last carries the commit flag, as for a single-stream
//! append; recovery keeps or cuts the run as a whole, and the writer decides every check and
//! writes the run in one step of its single thread, so no other append interleaves.

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::record::framed_len;
use crate::types::{CurrentRevision, EventData, ExpectedRevision};
use crate::validate::{prepare_events, validate_user_stream};
use crate::writer::{Op, Reply};

/// A stream written by a [`MultiAppend`], with the revision it must be at before the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamWrite {
    pub stream: String,
    pub expected: ExpectedRevision,
}

/// A stream whose state a [`MultiAppend`] requires, without necessarily writing to it. A check
/// on a written stream is evaluated against its state before the append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCheck {
    pub stream: String,
    pub expected: ExpectedRevision,
}

/// Events for several streams, appended all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MultiAppend {
    /// The streams written, each once.
    pub streams: Vec<StreamWrite>,
    /// The events in log order, each with the index of its stream in `streams`; the events of
    /// one stream get consecutive revisions in this order, and streams may interleave.
    pub events: Vec<(usize, EventData)>,
    /// Checks on stream states; all failures are reported together.
    pub checks: Vec<StreamCheck>,
}

impl MultiAppend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stream and its events (after the events already added).
    pub fn write(
        mut self,
        stream: impl Into<String>,
        expected: ExpectedRevision,
        events: impl IntoIterator<Item = EventData>,
    ) -> Self {
        let i = self.streams.len();
        self.streams.push(StreamWrite {
            stream: stream.into(),
            expected,
        });
        self.events.extend(events.into_iter().map(|e| (i, e)));
        self
    }

    /// Adds a check on a stream's state.
    pub fn check(mut self, stream: impl Into<String>, expected: ExpectedRevision) -> Self {
        self.checks.push(StreamCheck {
            stream: stream.into(),
            expected,
        });
        self
    }
}

/// What a multi-stream append did to one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAppended {
    pub stream: String,
    /// The stream's last revision after the append.
    pub revision: u64,
    /// Log position of the stream's last event in the append.
    pub position: u64,
}

/// The outcome of a successful multi-stream append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiAppendResult {
    /// One entry per written stream, in the order of [`MultiAppend::streams`].
    pub streams: Vec<StreamAppended>,
    /// Log position of the last event of the append.
    pub position: u64,
    /// True when the whole append was recognised as a retry of one already written.
    pub idempotent_replay: bool,
}

/// A failed check of a multi-stream append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckViolation {
    /// Index of the check in [`MultiAppend::checks`].
    pub check: usize,
    pub stream: String,
    pub expected: ExpectedRevision,
    pub actual: CurrentRevision,
}

impl std::fmt::Display for CheckViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "check {} on stream '{}' expected {}, but the stream {}",
            self.check, self.stream, self.expected, self.actual
        )
    }
}

/// A validated multi-stream append, as the writer receives it.
pub(crate) struct PreparedMulti {
    pub append: MultiAppend,
    pub reply: oneshot::Sender<Result<MultiAppendResult>>,
}

/// Checks names, events and sizes, and gives every event an ID.
fn prepare(mut m: MultiAppend, max_append_size: usize) -> Result<MultiAppend> {
    if m.streams.is_empty() {
        return Err(Error::invalid(
            "streams",
            "a multi-stream append needs at least one stream to write",
        ));
    }
    let mut seen = HashMap::with_capacity(m.streams.len());
    for (i, w) in m.streams.iter().enumerate() {
        validate_user_stream(&w.stream)?;
        if seen.insert(w.stream.as_str(), i).is_some() {
            return Err(Error::invalid(
                "streams",
                format!(
                    "stream '{}' appears twice in one multi-stream append; put all its events under one entry",
                    w.stream
                ),
            ));
        }
    }
    for c in &m.checks {
        validate_user_stream(&c.stream)?;
    }
    let mut per_stream: Vec<Vec<EventData>> = vec![Vec::new(); m.streams.len()];
    let mut order = Vec::with_capacity(m.events.len());
    for (i, e) in m.events.drain(..) {
        let Some(list) = per_stream.get_mut(i) else {
            return Err(Error::invalid(
                "events",
                format!(
                    "an event names stream index {i}, but the append has {} streams",
                    m.streams.len()
                ),
            ));
        };
        list.push(e);
        order.push(i);
    }
    let mut size = 0usize;
    let mut prepared = Vec::with_capacity(per_stream.len());
    for (w, events) in m.streams.iter().zip(per_stream) {
        if events.is_empty() {
            return Err(Error::invalid(
                "events",
                format!(
                    "stream '{}' has no events in the multi-stream append (use a check to require a stream's state without writing to it)",
                    w.stream
                ),
            ));
        }
        let events = prepare_events(&w.stream, events, max_append_size)?;
        size += events
            .iter()
            .map(|e| framed_len(&w.stream, &e.event_type, e.data.len(), e.metadata.len()))
            .sum::<usize>();
        prepared.push(events.into_iter());
    }
    if size > max_append_size {
        return Err(Error::MultiAppendTooLarge {
            size,
            max: max_append_size,
        });
    }
    m.events = order
        .into_iter()
        .map(|i| (i, prepared[i].next().expect("counted above")))
        .collect();
    Ok(m)
}

impl Engine {
    /// Appends events to several streams as one atomic unit: every expected revision and check
    /// holds and all events are written, or nothing is. No other write lands between the
    /// checks and the write, and after a crash either the whole append is in the log or none
    /// of it.
    ///
    /// A retry is recognised per stream as for [`Engine::append`]; when every stream's events
    /// are already written the original result comes back (even if a checked stream has
    /// moved since), and when only some are, nothing is written and the error says which.
    pub async fn append_multi(&self, append: MultiAppend) -> Result<MultiAppendResult> {
        let append = prepare(append, self.config().max_append_size)?;
        let (tx, rx) = oneshot::channel();
        let op = Op::Multi(Box::new(PreparedMulti { append, reply: tx }));
        self.queue(op, Reply::call(|_| {})).await;
        rx.await.map_err(|_| Error::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preparing_keeps_the_interleaved_order_and_assigns_ids() {
        let mut m = MultiAppend::new()
            .write("a", ExpectedRevision::Any, [EventData::json("A1", "{}")])
            .write(
                "b",
                ExpectedRevision::NoStream,
                [EventData::json("B1", "{}")],
            );
        let mut e = EventData::json("A2", "{}");
        e.event_id = None;
        m.events.push((0, e));
        let m = prepare(m, 1 << 20).unwrap();
        let types: Vec<(usize, &str)> = m
            .events
            .iter()
            .map(|(i, e)| (*i, e.event_type.as_str()))
            .collect();
        assert_eq!(types, vec![(0, "A1"), (1, "B1"), (0, "A2")]);
        assert!(m.events.iter().all(|(_, e)| e.event_id.is_some()));
    }

    #[test]
    fn bad_multi_appends_are_refused_with_the_reason() {
        let twice = MultiAppend::new()
            .write("a", ExpectedRevision::Any, [EventData::json("A", "{}")])
            .write("a", ExpectedRevision::Any, [EventData::json("A", "{}")]);
        let err = prepare(twice, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");

        let empty = MultiAppend::new()
            .write("a", ExpectedRevision::Any, [EventData::json("A", "{}")])
            .write("b", ExpectedRevision::Any, []);
        let err = prepare(empty, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("'b' has no events"), "{err}");

        let big = MultiAppend::new()
            .write(
                "a",
                ExpectedRevision::Any,
                [EventData::json("A", vec![b'x'; 600])],
            )
            .write(
                "b",
                ExpectedRevision::Any,
                [EventData::json("B", vec![b'x'; 600])],
            );
        let err = prepare(big, 1000).unwrap_err();
        assert!(
            matches!(err, Error::MultiAppendTooLarge { max: 1000, .. }),
            "{err}"
        );

        let reserved = MultiAppend::new()
            .write("a", ExpectedRevision::Any, [EventData::json("A", "{}")])
            .check("$x", ExpectedRevision::NoStream);
        assert!(matches!(
            prepare(reserved, 1 << 20),
            Err(Error::ReservedStream { .. })
        ));

        assert!(prepare(MultiAppend::new(), 1 << 20).is_err());
    }
}
