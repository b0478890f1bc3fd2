//! The single writer thread: checks expected revisions, encodes records, and group-commits.
//!
//! Requests queue on a channel. The writer takes the first, then everything else already
//! waiting (up to a byte budget), checks each against the committed state plus the effects of
//! the requests before it in the same batch, encodes them into one buffer, and issues one write
//! and one fdatasync for the whole batch. Requests that arrive during that fsync form the next
//! batch, so the batch size grows with the number of concurrent writers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::appender::Appender;
use crate::engine::{Durability, Shared};
use crate::error::{Error, Result};
use crate::index::{Effect, Entry};
use crate::metadata::{
    metadata_stream, StreamMetadata, METADATA_EVENT_TYPE, SOFT_DELETED_TB, TOMBSTONE_EVENT_TYPE,
};
use crate::reader::now_ns;
use crate::recent_ids::{stream_hash, IdKey, RecentIds, Seen};
use crate::record::{encode_event, EventRecord};
use crate::segment::Cursor;
use crate::types::{AppendResult, ContentType, CurrentRevision, EventData, ExpectedRevision};

mod commit;
mod idempotency;
mod multi;
mod reply;

use reply::Outcome;
pub(crate) use reply::Reply;

/// Largest batch the writer builds before committing (a single larger append still goes alone).
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// A write for the writer thread. Arguments are validated before they get here.
pub(crate) enum Op {
    Append {
        stream: String,
        expected: ExpectedRevision,
        /// Every event has an ID by now.
        events: Vec<EventData>,
    },
    Delete {
        stream: String,
        expected: ExpectedRevision,
    },
    Tombstone {
        stream: String,
        expected: ExpectedRevision,
    },
    SetMetadata {
        stream: String,
        expected: ExpectedRevision,
        metadata: StreamMetadata,
    },
    /// A multi-stream append; it carries its own reply channel (the request's `Reply` is unused).
    Multi(Box<crate::multi::PreparedMulti>),
}

pub(crate) struct Request {
    pub op: Op,
    pub reply: Reply,
}

impl Request {
    /// Answers the request with why the cluster would not take it.
    fn reply_refused(self, refusal: crate::replica::Refusal) {
        let err = refusal.into_error();
        match self.op {
            Op::Multi(m) => {
                let _ = m.reply.send(Err(err));
            }
            _ => self.reply.send(Err(err)),
        }
    }
}

/// What the batch so far has done to a stream.
#[derive(Clone)]
struct Pending {
    last_revision: Option<u64>,
    tombstoned: bool,
    metadata: Option<Arc<StreamMetadata>>,
}

impl Pending {
    fn has_visible(&self) -> bool {
        let Some(last) = self.last_revision else {
            return false;
        };
        let tb = self
            .metadata
            .as_ref()
            .and_then(|m| m.truncate_before)
            .unwrap_or(0);
        tb <= last
    }
}

/// An event planned into the batch.
struct Planned {
    stream: Arc<str>,
    revision: u64,
    position: u64,
    /// The event ID within its stream, for the recent-ID window.
    key: IdKey,
    effect: Option<Effect>,
    /// For the derived streams: the event type of a user stream's event.
    event_type: Option<Arc<str>>,
}

/// Where a batch goes.
pub(crate) enum Sink {
    /// This writer owns the end of the log (a single node).
    Local(Appender),
    /// The batch is proposed as a replicated entry and written by the entry log once a
    /// leader accepts it; planned positions are relative to the entry's body until then.
    Replicated,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Request>,
    sink: Sink,
    recent: RecentIds,
    // Per-batch state.
    buf: Vec<u8>,
    pending: HashMap<Arc<str>, Pending>,
    batch_ids: HashSet<IdKey, std::hash::BuildHasherDefault<crate::recent_ids::UuidHasher>>,
    planned: Vec<Planned>,
    outcomes: Vec<Outcome>,
    timestamp: i64,
    /// The event type last listed for the derived streams, reused while events share it.
    last_type: Option<Arc<str>>,
}

