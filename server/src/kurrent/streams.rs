//! `event_store.client.streams.Streams`: Read (reads and catch-up subscriptions), Append,
//! BatchAppend, Delete, Tombstone. Reads and subscriptions run through Strata's own services
//! and are translated message by message; writes go to the engine.

use std::sync::Arc;

use prost::Message;
use strata_engine::{Engine, ExpectedRevision};
use strata_kurrentdb_proto::event_store::client::streams as ks;
use strata_proto::v1::{
    self, read_request::From as ReadFrom, streams_server::Streams as _,
    subscribe_request::From as SubFrom, subscribe_response::Message as SubMsg,
    subscriptions_server::Subscriptions as _,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::read_stream::{Item, ReadStream};
use super::status::{access_denied, delete_wrong_version, from_strata, stream_deleted};
use super::{from_commit, stream_id, stream_name, to_commit};
use crate::auth;
use crate::status::from_engine;
use crate::streams::StreamsService;
use crate::subscriptions::SubscriptionsService;
use strata_auth::Operation;

type ReadTx = mpsc::Sender<Item>;

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

fn recorded(p: super::EventParts) -> ks::read_resp::read_event::RecordedEvent {
    p.into()
}

/// An event as KurrentDB sends it; an entry of a derived stream as a link (with its event
/// beside it when the client resolves links, unless that event is gone).
fn read_event(e: v1::RecordedEvent, structured: bool, resolve_links: bool) -> ks::ReadResp {
    let position = to_commit(e.position);
    let (event, link) = super::links::event_and_link(e, structured, resolve_links);
    let (event, link) = (event.map(recorded), link.map(recorded));
    ks::ReadResp {
        content: Some(ks::read_resp::Content::Event(ks::read_resp::ReadEvent {
            event,
            link,
            position: Some(ks::read_resp::read_event::Position::CommitPosition(
                position,
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

/// Read options decoded: what to read and how to answer.
struct ReadPlan {
    /// The caller, passed on to the Strata handlers that do the reading.
    who: strata_auth::Access,
    stream: String,
    structured: bool,
    resolve_links: bool,
    direction: v1::Direction,
    filter: Option<v1::Filter>,
}

impl KurrentStreams {
    async fn read_count(
        &self,
        plan: ReadPlan,
        from: Option<ReadFrom>,
        count: u64,
    ) -> Result<ReadStream, Status> {
        // A page of converted events at a time: one more page may wait while the transport
        // sends the current one.
        let (tx, rx) = mpsc::channel::<Vec<Item>>(1);
        if count == 0 {
            return Ok(ReadStream::pages(rx));
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
        let mut request = Request::new(request);
        request.extensions_mut().insert(plan.who.clone());
        match self.reads.read(request).await {
            Err(s) if is_not_found(&s) => {
                let _ = tx.send(vec![Ok(not_found(&stream))]).await;
            }
            Err(s) => return Err(from_strata(s)),
            Ok(r) => {
                let mut pages = r.into_inner();
                tokio::spawn(async move {
                    use futures::StreamExt;
                    while let Some(page) = pages.next().await {
                        let sent = match page {
                            Ok(p) => {
                                let page: Vec<Item> = p
                                    .events
                                    .into_iter()
                                    .map(|e| Ok(read_event(e, plan.structured, plan.resolve_links)))
                                    .collect();
                                tx.send(page).await.is_ok()
                            }
                            Err(s) if is_not_found(&s) => {
                                let _ = tx.send(vec![Ok(not_found(&stream))]).await;
                                false
                            }
                            Err(s) => {
                                let _ = tx.send(vec![Err(from_strata(s))]).await;
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
        Ok(ReadStream::pages(rx))
    }

    async fn subscribe(&self, plan: ReadPlan, from: Option<SubFrom>) -> Result<ReadStream, Status> {
        let filtered = plan.filter.is_some();
        let request = v1::SubscribeRequest {
            stream: plan.stream.clone(),
            from,
            filter: plan.filter,
        };
        let mut request = Request::new(request);
        request.extensions_mut().insert(plan.who.clone());
        let mut inner = self
            .subscriptions
            .subscribe(request)
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
                            if tx
                                .send(Ok(read_event(e, plan.structured, plan.resolve_links)))
                                .await
                                .is_err()
                            {
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
        Ok(ReadStream::items(rx))
    }
}

#[tonic::async_trait]
impl ks::streams_server::Streams for KurrentStreams {
    type ReadStream = ReadStream;

    async fn read(
        &self,
        request: Request<ks::ReadReq>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        use ks::read_req::options::{
            all_options::AllOption, stream_options::RevisionOption, uuid_option::Content,
            CountOption, FilterOption, StreamOption,
        };
        let who = auth::access(&request);
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("ReadReq.options is required"))?;
        let structured = matches!(
            o.uuid_option.as_ref().and_then(|u| u.content.as_ref()),
            Some(Content::Structured(_))
        );
        use ks::read_req::options::ReadDirection;
        let direction = match ReadDirection::try_from(o.read_direction) {
            Ok(ReadDirection::Forwards) => v1::Direction::Forwards,
            Ok(ReadDirection::Backwards) => v1::Direction::Backwards,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "read_direction {} is not a read direction (0: forwards, 1: backwards)",
                    o.read_direction
                )))
            }
        };
        let backwards = direction == v1::Direction::Backwards;
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
        // KurrentDB answers a read of a tombstoned stream's metadata stream (which is how
        // clients get its metadata) as a read of the stream itself: deleted.
        if let Some(target) = stream.strip_prefix("$$") {
            if !subscription
                && self
                    .engine
                    .stream_info(target)
                    .is_some_and(|i| i.tombstoned)
            {
                return Err(super::status::stream_deleted(target));
            }
        }
        // Checked here too so that a refusal is the call's status, in KurrentDB's form.
        if !auth::may(&who, Operation::Read, &stream) {
            return Err(access_denied());
        }
        // Derived streams on a server that does not keep them: not found, as KurrentDB answers
        // when its system projections do not run.
        if strata_engine::derived::is_derived(&stream) && self.engine.config().derived.is_none() {
            let (tx, rx) = mpsc::channel(1);
            let reply = if subscription {
                Err(crate::status::derived_streams_off(
                    tonic::Code::NotFound,
                    &stream,
                ))
            } else {
                Ok(not_found(&stream))
            };
            let _ = tx.send(reply).await;
            return Ok(Response::new(ReadStream::items(rx)));
        }
        let plan = ReadPlan {
            who,
            stream,
            structured,
            resolve_links: o.resolve_links,
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
            ReadStream::items(rx)
        } else {
            self.read_count(plan, read_from, count).await?
        };
        Ok(Response::new(out))
    }

    async fn append(
        &self,
        request: Request<Streaming<ks::AppendReq>>,
    ) -> Result<Response<ks::AppendResp>, Status> {
        let who = auth::access(&request);
        super::append::append(&self.engine, &who, request.into_inner()).await
    }

    async fn delete(
        &self,
        request: Request<ks::DeleteReq>,
    ) -> Result<Response<ks::DeleteResp>, Status> {
        let who = auth::access(&request);
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("DeleteReq.options is required"))?;
        let stream = stream_name(o.stream_identifier.as_ref())?;
        if !auth::may(&who, Operation::Delete, &stream) {
            return Err(access_denied());
        }
        let expected = expected_of!(
            o.expected_stream_revision,
            ks::delete_req::options::ExpectedStreamRevision,
            Revision
        );
        // KurrentDB's rules: deleting a stream that was never written is a wrong expected
        // version (actual -1) whatever was expected, `no_stream` included (the clients report
        // it as not found), and expecting an existing stream that is soft-deleted says so.
        let info = self.engine.stream_info(&stream);
        let last = info.as_ref().and_then(|i| i.last_revision);
        if info.as_ref().is_some_and(|i| i.tombstoned) {
            return Err(stream_deleted(&stream));
        }
        if last.is_none() {
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
        let who = auth::access(&request);
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("TombstoneReq.options is required"))?;
        let stream = stream_name(o.stream_identifier.as_ref())?;
        if !auth::may(&who, Operation::Delete, &stream) {
            return Err(access_denied());
        }
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
        let who = auth::access(&request);
        Ok(Response::new(super::append::batch_append(
            self.engine.clone(),
            who,
            request.into_inner(),
        )))
    }
}
