//! `event_store.client.streams.Streams`: Read (reads and catch-up subscriptions), Append,
//! BatchAppend, Delete, Tombstone. Reads and subscriptions run through Strata's own services
//! and are translated message by message; writes go to the engine.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use strata_engine::{CurrentRevision, Engine, Error, EventData, ExpectedRevision, StreamMetadata};
use strata_kurrentdb_proto::event_store::client::{self as kc, streams as ks};
use strata_kurrentdb_proto::google::rpc as grpc_rpc;
use strata_proto::v1::{
    self, read_request::From as ReadFrom, streams_server::Streams as _,
    subscribe_request::From as SubFrom, subscribe_response::Message as SubMsg,
    subscriptions_server::Subscriptions as _,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::status::{delete_wrong_version, from_strata, stream_deleted};
use super::{event_parts, from_commit, proposed_event, stream_id, stream_name, to_commit};
use crate::status::from_engine;
use crate::streams::StreamsService;
use crate::subscriptions::SubscriptionsService;

type ReadTx = mpsc::Sender<Result<ks::ReadResp, Status>>;

pub struct KurrentStreams {
    engine: Arc<Engine>,
    reads: StreamsService,
    subscriptions: SubscriptionsService,
}

impl KurrentStreams {
    pub fn new(engine: Arc<Engine>, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        KurrentStreams {
            reads: StreamsService::new(engine.clone(), shutdown.clone()),
            subscriptions: SubscriptionsService::new(engine.clone(), shutdown),
            engine,
        }
    }
}

fn read_event(e: v1::RecordedEvent, structured: bool) -> ks::ReadResp {
    let p = event_parts(e, structured);
    ks::ReadResp {
        content: Some(ks::read_resp::Content::Event(ks::read_resp::ReadEvent {
            event: Some(ks::read_resp::read_event::RecordedEvent {
                id: Some(p.id),
                stream_identifier: Some(p.stream_identifier),
                stream_revision: p.stream_revision,
                prepare_position: p.position,
                commit_position: p.position,
                metadata: p.metadata,
                custom_metadata: p.custom_metadata,
                data: p.data,
            }),
            link: None,
            position: Some(ks::read_resp::read_event::Position::CommitPosition(
                p.position,
            )),
        })),
    }
}

fn not_found(stream: &str) -> ks::ReadResp {
    ks::ReadResp {
        content: Some(ks::read_resp::Content::StreamNotFound(
            ks::read_resp::StreamNotFound {
                stream_identifier: Some(stream_id(stream)),
            },
        )),
    }
}

fn is_not_found(s: &Status) -> bool {
    matches!(
        v1::ErrorDetail::decode(s.details())
            .ok()
            .and_then(|d| d.kind),
        Some(v1::error_detail::Kind::StreamNotFound(_))
    )
}

fn now() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn filter(f: ks::read_req::options::FilterOptions) -> Option<v1::Filter> {
    use ks::read_req::options::filter_options::{Filter, Window};
    let (on, e) = match f.filter? {
        Filter::StreamIdentifier(e) => (v1::FilterOn::StreamName, e),
        Filter::EventType(e) => (v1::FilterOn::EventType, e),
    };
    if e.prefix.is_empty() && e.regex.is_empty() {
        return None;
    }
    let window = match f.window {
        Some(Window::Max(m)) if m > 0 => m,
        _ => 32,
    };
    Some(v1::Filter {
        on: on as i32,
        prefixes: e.prefix,
        regex: if e.regex.is_empty() {
            String::new()
        } else {
            e.regex
        },
        checkpoint_interval: window.saturating_mul(f.checkpoint_interval_multiplier.max(1)),
    })
}

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
        let r = write_events(engine, stream, expected, events).await?;
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
    let last = info.as_ref().and_then(|i| i.last_revision);
    let visible = info
        .as_ref()
        .is_some_and(|i| i.last_revision.is_some() && !i.soft_deleted);
    let ok = match expected {
        ExpectedRevision::Any => true,
        ExpectedRevision::NoStream => !visible,
        ExpectedRevision::StreamExists => visible,
        ExpectedRevision::Exact(n) => last == Some(n),
    };
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
    if stream.starts_with('$') {
        engine.append_system(stream, expected, events).await
    } else {
        engine.append(stream, expected, events).await
    }
}

