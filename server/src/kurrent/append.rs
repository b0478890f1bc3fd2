//! KurrentDB `Append` and `BatchAppend`, with every buffer bounded as the bytes arrive, and
//! the stream-name rules of KurrentDB's appends.

use std::collections::HashMap;
use std::sync::Arc;

use strata_engine::{CurrentRevision, Engine, Error, EventData, ExpectedRevision, StreamMetadata};
use strata_kurrentdb_proto::event_store::client::{self as kc, streams as ks};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status, Streaming};

use super::append_errors::{append_wrong_version, batch_denied, batch_error};
use super::status::{access_denied, from_strata};
use super::{proposed_event, stream_id, stream_name, to_commit};
use crate::auth;
use crate::budget::Held;
use crate::status::{from_engine, next_message};
use strata_auth::{Access, Operation};

/// Unfinished batches one `BatchAppend` call may hold, in multiples of the maximum append size.
pub const PENDING_APPENDS: usize = 4;
/// What an unfinished batch counts against that bound besides its events (its key, stream name
/// and bookkeeping), so that batches with no events cannot pile up for free.
const PENDING_OVERHEAD: usize = 1024;
/// Correlation IDs of one call whose batches were refused for their size and whose remaining
/// chunks are being skipped, at most.
const MAX_REFUSED: usize = 1024;

/// The encoded size the engine will count for `e` in `stream`.
fn event_size(stream: &str, e: &EventData) -> usize {
    strata_engine::format::event_size(stream, &e.event_type, e.data.len(), e.metadata.len())
}

/// What an Append or a BatchAppend batch reports: the stream's revision after it (`None`: the
/// stream has no events) and the position of its last event (`None`: no position to report).
pub struct Appended {
    pub revision: Option<u64>,
    pub position: Option<u64>,
}