/// Why a request could not be planned into the current batch.
enum Plan {
    Done,
    /// Needs the batch before it committed first (it depends on data not yet durable).
    Defer(Request),
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Request>,
        sink: Sink,
        recent: RecentIds,
    ) -> Self {
        Writer {
            shared,
            rx,
            sink,
            recent,
            buf: Vec::with_capacity(1 << 20),
            pending: HashMap::new(),
            batch_ids: HashSet::default(),
            planned: Vec::new(),
            outcomes: Vec::new(),
            timestamp: 0,
            last_type: None,
        }
    }

    pub(crate) fn run(mut self) {
        let mut carried: Option<Request> = None;
        loop {
            let first = match carried.take() {
                Some(r) => r,
                None => match self.rx.blocking_recv() {
                    Some(r) => r,
                    None => break,
                },
            };
            self.timestamp = now_ns();
            if matches!(self.sink, Sink::Replicated) {
                // Plan only as a leader that has applied all its predecessors committed.
                let ready = match self.shared.proposer() {
                    Some(p) => p.prepare(),
                    None => Err(crate::replica::Refusal::NotAcknowledged(
                        "this node is not connected to its cluster yet".into(),
                    )),
                };
                if let Err(refusal) = ready {
                    first.reply_refused(refusal);
                    continue;
                }
                // What was committed since (this node's batches and, on a former follower,
                // those of earlier leaders) joins the window before anything is checked.
                let committed = std::mem::take(
                    &mut *self
                        .shared
                        .committed_ids
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()),
                );
                for (key, seen) in committed {
                    self.recent.insert_keyed(key, seen);
                }
            }
            if let Plan::Defer(r) = self.plan(first) {
                // Cannot happen on an empty batch, but stay safe: reply rather than loop.
                r.reply.send(Err(Error::invalid(
                    "append",
                    "internal: could not schedule request",
                )));
            }
            while self.buf.len() < MAX_BATCH_BYTES {
                let Ok(next) = self.rx.try_recv() else { break };
                if let Plan::Defer(r) = self.plan(next) {
                    carried = Some(r);
                    break;
                }
            }
            self.commit();
        }
    }

    /// The log position the batch will be written at (0 when it is proposed for replication:
    /// its entry's place is known only once it is committed).
    fn base_pos(&self) -> u64 {
        match &self.sink {
            Sink::Local(a) => a.write_pos,
            Sink::Replicated => 0,
        }
    }

    /// The state a request sees: this batch's effects, else the committed index.
    fn state(&self, stream: &str) -> Pending {
        if let Some(p) = self.pending.get(stream) {
            return p.clone();
        }
        self.shared.index.with_stream(stream, |st| match st {
            Some(st) => Pending {
                last_revision: st.last_revision,
                tombstoned: st.tombstoned,
                metadata: st.metadata.clone(),
            },
            None => Pending {
                last_revision: None,
                tombstoned: false,
                metadata: None,
            },
        })
    }

    fn expected_ok(expected: ExpectedRevision, st: &Pending) -> bool {
        match expected {
            ExpectedRevision::Any => true,
            ExpectedRevision::NoStream => !st.has_visible(),
            ExpectedRevision::StreamExists => st.has_visible(),
            ExpectedRevision::Exact(n) => st.last_revision == Some(n),
        }
    }

    fn wrong(stream: &str, expected: ExpectedRevision, st: &Pending) -> Error {
        Error::WrongExpectedRevision {
            stream: stream.into(),
            expected,
            actual: CurrentRevision::from_last(st.last_revision),
        }
    }

    fn plan(&mut self, req: Request) -> Plan {
        let Request { op, reply } = req;
        let result = match op {
            Op::Append {
                stream,
                expected,
                events,
            } => match self.plan_append(&stream, expected, &events) {
                Ok(Some(r)) => Ok(r),
                Ok(None) => {
                    return Plan::Defer(Request {
                        op: Op::Append {
                            stream,
                            expected,
                            events,
                        },
                        reply,
                    })
                }
                Err(e) => Err(e),
            },
            Op::Multi(m) => {
                return match self.plan_multi(&m.append) {
                    Some(result) => {
                        self.outcomes.push(Outcome::Multi(m.reply, result));
                        Plan::Done
                    }
                    None => Plan::Defer(Request {
                        op: Op::Multi(m),
                        reply,
                    }),
                };
            }
            Op::Delete { stream, expected } => self.plan_system(&stream, expected, true, |st| {
                let mut m = st.metadata.as_deref().cloned().unwrap_or_default();
                m.truncate_before = Some(SOFT_DELETED_TB);
                (METADATA_EVENT_TYPE, Some(m))
            }),
            Op::Tombstone { stream, expected } => {
                self.plan_system(&stream, expected, true, |_| (TOMBSTONE_EVENT_TYPE, None))
            }
            Op::SetMetadata {
                stream,
                expected,
                metadata,
            } => self.plan_system(&stream, expected, false, move |_| {
                (METADATA_EVENT_TYPE, Some(metadata))
            }),
        };
        self.outcomes.push(Outcome::Reply(reply, result));
        Plan::Done
    }

    /// Plans an append; `Ok(None)` means "defer to the next batch".
    fn plan_append(
        &mut self,
        stream: &str,
        expected: ExpectedRevision,
        events: &[EventData],
    ) -> Result<Option<AppendResult>> {
        let st = self.state(stream);
        if st.tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.into(),
            });
        }
        let ids: Vec<Uuid> = events
            .iter()
            .map(|e| e.event_id.expect("IDs assigned before the writer"))
            .collect();
        let hash = stream_hash(stream);
        if ids
            .iter()
            .any(|id| self.batch_ids.contains(&IdKey::hashed(hash, *id)))
        {
            // A retry racing its original inside one batch: decide after the original commits.
            return Ok(None);
        }
        if let Some(replay) = self.idempotent_check(stream, hash, expected, &st, &ids)? {
            return Ok(Some(replay));
        }
        if !Self::expected_ok(expected, &st) {
            return Err(Self::wrong(stream, expected, &st));
        }
        let stream: Arc<str> = Arc::from(stream);
        let first = st.last_revision.map_or(0, |r| r + 1);
        let mut revision = first;
        let recreates = Self::recreates(&st);
        let mut position = 0;
        for (i, e) in events.iter().enumerate() {
            position = self.base_pos() + self.buf.len() as u64;
            encode_event(
                &mut self.buf,
                &EventRecord {
                    commit: i + 1 == events.len() && !recreates,
                    content_type: e.content_type,
                    stream: &stream,
                    event_type: &e.event_type,
                    revision,
                    timestamp_ns: self.timestamp,
                    event_id: ids[i],
                    data: &e.data,
                    metadata: &e.metadata,
                },
            );
            self.batch_ids.insert(IdKey::hashed(hash, ids[i]));
            let event_type = self.derived_type(&stream, &e.event_type);
            self.planned.push(Planned {
                stream: stream.clone(),
                revision,
                position,
                key: IdKey::hashed(hash, ids[i]),
                effect: None,
                event_type,
            });
            revision += 1;
        }
        let last = revision - 1;
        let mut st = st;
        if recreates {
            st.metadata = Some(self.encode_recreate(&stream, first, &st, true));
        }
        self.pending.insert(
            stream,
            Pending {
                last_revision: Some(last),
                ..st
            },
        );
        Ok(Some(AppendResult {
            revision: last,
            position,
            idempotent_replay: false,
        }))
    }

    /// The type to list an event of `stream` under in the derived streams, when they are kept.
    fn derived_type(&mut self, stream: &str, event_type: &str) -> Option<Arc<str>> {
        if self.shared.config.derived.is_none()
            || !crate::derived::listed_by_type(stream, event_type)
        {
            return None;
        }
        match &self.last_type {
            Some(t) if **t == *event_type => Some(t.clone()),
            _ => {
                let t: Arc<str> = Arc::from(event_type);
                self.last_type = Some(t.clone());
                Some(t)
            }
        }
    }

    /// Whether an append to a stream in state `st` brings it back from a soft delete.
    fn recreates(st: &Pending) -> bool {
        st.metadata.as_ref().and_then(|m| m.truncate_before) == Some(SOFT_DELETED_TB)
    }

    /// Encodes the `$metadata` record that brings a soft-deleted stream back from revision
    /// `first` (its other metadata kept), as part of the append's atomic unit; returns the new
    /// metadata. The caller updates the stream's own pending state.
    fn encode_recreate(
        &mut self,
        stream: &str,
        first: u64,
        st: &Pending,
        commit: bool,
    ) -> Arc<StreamMetadata> {
        let mut m = st.metadata.as_deref().cloned().unwrap_or_default();
        m.truncate_before = Some(first);
        let m = Arc::new(m);
        let meta_name: Arc<str> = Arc::from(metadata_stream(stream));
        let meta_st = self.state(&meta_name);
        let revision = meta_st.last_revision.map_or(0, |r| r + 1);
        let position = self.base_pos() + self.buf.len() as u64;
        let event_id = Uuid::new_v4();
        encode_event(
            &mut self.buf,
            &EventRecord {
                commit,
                content_type: ContentType::Json,
                stream: &meta_name,
                event_type: METADATA_EVENT_TYPE,
                revision,
                timestamp_ns: self.timestamp,
                event_id,
                data: &m.to_json(),
                metadata: &[],
            },
        );
        self.planned.push(Planned {
            stream: meta_name.clone(),
            revision,
            position,
            key: IdKey::new(&meta_name, event_id),
            effect: Some(Effect::Metadata(m.clone())),
            event_type: None,
        });
        self.pending.insert(
            meta_name,
            Pending {
                last_revision: Some(revision),
                ..meta_st
            },
        );
        m
    }

    /// Plans a write to `$$<stream>`: delete, tombstone or metadata. `check_target`: the expected
    /// revision applies to the stream itself (delete, tombstone) rather than to `$$<stream>`.
    fn plan_system(
        &mut self,
        stream: &str,
        expected: ExpectedRevision,
        check_target: bool,
        make: impl FnOnce(&Pending) -> (&'static str, Option<StreamMetadata>),
    ) -> Result<AppendResult> {
        let target = self.state(stream);
        if target.tombstoned && check_target {
            return Err(Error::StreamDeleted {
                stream: stream.into(),
            });
        }
        let meta_name = metadata_stream(stream);
        let meta_st = self.state(&meta_name);
        // A tombstoned stream's metadata may still be written (KurrentDB allows it; the stream
        // stays deleted). Its tombstone record in `$$<stream>` does not count as a metadata
        // revision: expected and reported revisions are one lower after it.
        let hidden = u64::from(target.tombstoned);
        let shown = Pending {
            last_revision: meta_st.last_revision.and_then(|r| r.checked_sub(hidden)),
            ..meta_st.clone()
        };
        let (checked, checked_name) = if check_target {
            (&target, stream)
        } else {
            (&shown, meta_name.as_str())
        };
        if !Self::expected_ok(expected, checked) {
            return Err(Self::wrong(checked_name, expected, checked));
        }
        let (event_type, metadata) = make(&target);
        let data = metadata
            .as_ref()
            .map_or_else(|| b"{}".to_vec(), StreamMetadata::to_json);
        let metadata = metadata.map(Arc::new);
        let revision = meta_st.last_revision.map_or(0, |r| r + 1);
        let position = self.base_pos() + self.buf.len() as u64;
        let event_id = Uuid::new_v4();
        let meta_name: Arc<str> = Arc::from(meta_name);
        encode_event(
            &mut self.buf,
            &EventRecord {
                commit: true,
                content_type: ContentType::Json,
                stream: &meta_name,
                event_type,
                revision,
                timestamp_ns: self.timestamp,
                event_id,
                data: &data,
                metadata: &[],
            },
        );
        let effect = match &metadata {
            Some(m) => Effect::Metadata(m.clone()),
            None => Effect::Tombstone,
        };
        self.planned.push(Planned {
            stream: meta_name.clone(),
            revision,
            position,
            key: IdKey::new(&meta_name, event_id),
            effect: Some(effect),
            event_type: None,
        });
        self.pending.insert(
            meta_name,
            Pending {
                last_revision: Some(revision),
                ..meta_st
            },
        );
        let mut t = target;
        match metadata {
            Some(m) => t.metadata = Some(m),
            None => t.tombstoned = true,
        }
        self.pending.insert(Arc::from(stream), t);
        Ok(AppendResult {
            revision: revision - hidden,
            position,
            idempotent_replay: false,
        })
    }
}