fn append_wrong_version(
    expected: ExpectedRevision,
    actual: CurrentRevision,
) -> ks::append_resp::WrongExpectedVersion {
    use ks::append_resp::wrong_expected_version::{
        CurrentRevisionOption, CurrentRevisionOption2060, ExpectedRevisionOption,
        ExpectedRevisionOption2060,
    };
    let empty = kc::Empty {};
    let (current, current_old) = match actual {
        CurrentRevision::NoStream => (
            CurrentRevisionOption::CurrentNoStream(empty),
            CurrentRevisionOption2060::NoStream2060(empty),
        ),
        CurrentRevision::Revision(r) => (
            CurrentRevisionOption::CurrentRevision(r),
            CurrentRevisionOption2060::CurrentRevision2060(r),
        ),
    };
    let (exp, exp_old) = match expected {
        ExpectedRevision::Any => (
            ExpectedRevisionOption::ExpectedAny(empty),
            Some(ExpectedRevisionOption2060::Any2060(empty)),
        ),
        ExpectedRevision::StreamExists => (
            ExpectedRevisionOption::ExpectedStreamExists(empty),
            Some(ExpectedRevisionOption2060::StreamExists2060(empty)),
        ),
        ExpectedRevision::NoStream => (ExpectedRevisionOption::ExpectedNoStream(empty), None),
        ExpectedRevision::Exact(n) => (
            ExpectedRevisionOption::ExpectedRevision(n),
            Some(ExpectedRevisionOption2060::ExpectedRevision2060(n)),
        ),
    };
    ks::append_resp::WrongExpectedVersion {
        current_revision_option_20_6_0: Some(current_old),
        expected_revision_option_20_6_0: exp_old,
        current_revision_option: Some(current),
        expected_revision_option: Some(exp),
    }
}

/// The `google.rpc.Status` of a failed batch append, with the detail KurrentDB clients unpack.
fn batch_error(e: Error) -> grpc_rpc::Status {
    fn any<M: Message>(name: &str, m: &M) -> prost_types::Any {
        prost_types::Any {
            type_url: format!("type.googleapis.com/event_store.client.{name}"),
            value: m.encode_to_vec(),
        }
    }
    let message = e.to_string();
    let (code, details) = match &e {
        Error::WrongExpectedRevision {
            expected, actual, ..
        } => {
            use kc::wrong_expected_version::{
                CurrentStreamRevisionOption as C, ExpectedStreamPositionOption as X,
            };
            let w = kc::WrongExpectedVersion {
                current_stream_revision_option: Some(match actual {
                    CurrentRevision::NoStream => C::CurrentNoStream(()),
                    CurrentRevision::Revision(r) => C::CurrentStreamRevision(*r),
                }),
                expected_stream_position_option: Some(match expected {
                    ExpectedRevision::Any => X::ExpectedAny(()),
                    ExpectedRevision::NoStream => X::ExpectedNoStream(()),
                    ExpectedRevision::StreamExists => X::ExpectedStreamExists(()),
                    ExpectedRevision::Exact(n) => X::ExpectedStreamPosition(*n),
                }),
            };
            (
                grpc_rpc::Code::FailedPrecondition,
                Some(any("WrongExpectedVersion", &w)),
            )
        }
        Error::StreamDeleted { stream } => (
            grpc_rpc::Code::FailedPrecondition,
            Some(any(
                "StreamDeleted",
                &kc::StreamDeleted {
                    stream_identifier: Some(stream_id(stream)),
                },
            )),
        ),
        Error::AppendTooLarge { max, .. } => (
            grpc_rpc::Code::InvalidArgument,
            Some(any(
                "MaximumAppendSizeExceeded",
                &kc::MaximumAppendSizeExceeded {
                    max_append_size: *max as u32,
                },
            )),
        ),
        Error::InvalidArgument { .. }
        | Error::ReservedStream { .. }
        | Error::IdempotencyConflict { .. } => (
            grpc_rpc::Code::InvalidArgument,
            Some(any(
                "BadRequest",
                &kc::BadRequest {
                    message: message.clone(),
                },
            )),
        ),
        Error::ReadOnly { .. } | Error::Closed => (grpc_rpc::Code::Unavailable, None),
        _ => (
            grpc_rpc::Code::Internal,
            Some(any("Unknown", &kc::Unknown {})),
        ),
    };
    grpc_rpc::Status {
        code: code as i32,
        message,
        details,
    }
}