/// Appends with KurrentDB's rules for stream names: `$$<stream>` with a `$metadata` event sets
/// the metadata of `<stream>`; other `$` streams are system streams. An append of no events
/// writes nothing and reports the stream's state if the expectation holds.
pub async fn append_events(
    engine: &Engine,
    stream: &str,
    expected: ExpectedRevision,
    events: Vec<EventData>,
) -> Result<Appended, Error> {
    if !events.is_empty() {
        let r = write_events(engine, stream, expected, events)
            .await
            .map_err(|e| conflict_as_kurrentdb(engine, stream, expected, e))?;
        return Ok(Appended {
            revision: Some(r.revision),
            position: Some(r.position),
        });
    }
    let info = engine.stream_info(stream);
    if info.as_ref().is_some_and(|i| i.tombstoned) {
        return Err(Error::StreamDeleted {
            stream: stream.into(),
        });
    }
    let (ok, last, visible) = expectation(info.as_ref(), expected);
    if !ok {
        return Err(Error::WrongExpectedRevision {
            stream: stream.into(),
            expected,
            actual: CurrentRevision::from_last(last),
        });
    }
    // The position of the stream's last event, when it can still be read.
    let position = if visible {
        match engine.read_stream(
            stream,
            strata_engine::StreamFrom::End,
            strata_engine::Direction::Backwards,
            1,
        ) {
            Ok(s) => s.events.first().map(|e| e.position),
            Err(Error::StreamNotFound { .. }) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    Ok(Appended {
        revision: last,
        position,
    })
}

/// Whether a stream in state `info` meets `expected`, with its last revision and whether it
/// has readable events.
fn expectation(
    info: Option<&strata_engine::StreamInfo>,
    expected: ExpectedRevision,
) -> (bool, Option<u64>, bool) {
    let last = info.and_then(|i| i.last_revision);
    let visible = info.is_some_and(|i| i.last_revision.is_some() && !i.soft_deleted);
    let ok = match expected {
        ExpectedRevision::Any => true,
        ExpectedRevision::NoStream => !visible,
        ExpectedRevision::StreamExists => visible,
        ExpectedRevision::Exact(n) => last == Some(n),
    };
    (ok, last, visible)
}

/// KurrentDB reports an append whose events partly overlap events already written as a wrong
/// expected version when the expectation does not hold (a retry that overlaps a later write),
/// and clients handle it as one; Strata's own API keeps the sharper idempotency conflict.
fn conflict_as_kurrentdb(
    engine: &Engine,
    stream: &str,
    expected: ExpectedRevision,
    e: Error,
) -> Error {
    if !matches!(e, Error::IdempotencyConflict { .. }) {
        return e;
    }
    let (holds, last, _) = expectation(engine.stream_info(stream).as_ref(), expected);
    if holds {
        return e;
    }
    Error::WrongExpectedRevision {
        stream: stream.into(),
        expected,
        actual: CurrentRevision::from_last(last),
    }
}

/// Writes a non-empty append.
async fn write_events(
    engine: &Engine,
    stream: &str,
    expected: ExpectedRevision,
    events: Vec<EventData>,
) -> Result<strata_engine::AppendResult, Error> {
    if stream == "$all" {
        return Err(Error::InvalidArgument {
            field: "stream",
            reason: "$all is the global log: it is read, never appended to".into(),
        });
    }
    if let Some(target) = stream.strip_prefix("$$") {
        if strata_persistent::is_group_stream(target) {
            return Err(Error::InvalidArgument {
                field: "stream",
                reason: format!(
                    "the metadata of {target} belongs to the consumer groups and cannot be changed by clients"
                ),
            });
        }
        if events.len() == 1 && events[0].event_type == "$metadata" {
            let meta =
                StreamMetadata::from_json(&events[0].data).map_err(|r| Error::InvalidArgument {
                    field: "metadata",
                    reason: r,
                })?;
            strata_auth::acl::validate_metadata_acl(&meta.custom).map_err(|reason| {
                Error::InvalidArgument {
                    field: "metadata",
                    reason,
                }
            })?;
            return if target.starts_with('$') {
                engine
                    .set_system_stream_metadata(target, expected, meta)
                    .await
            } else {
                engine.set_stream_metadata(target, expected, meta).await
            };
        }
        return Err(Error::InvalidArgument {
            field: "stream",
            reason: format!(
                "{stream} is a metadata stream: append exactly one $metadata event to it"
            ),
        });
    }
    if strata_persistent::is_group_stream(stream) {
        return Err(Error::InvalidArgument {
            field: "stream",
            reason: format!("{stream} belongs to the consumer groups and is written only by them"),
        });
    }
    if strata_auth::users::is_user_stream(stream) {
        return Err(Error::InvalidArgument {
            field: "stream",
            reason: format!(
                "{stream} holds user accounts, which change only through the Users API"
            ),
        });
    }
    if stream == strata_auth::acl::SETTINGS_STREAM {
        for e in &events {
            strata_auth::DefaultAcls::from_settings(&e.data).map_err(|reason| {
                Error::InvalidArgument {
                    field: "$settings",
                    reason,
                }
            })?;
        }
    }
    if stream.starts_with('$') {
        engine.append_system(stream, expected, events).await
    } else {
        engine.append(stream, expected, events).await
    }
}

struct Pending {
    stream: String,
    expected: Option<ks::batch_append_req::options::ExpectedStreamPosition>,
    events: Vec<EventData>,
    /// Encoded size of `events`, as the engine counts it against `--max-append-size`.
    size: usize,
    /// What the batch holds of the memory budget, until it is answered.
    held: Held,
}

fn echo_expected(
    e: Option<ks::batch_append_req::options::ExpectedStreamPosition>,
) -> Option<ks::batch_append_resp::ExpectedStreamPosition> {
    use ks::batch_append_req::options::ExpectedStreamPosition as E;
    use ks::batch_append_resp::ExpectedStreamPosition as R;
    e.map(|e| match e {
        E::StreamPosition(r) => R::StreamPosition(r),
        E::NoStream(x) => R::NoStream(x),
        E::Any(x) => R::Any(x),
        E::StreamExists(x) => R::StreamExists(x),
    })
}

/// `Append`: options, then the proposed events, then one answer. The size of the events is
/// checked as they arrive: past `--max-append-size` the call is refused at once, without
/// reading (or holding) the rest.
pub async fn append(
    engine: &Engine,
    who: &Access,
    mut input: Streaming<ks::AppendReq>,
) -> Result<Response<ks::AppendResp>, Status> {
    use ks::append_req::Content;
    let max = engine.config().max_append_size;
    let options = match next_message(&mut input).await? {
        Some(ks::AppendReq {
            content: Some(Content::Options(o)),
        }) => o,
        _ => {
            return Err(Status::invalid_argument(
                "the first AppendReq must carry options",
            ))
        }
    };
    let stream = stream_name(options.stream_identifier.as_ref())?;
    if !auth::may(who, Operation::Write, &stream) {
        return Err(access_denied());
    }
    let expected = expected_of!(
        options.expected_stream_revision,
        ks::append_req::options::ExpectedStreamRevision,
        Revision
    );
    let mut events = Vec::new();
    let mut size = 0usize;
    // The events count against the memory budget as they arrive, until answered.
    let mut held = Held::default();
    while let Some(m) = next_message(&mut input).await? {
        match m.content {
            Some(Content::ProposedMessage(p)) => {
                let e = proposed_event(p.id.as_ref(), &p.metadata, p.custom_metadata, p.data)?;
                let this = event_size(&stream, &e);
                held.add(this, "append").await?;
                size += this;
                if size > max {
                    return Err(from_strata(from_engine(Error::AppendTooLarge {
                        stream,
                        size,
                        max,
                    })));
                }
                events.push(e);
            }
            _ => {
                return Err(Status::invalid_argument(
                    "only proposed messages may follow the options",
                ))
            }
        }
    }
    use ks::append_resp::{success, Result as R, Success};
    let appended = append_events(engine, &stream, expected, events).await;
    drop(held);
    let result = match appended {
        Ok(r) => R::Success(Success {
            current_revision_option: Some(match r.revision {
                Some(rev) => success::CurrentRevisionOption::CurrentRevision(rev),
                None => success::CurrentRevisionOption::NoStream(Default::default()),
            }),
            position_option: Some(match r.position {
                Some(p) => success::PositionOption::Position(ks::append_resp::Position {
                    commit_position: to_commit(p),
                    prepare_position: to_commit(p),
                }),
                None => success::PositionOption::NoPosition(Default::default()),
            }),
        }),
        Err(Error::WrongExpectedRevision {
            expected, actual, ..
        }) => R::WrongExpectedVersion(append_wrong_version(expected, actual)),
        Err(e) => return Err(from_strata(from_engine(e))),
    };
    Ok(Response::new(ks::AppendResp {
        result: Some(result),
    }))
}

/// `BatchAppend`: a stream of batches, each keyed by its correlation ID, answered as each
/// final chunk is appended. Chunks are bounded as they arrive: one batch past
/// `--max-append-size` is answered with KurrentDB's size error and the rest of its chunks are
/// dropped unread; all unfinished batches of the call together may hold at most
/// [`PENDING_APPENDS`] × `--max-append-size`, or the call ends with RESOURCE_EXHAUSTED. A
/// request that does not decode ends the call with INVALID_ARGUMENT (after the batches already
/// sent are answered).
pub fn batch_append(
    engine: Arc<Engine>,
    who: Access,
    mut input: Streaming<ks::BatchAppendReq>,
) -> ReceiverStream<Result<ks::BatchAppendResp, Status>> {
    let (tx, rx) = mpsc::channel(64);
    let max = engine.config().max_append_size;
    tokio::spawn(async move {
        let mut pending: HashMap<String, Pending> = HashMap::new();
        // Correlation IDs whose batch was refused for its size: their chunks are skipped.
        let mut refused: std::collections::HashSet<String> = Default::default();
        let mut pending_bytes = 0usize;
        let mut tasks = tokio::task::JoinSet::new();
        let mut ended: Option<Status> = None;
        loop {
            let m = match next_message(&mut input).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(status) => {
                    ended = Some(status);
                    break;
                }
            };
            let key = match &m.correlation_id {
                Some(id) => format!("{:?}", id.value),
                None => String::new(),
            };
            if refused.contains(&key) {
                if m.is_final {
                    refused.remove(&key);
                }
                continue;
            }
            let entry = match (pending.remove(&key), &m.options) {
                (Some(p), _) => {
                    pending_bytes -= p.size + PENDING_OVERHEAD + key.len();
                    Some(p)
                }
                (None, Some(o)) => match stream_name(o.stream_identifier.as_ref()) {
                    Ok(stream) if !auth::may(&who, Operation::Write, &stream) => {
                        // Refused in-band, as KurrentDB does; the batch's other chunks are
                        // skipped.
                        let _ = tx
                            .send(Ok(ks::BatchAppendResp {
                                correlation_id: m.correlation_id.clone(),
                                result: Some(ks::batch_append_resp::Result::Error(batch_denied())),
                                stream_identifier: Some(stream_id(&stream)),
                                expected_stream_position: echo_expected(o.expected_stream_position),
                            }))
                            .await;
                        if !m.is_final {
                            if refused.len() >= MAX_REFUSED {
                                return;
                            }
                            refused.insert(key);
                        }
                        continue;
                    }
                    Ok(stream) => Some(Pending {
                        stream,
                        expected: o.expected_stream_position,
                        events: Vec::new(),
                        size: 0,
                        held: Held::default(),
                    }),
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                },
                (None, None) => {
                    let _ = tx
                        .send(Err(Status::invalid_argument(
                            "the first BatchAppendReq of a correlation ID must carry options",
                        )))
                        .await;
                    return;
                }
            };
            let mut p = entry.expect("set above");
            // Every batch, and then its events as they arrive, count against the memory
            // budget until answered; while it is used up the call is not read further.
            let arriving = PENDING_OVERHEAD
                + m.proposed_messages
                    .iter()
                    .map(prost::Message::encoded_len)
                    .sum::<usize>();
            if let Err(status) = p.held.add(arriving, "batch append").await {
                let _ = tx.send(Err(status)).await;
                return;
            }
            for msg in m.proposed_messages {
                match proposed_event(
                    msg.id.as_ref(),
                    &msg.metadata,
                    msg.custom_metadata,
                    msg.data,
                ) {
                    Ok(e) => {
                        p.size += event_size(&p.stream, &e);
                        p.events.push(e);
                    }
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                }
            }
            if p.size > max {
                let e = Error::AppendTooLarge {
                    stream: p.stream.clone(),
                    size: p.size,
                    max,
                };
                let _ = tx
                    .send(Ok(ks::BatchAppendResp {
                        correlation_id: m.correlation_id,
                        result: Some(ks::batch_append_resp::Result::Error(batch_error(e))),
                        stream_identifier: Some(stream_id(&p.stream)),
                        expected_stream_position: echo_expected(p.expected),
                    }))
                    .await;
                if !m.is_final {
                    if refused.len() >= MAX_REFUSED {
                        let _ = tx
                            .send(Err(Status::resource_exhausted(format!(
                                "{MAX_REFUSED} batches of this BatchAppend call were refused for their size and never finished; the call ends"
                            ))))
                            .await;
                        return;
                    }
                    refused.insert(key);
                }
                continue;
            }
            if !m.is_final {
                pending_bytes += p.size + PENDING_OVERHEAD + key.len();
                if pending_bytes > max.saturating_mul(PENDING_APPENDS) {
                    let _ = tx
                        .send(Err(Status::resource_exhausted(format!(
                            "unfinished batches of this BatchAppend call hold {pending_bytes} bytes, over the limit of {} ({PENDING_APPENDS} x the maximum append size); finish batches (is_final) before starting more",
                            max.saturating_mul(PENDING_APPENDS)
                        ))))
                        .await;
                    return;
                }
                pending.insert(key, p);
                continue;
            }
            let (engine, tx, correlation_id) = (engine.clone(), tx.clone(), m.correlation_id);
            tasks.spawn(async move {
                let expected = expected_of!(
                    p.expected,
                    ks::batch_append_req::options::ExpectedStreamPosition,
                    StreamPosition
                );
                use ks::batch_append_resp::{success, Result as R, Success};
                let appended = append_events(&engine, &p.stream, expected, p.events).await;
                drop(p.held);
                let result = match appended {
                    Ok(r) => R::Success(Success {
                        current_revision_option: Some(match r.revision {
                            Some(rev) => success::CurrentRevisionOption::CurrentRevision(rev),
                            None => success::CurrentRevisionOption::NoStream(()),
                        }),
                        position_option: Some(match r.position {
                            Some(p) => success::PositionOption::Position(kc::AllStreamPosition {
                                commit_position: to_commit(p),
                                prepare_position: to_commit(p),
                            }),
                            None => success::PositionOption::NoPosition(()),
                        }),
                    }),
                    Err(e) => R::Error(batch_error(e)),
                };
                let _ = tx
                    .send(Ok(ks::BatchAppendResp {
                        correlation_id,
                        result: Some(result),
                        stream_identifier: Some(stream_id(&p.stream)),
                        expected_stream_position: echo_expected(p.expected),
                    }))
                    .await;
            });
        }
        while tasks.join_next().await.is_some() {}
        if let Some(status) = ended {
            let _ = tx.send(Err(status)).await;
        }
    });
    ReceiverStream::new(rx)
}