struct Pending {
    stream: String,
    expected: Option<ks::batch_append_req::options::ExpectedStreamPosition>,
    events: Vec<EventData>,
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

/// Read options decoded: what to read and how to answer.
struct ReadPlan {
    stream: String,
    structured: bool,
    direction: v1::Direction,
    filter: Option<v1::Filter>,
}

impl KurrentStreams {
    async fn read_count(
        &self,
        plan: ReadPlan,
        from: Option<ReadFrom>,
        count: u64,
    ) -> Result<ReceiverStream<Result<ks::ReadResp, Status>>, Status> {
        let (tx, rx) = mpsc::channel(4);
        if count == 0 {
            return Ok(ReceiverStream::new(rx));
        }
        let request = v1::ReadRequest {
            stream: plan.stream.clone(),
            direction: plan.direction as i32,
            from,
            max_count: count,
            filter: plan.filter,
            batch_size: 0,
        };
        let stream = plan.stream.clone();
        match self.reads.read(Request::new(request)).await {
            Err(s) if is_not_found(&s) => {
                let _ = tx.send(Ok(not_found(&stream))).await;
            }
            Err(s) => return Err(from_strata(s)),
            Ok(r) => {
                let mut pages = r.into_inner();
                tokio::spawn(async move {
                    use futures::StreamExt;
                    while let Some(page) = pages.next().await {
                        let sent = match page {
                            Ok(p) => {
                                let mut ok = true;
                                for e in p.events {
                                    if tx.send(Ok(read_event(e, plan.structured))).await.is_err() {
                                        ok = false;
                                        break;
                                    }
                                }
                                ok
                            }
                            Err(s) if is_not_found(&s) => {
                                let _ = tx.send(Ok(not_found(&stream))).await;
                                false
                            }
                            Err(s) => {
                                let _ = tx.send(Err(from_strata(s))).await;
                                false
                            }
                        };
                        if !sent {
                            return;
                        }
                    }
                });
            }
        }
        Ok(ReceiverStream::new(rx))
    }

    async fn subscribe(
        &self,
        plan: ReadPlan,
        from: Option<SubFrom>,
    ) -> Result<ReceiverStream<Result<ks::ReadResp, Status>>, Status> {
        let filtered = plan.filter.is_some();
        let request = v1::SubscribeRequest {
            stream: plan.stream.clone(),
            from,
            filter: plan.filter,
        };
        let mut inner = self
            .subscriptions
            .subscribe(Request::new(request))
            .await
            .map_err(from_strata)?
            .into_inner();
        let (tx, rx): (ReadTx, _) = mpsc::channel(64);
        let engine = self.engine.clone();
        let is_all = plan.stream == "$all";
        tokio::spawn(async move {
            use futures::StreamExt;
            use ks::read_resp::Content;
            while let Some(m) = inner.next().await {
                let out = match m {
                    Err(s) => {
                        let _ = tx.send(Err(from_strata(s))).await;
                        return;
                    }
                    Ok(v1::SubscribeResponse { message: None }) => continue,
                    Ok(v1::SubscribeResponse { message: Some(m) }) => match m {
                        SubMsg::Confirmation(c) => {
                            Content::Confirmation(ks::read_resp::SubscriptionConfirmation {
                                subscription_id: c.subscription_id,
                            })
                        }
                        SubMsg::Event(e) => {
                            if tx.send(Ok(read_event(e, plan.structured))).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        SubMsg::Checkpoint(c) => {
                            let commit = super::commit_before(&engine, c.position);
                            Content::Checkpoint(ks::read_resp::Checkpoint {
                                commit_position: commit,
                                prepare_position: commit,
                                timestamp: Some(now()),
                            })
                        }
                        SubMsg::CaughtUp(c) => {
                            if filtered {
                                // Like KurrentDB: a filtered $all subscription checkpoints
                                // where catch-up ends, so a rare filter can resume from there.
                                let commit = super::commit_before(&engine, c.position);
                                let cp = Content::Checkpoint(ks::read_resp::Checkpoint {
                                    commit_position: commit,
                                    prepare_position: commit,
                                    timestamp: Some(now()),
                                });
                                if tx
                                    .send(Ok(ks::ReadResp { content: Some(cp) }))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            let (stream_revision, position) = if is_all {
                                let commit = super::commit_before(&engine, c.position);
                                (
                                    None,
                                    Some(ks::read_resp::Position {
                                        commit_position: commit,
                                        prepare_position: commit,
                                    }),
                                )
                            } else {
                                (c.position.checked_sub(1).map(|r| r as i64), None)
                            };
                            Content::CaughtUp(ks::read_resp::CaughtUp {
                                timestamp: Some(now()),
                                stream_revision,
                                position,
                            })
                        }
                    },
                };
                if tx
                    .send(Ok(ks::ReadResp { content: Some(out) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl ks::streams_server::Streams for KurrentStreams {
    type ReadStream = ReceiverStream<Result<ks::ReadResp, Status>>;

    async fn read(
        &self,
        request: Request<ks::ReadReq>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        use ks::read_req::options::{
            all_options::AllOption, stream_options::RevisionOption, uuid_option::Content,
            CountOption, FilterOption, StreamOption,
        };
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("ReadReq.options is required"))?;
        let structured = matches!(
            o.uuid_option.as_ref().and_then(|u| u.content.as_ref()),
            Some(Content::Structured(_))
        );
        let backwards = o.read_direction == ks::read_req::options::ReadDirection::Backwards as i32;
        let direction = if backwards {
            v1::Direction::Backwards
        } else {
            v1::Direction::Forwards
        };
        let subscription = matches!(o.count_option, Some(CountOption::Subscription(_)));
        let count = match o.count_option {
            Some(CountOption::Count(n)) => n,
            _ => u64::MAX,
        };
        let (stream, read_from, sub_from, filter) = match o.stream_option {
            Some(StreamOption::Stream(s)) => {
                let name = stream_name(s.stream_identifier.as_ref())?;
                let (rf, sf) = match s.revision_option {
                    Some(RevisionOption::Revision(r)) => {
                        (Some(ReadFrom::Revision(r)), Some(SubFrom::AfterRevision(r)))
                    }
                    Some(RevisionOption::End(_)) => (
                        Some(ReadFrom::End(v1::Empty {})),
                        Some(SubFrom::End(v1::Empty {})),
                    ),
                    Some(RevisionOption::Start(_)) | None => (
                        Some(ReadFrom::Start(v1::Empty {})),
                        Some(SubFrom::Start(v1::Empty {})),
                    ),
                };
                (name, rf, sf, None)
            }
            Some(StreamOption::All(a)) => {
                let (rf, sf) = match a.all_option {
                    Some(AllOption::Position(p)) => match from_commit(p.commit_position) {
                        Some(pos) => (
                            Some(ReadFrom::Position(pos)),
                            Some(SubFrom::AfterPosition(pos)),
                        ),
                        None if backwards => (Some(ReadFrom::Start(v1::Empty {})), None),
                        None => (
                            Some(ReadFrom::Start(v1::Empty {})),
                            Some(SubFrom::Start(v1::Empty {})),
                        ),
                    },
                    Some(AllOption::End(_)) => (
                        Some(ReadFrom::End(v1::Empty {})),
                        Some(SubFrom::End(v1::Empty {})),
                    ),
                    Some(AllOption::Start(_)) | None => (
                        Some(ReadFrom::Start(v1::Empty {})),
                        Some(SubFrom::Start(v1::Empty {})),
                    ),
                };
                let f = match o.filter_option {
                    Some(FilterOption::Filter(f)) => filter(f),
                    _ => None,
                };
                ("$all".to_owned(), rf, sf, f)
            }
            None => {
                return Err(Status::invalid_argument(
                    "ReadReq.options needs a stream or all",
                ))
            }
        };
        let plan = ReadPlan {
            stream,
            structured,
            direction,
            filter,
        };
        let out = if subscription {
            let Some(from) = sub_from else {
                return Err(Status::invalid_argument(
                    "a subscription cannot start before position 0 backwards",
                ));
            };
            self.subscribe(plan, Some(from)).await?
        } else if backwards
            && read_from == Some(ReadFrom::Start(v1::Empty {}))
            && plan.stream == "$all"
        {
            // Backwards from before the first event: nothing.
            let (_tx, rx) = mpsc::channel(1);
            ReceiverStream::new(rx)
        } else {
            self.read_count(plan, read_from, count).await?
        };
        Ok(Response::new(out))
    }

    async fn append(
        &self,
        request: Request<Streaming<ks::AppendReq>>,
    ) -> Result<Response<ks::AppendResp>, Status> {
        use ks::append_req::Content;
        let mut input = request.into_inner();
        let options = match input.message().await? {
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
        let expected = expected_of!(
            options.expected_stream_revision,
            ks::append_req::options::ExpectedStreamRevision,
            Revision
        );
        let mut events = Vec::new();
        while let Some(m) = input.message().await? {
            match m.content {
                Some(Content::ProposedMessage(p)) => events.push(proposed_event(
                    p.id.as_ref(),
                    &p.metadata,
                    p.custom_metadata,
                    p.data,
                )?),
                _ => {
                    return Err(Status::invalid_argument(
                        "only proposed messages may follow the options",
                    ))
                }
            }
        }
        use ks::append_resp::{success, Result as R, Success};
        let result = match append_events(&self.engine, &stream, expected, events).await {
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

    async fn delete(
        &self,
        request: Request<ks::DeleteReq>,
    ) -> Result<Response<ks::DeleteResp>, Status> {
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("DeleteReq.options is required"))?;
        let stream = stream_name(o.stream_identifier.as_ref())?;
        let expected = expected_of!(
            o.expected_stream_revision,
            ks::delete_req::options::ExpectedStreamRevision,
            Revision
        );
        // KurrentDB's rules: deleting a stream that was never written is a wrong expected
        // version (actual -1), and expecting an existing stream that is soft-deleted says so.
        let info = self.engine.stream_info(&stream);
        let last = info.as_ref().and_then(|i| i.last_revision);
        if info.as_ref().is_some_and(|i| i.tombstoned) {
            return Err(stream_deleted(&stream));
        }
        if last.is_none() && expected != ExpectedRevision::NoStream {
            return Err(delete_wrong_version(&stream, expected, None));
        }
        if expected == ExpectedRevision::StreamExists
            && info.as_ref().is_some_and(|i| i.soft_deleted)
        {
            return Err(stream_deleted(&stream));
        }
        let r = self
            .engine
            .delete_stream(&stream, expected)
            .await
            .map_err(|e| from_strata(from_engine(e)))?;
        Ok(Response::new(ks::DeleteResp {
            position_option: Some(ks::delete_resp::PositionOption::Position(
                ks::delete_resp::Position {
                    commit_position: to_commit(r.position),
                    prepare_position: to_commit(r.position),
                },
            )),
        }))
    }

    async fn tombstone(
        &self,
        request: Request<ks::TombstoneReq>,
    ) -> Result<Response<ks::TombstoneResp>, Status> {
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("TombstoneReq.options is required"))?;
        let stream = stream_name(o.stream_identifier.as_ref())?;
        let expected = expected_of!(
            o.expected_stream_revision,
            ks::tombstone_req::options::ExpectedStreamRevision,
            Revision
        );
        let r = self
            .engine
            .tombstone_stream(&stream, expected)
            .await
            .map_err(|e| from_strata(from_engine(e)))?;
        Ok(Response::new(ks::TombstoneResp {
            position_option: Some(ks::tombstone_resp::PositionOption::Position(
                ks::tombstone_resp::Position {
                    commit_position: to_commit(r.position),
                    prepare_position: to_commit(r.position),
                },
            )),
        }))
    }

    type BatchAppendStream = ReceiverStream<Result<ks::BatchAppendResp, Status>>;

    async fn batch_append(
        &self,
        request: Request<Streaming<ks::BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        let mut input = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let mut pending: HashMap<String, Pending> = HashMap::new();
            let mut tasks = tokio::task::JoinSet::new();
            loop {
                let m = match input.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => break,
                };
                let key = match &m.correlation_id {
                    Some(id) => format!("{:?}", id.value),
                    None => String::new(),
                };
                let entry = match (pending.remove(&key), &m.options) {
                    (Some(p), _) => Some(p),
                    (None, Some(o)) => match stream_name(o.stream_identifier.as_ref()) {
                        Ok(stream) => Some(Pending {
                            stream,
                            expected: o.expected_stream_position,
                            events: Vec::new(),
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
                for msg in m.proposed_messages {
                    match proposed_event(
                        msg.id.as_ref(),
                        &msg.metadata,
                        msg.custom_metadata,
                        msg.data,
                    ) {
                        Ok(e) => p.events.push(e),
                        Err(s) => {
                            let _ = tx.send(Err(s)).await;
                            return;
                        }
                    }
                }
                if !m.is_final {
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
                    let result = match append_events(&engine, &p.stream, expected, p.events).await {
                        Ok(r) => R::Success(Success {
                            current_revision_option: Some(match r.revision {
                                Some(rev) => success::CurrentRevisionOption::CurrentRevision(rev),
                                None => success::CurrentRevisionOption::NoStream(()),
                            }),
                            position_option: Some(match r.position {
                                Some(p) => {
                                    success::PositionOption::Position(kc::AllStreamPosition {
                                        commit_position: to_commit(p),
                                        prepare_position: to_commit(p),
                                    })
                                }
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
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
