//! The `strata.v1.Streams` service.

mod multi;
mod visibility;

pub use visibility::{derived_served, hide_unreadable, readable_only};

use std::pin::Pin;
use std::sync::Arc;

use prost::Message;
use strata_engine::{AllFrom, AppendResult, Direction, Engine, EventFilter, StreamFrom};
use strata_proto::v1::{self, read_request::From as ReadFrom, streams_server::Streams};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::auth;
use crate::convert::{
    direction_from_proto, event_to_proto, events_from_proto, expected_from_proto,
    filter_from_proto, metadata_from_proto, metadata_to_proto,
};
use crate::status::{from_engine, invalid, shutting_down};
use strata_auth::Operation;

/// Appends of one session in flight at once; the server stops reading the session's requests
/// until results free a slot.
const SESSION_WINDOW: usize = 1024;
use crate::budget::WAIT as BUDGET_WAIT;
/// Events per `ReadResponse` unless the request says otherwise.
const DEFAULT_READ_BATCH: u32 = 500;
const MAX_READ_BATCH: u32 = 10_000;
/// Streams per `ListStreamsResponse`.
const LIST_BATCH: usize = 1000;

pub struct StreamsService {
    engine: Arc<Engine>,
    shutdown: watch::Receiver<bool>,
}

impl StreamsService {
    pub fn new(engine: Arc<Engine>, shutdown: watch::Receiver<bool>) -> Self {
        StreamsService { engine, shutdown }
    }
}

/// One unary append, answered once it is durable.
async fn append_one(engine: &Engine, r: v1::AppendRequest) -> Result<v1::AppendResponse, Status> {
    let budget = crate::budget::get();
    let _held = budget
        .reserve(prost::Message::encoded_len(&r), Some(BUDGET_WAIT))
        .await
        .ok_or_else(|| budget.exhausted("append"))?;
    let events = events_from_proto(r.events)?;
    engine
        .append(&r.stream, expected_from_proto(r.expected), events)
        .await
        .map(append_response)
        .map_err(from_engine)
}

fn append_response(r: AppendResult) -> v1::AppendResponse {
    v1::AppendResponse {
        revision: r.revision,
        position: r.position,
        idempotent_replay: r.idempotent_replay,
    }
}

/// A response of an append session, with the window permit (and memory-budget permit) its
/// request held.
type SessionItem = (
    Result<v1::AppendSessionResponse, Status>,
    Option<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>)>,
);

/// The responses of an append session, releasing each request's window permit as it is sent.
pub type SessionStream =
    Pin<Box<dyn Stream<Item = Result<v1::AppendSessionResponse, Status>> + Send>>;

/// An append's result as a session response; errors carry their code, message and detail.
fn session_response(
    correlation_id: u64,
    result: Result<v1::AppendResponse, Status>,
) -> v1::AppendSessionResponse {
    let result = match result {
        Ok(r) => v1::append_session_response::Result::Success(r),
        Err(status) => v1::append_session_response::Result::Error(v1::AppendError {
            code: status.code() as i32,
            message: status.message().to_owned(),
            detail: v1::ErrorDetail::decode(status.details()).ok(),
        }),
    };
    v1::AppendSessionResponse {
        correlation_id,
        result: Some(result),
    }
}

/// The answer to Delete and Tombstone.
fn deleted(
    res: strata_engine::Result<strata_engine::AppendResult>,
) -> Result<Response<v1::DeleteResponse>, Status> {
    let res = res.map_err(from_engine)?;
    Ok(Response::new(v1::DeleteResponse {
        position: res.position,
    }))
}

/// Where a read is, between pages.
#[derive(Clone)]
enum Cursor {
    Stream {
        name: String,
        from: StreamFrom,
        /// For a derived stream, a caller who is not an admin: entries of streams they may
        /// not read are shown unresolved.
        reader: Option<auth::Access>,
    },
    All {
        from: AllFrom,
        filter: Option<EventFilter>,
        /// A caller who may read `$all` but not every stream (not an admin): events of
        /// streams they may not read are left out.
        reader: Option<auth::Access>,
    },
}

/// Bytes of events in one read page (and so in one `ReadResponse`), at most: with names and
/// framing a page stays under the 4 MiB message limit of default gRPC clients unless a single
/// event is larger.
const READ_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// Bytes of events per `ReadResponse` (a single larger event goes alone).
const MESSAGE_BYTES: usize = 256 * 1024;

/// What a page may take of the memory budget before it is read: its byte limit, plus the
/// last event that crosses it (up to the largest append) and the encoding around the events.
const PAGE_RESERVE: usize = READ_PAGE_BYTES + 1024 * 1024;

struct Page {
    events: Vec<v1::RecordedEvent>,
    next: Option<Cursor>,
}

fn read_page(
    engine: &Engine,
    cursor: Cursor,
    direction: Direction,
    max: usize,
) -> Result<Page, strata_engine::Error> {
    match cursor {
        Cursor::Stream { name, from, reader } if strata_engine::derived::is_derived(&name) => {
            let mut slice = engine.read_derived(&name, from, direction, max, READ_PAGE_BYTES)?;
            if let Some(reader) = &reader {
                hide_unreadable(&mut slice.events, reader);
            }
            let events = slice
                .events
                .into_iter()
                .map(|d| crate::convert::derived_to_proto(&name, d))
                .collect();
            let next = slice.next_revision.map(|r| Cursor::Stream {
                name,
                from: StreamFrom::Revision(r),
                reader,
            });
            Ok(Page { events, next })
        }
        Cursor::Stream { name, from, reader } => {
            let slice = engine.read_stream_budget(&name, from, direction, max, READ_PAGE_BYTES)?;
            let next = slice.next_revision.map(|r| Cursor::Stream {
                name,
                from: StreamFrom::Revision(r),
                reader,
            });
            Ok(Page {
                events: slice.events.into_iter().map(event_to_proto).collect(),
                next,
            })
        }
        Cursor::All {
            from,
            filter,
            reader,
        } => {
            let mut slice = engine.read_all_budget(
                from,
                direction,
                max,
                filter.as_ref(),
                max.saturating_mul(32),
                READ_PAGE_BYTES,
            )?;
            if let Some(reader) = &reader {
                readable_only(&mut slice.events, reader);
            }
            let next = (!slice.is_end).then(|| Cursor::All {
                from: AllFrom::Position(slice.next_position),
                filter,
                reader,
            });
            Ok(Page {
                events: slice.events.into_iter().map(event_to_proto).collect(),
                next,
            })
        }
    }
}

async fn read_page_blocking(
    engine: &Arc<Engine>,
    cursor: Cursor,
    direction: Direction,
    max: usize,
) -> Result<Page, Status> {
    let engine = engine.clone();
    let page = tokio::task::spawn_blocking(move || read_page(&engine, cursor, direction, max))
        .await
        .map_err(|e| Status::internal(format!("read task failed: {e}")))?
        .map_err(from_engine)?;
    crate::metrics::get().read_events(page.events.len());
    Ok(page)
}

#[tonic::async_trait]
impl Streams for StreamsService {
    async fn append(
        &self,
        request: Request<v1::AppendRequest>,
    ) -> Result<Response<v1::AppendResponse>, Status> {
        auth::check(&request, Operation::Write, &request.get_ref().stream)?;
        append_one(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn append_multi(
        &self,
        request: Request<v1::AppendMultiRequest>,
    ) -> Result<Response<v1::AppendMultiResponse>, Status> {
        let who = auth::access(&request);
        multi::append_multi(&self.engine, &who, request.into_inner())
            .await
            .map(Response::new)
    }

    type AppendSessionStream = SessionStream;

    async fn append_session(
        &self,
        request: Request<Streaming<v1::AppendSessionRequest>>,
    ) -> Result<Response<Self::AppendSessionStream>, Status> {
        let who = auth::access(&request);
        let mut requests = request.into_inner();
        // Results go from the writer thread straight into this channel, each with the window
        // permit of its request. The permit is released when the response is taken for
        // sending, so requests read + responses not yet sent never exceed the window.
        let (tx, rx) = mpsc::unbounded_channel::<SessionItem>();
        let engine = self.engine.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let window = Arc::new(Semaphore::new(SESSION_WINDOW));
            loop {
                let next = async {
                    let permit = window.clone().acquire_owned().await.ok()?;
                    Some((permit, requests.message().await))
                };
                let (permit, request) = tokio::select! {
                    next = next => match next {
                        Some(n) => n,
                        None => return,
                    },
                    _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                        // Let the appends in flight finish and answer, then end the session.
                        let _ = window.acquire_many(SESSION_WINDOW as u32).await;
                        let _ = tx.send((Err(shutting_down()), None));
                        return;
                    }
                };
                let request = match request {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(status) => {
                        let status = crate::status::unreadable_request(status);
                        if matches!(
                            status.code(),
                            tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
                        ) {
                            // Answer the appends already taken, then end the call saying why
                            // (the requests after the unreadable one were never read).
                            drop(permit);
                            let _ = window.acquire_many(SESSION_WINDOW as u32).await;
                            let _ = tx.send((Err(status), None));
                        } else {
                            tracing::debug!(%status, "append session ended by the client");
                        }
                        return;
                    }
                };
                let correlation_id = request.correlation_id;
                // The request's bytes count against the memory budget until it is answered;
                // while the budget is used up the session is not read further (back-pressure).
                let memory = crate::budget::get()
                    .reserve(prost::Message::encoded_len(&request), None)
                    .await;
                let permit = (permit, memory);
                let answer = move |tx: &mpsc::UnboundedSender<SessionItem>, result| {
                    let _ = tx.send((Ok(session_response(correlation_id, result)), Some(permit)));
                };
                let Some(append) = request.append else {
                    answer(
                        &tx,
                        Err(invalid("append", "each session request needs an append")),
                    );
                    continue;
                };
                if let Err(status) = auth::check_access(&who, Operation::Write, &append.stream) {
                    answer(&tx, Err(status));
                    continue;
                }
                let events = match events_from_proto(append.events) {
                    Ok(events) => events,
                    Err(status) => {
                        answer(&tx, Err(status));
                        continue;
                    }
                };
                let reply_to = tx.clone();
                // Returns once the writer has queued the append; the result arrives later, so
                // the appends of a session join the same group commits.
                engine
                    .append_with(
                        &append.stream,
                        expected_from_proto(append.expected),
                        events,
                        move |result| {
                            let result = result.map(append_response).map_err(from_engine);
                            answer(&reply_to, result);
                        },
                    )
                    .await;
            }
        });
        Ok(Response::new(Box::pin(
            UnboundedReceiverStream::new(rx).map(|(response, _permit)| response),
        )))
    }

    type ReadStream = Pin<Box<dyn Stream<Item = Result<v1::ReadResponse, Status>> + Send>>;

    async fn read(
        &self,
        request: Request<v1::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let who = auth::check(&request, Operation::Read, &request.get_ref().stream)?;
        let r = request.into_inner();
        let direction = direction_from_proto(r.direction)?;
        let batch = match r.batch_size {
            0 => DEFAULT_READ_BATCH,
            n => n.min(MAX_READ_BATCH),
        } as u64;
        let mut remaining = if r.max_count == 0 {
            u64::MAX
        } else {
            r.max_count
        };
        crate::metrics::get().read(r.stream == "$all");
        let cursor = if r.stream == "$all" {
            let from = match r.from {
                None if direction == Direction::Forwards => AllFrom::Start,
                None => AllFrom::End,
                Some(ReadFrom::Start(_)) => AllFrom::Start,
                Some(ReadFrom::End(_)) => AllFrom::End,
                Some(ReadFrom::Position(p)) => AllFrom::Position(p),
                Some(ReadFrom::Revision(_)) => {
                    return Err(invalid(
                        "from",
                        "$all reads start from a position, not a revision",
                    ))
                }
            };
            let (filter, _) = filter_from_proto(r.filter)?;
            Cursor::All {
                from,
                filter,
                reader: (!who.is_admin()).then_some(who),
            }
        } else {
            if r.filter.is_some() {
                return Err(invalid("filter", "filters apply to $all reads only"));
            }
            derived_served(&self.engine, &r.stream)?;
            let from = match r.from {
                None if direction == Direction::Forwards => StreamFrom::Start,
                None => StreamFrom::End,
                Some(ReadFrom::Start(_)) => StreamFrom::Start,
                Some(ReadFrom::End(_)) => StreamFrom::End,
                Some(ReadFrom::Revision(n)) => StreamFrom::Revision(n),
                Some(ReadFrom::Position(_)) => {
                    return Err(invalid(
                        "from",
                        "stream reads start from a revision, not a position",
                    ))
                }
            };
            Cursor::Stream {
                name: r.stream,
                from,
                reader: (!who.is_admin()).then_some(who),
            }
        };
        // The first page is read before answering, so that "not found" and "deleted" are the
        // status of the call rather than an error in the middle of the stream.
        // Each page's bytes are held from the memory budget from before it is read until the
        // transport takes it: room for a whole page first, the page's own size once known.
        let budget = crate::budget::get();
        let first_held = budget
            .reserve(PAGE_RESERVE, Some(BUDGET_WAIT))
            .await
            .ok_or_else(|| budget.exhausted("read"))?;
        let first = read_page_blocking(
            &self.engine,
            cursor,
            direction,
            batch.min(remaining) as usize,
        )
        .await?;
        // Pages wait for the client with their bytes held from the memory budget.
        let (tx, rx) = mpsc::channel::<(
            Result<v1::ReadResponse, Status>,
            Option<OwnedSemaphorePermit>,
        )>(8);
        let engine = self.engine.clone();
        let budget = crate::budget::get();
        tokio::spawn(async move {
            let (mut page, mut held) = (first, Some(first_held));
            loop {
                // A filtered read may scan far without sending: stop when the client has left.
                if tx.is_closed() {
                    return;
                }
                remaining = remaining.saturating_sub(page.events.len() as u64);
                // The page goes out in messages of about MESSAGE_BYTES (whole events), each
                // with its share of the page's budget, so that the transport, which holds a
                // message until the client takes it, holds little outside the budget.
                let mut events = page.events.into_iter().peekable();
                while events.peek().is_some() {
                    let mut message = Vec::new();
                    let mut size = 0;
                    while let Some(e) = events.next_if(|e| {
                        message.is_empty() || size + prost::Message::encoded_len(e) <= MESSAGE_BYTES
                    }) {
                        size += prost::Message::encoded_len(&e) + 4;
                        message.push(e);
                    }
                    let share = match (&mut held, events.peek()) {
                        (Some(h), Some(_)) => h.split(size.min(h.num_permits())),
                        _ => held.take(),
                    };
                    if tx
                        .send((Ok(v1::ReadResponse { events: message }), share))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                drop(held);
                let Some(next) = page.next.filter(|_| remaining > 0) else {
                    return;
                };
                // A client that leaves while this waits gives up its place at once.
                let reserved = tokio::select! {
                    r = budget.reserve(PAGE_RESERVE, Some(BUDGET_WAIT)) => r,
                    _ = tx.closed() => return,
                };
                let Some(next_held) = reserved else {
                    let _ = tx.send((Err(budget.exhausted("read")), None)).await;
                    return;
                };
                held = Some(next_held);
                page = match read_page_blocking(
                    &engine,
                    next,
                    direction,
                    batch.min(remaining) as usize,
                )
                .await
                {
                    Ok(p) => p,
                    Err(status) => {
                        let _ = tx.send((Err(status), None)).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|(response, _held)| response),
        )))
    }

    async fn delete(
        &self,
        request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        auth::check(&request, Operation::Delete, &request.get_ref().stream)?;
        let r = request.into_inner();
        let res = self
            .engine
            .delete_stream(&r.stream, expected_from_proto(r.expected))
            .await;
        deleted(res)
    }

    async fn tombstone(
        &self,
        request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        auth::check(&request, Operation::Delete, &request.get_ref().stream)?;
        let r = request.into_inner();
        let res = self
            .engine
            .tombstone_stream(&r.stream, expected_from_proto(r.expected))
            .await;
        deleted(res)
    }

    async fn get_stream_metadata(
        &self,
        request: Request<v1::GetStreamMetadataRequest>,
    ) -> Result<Response<v1::GetStreamMetadataResponse>, Status> {
        auth::check(&request, Operation::MetadataRead, &request.get_ref().stream)?;
        let r = request.into_inner();
        let (revision, metadata) = self
            .engine
            .get_stream_metadata(&r.stream)
            .map_err(from_engine)?;
        Ok(Response::new(v1::GetStreamMetadataResponse {
            metadata_revision: revision,
            metadata: Some(metadata_to_proto(metadata)),
        }))
    }

    async fn set_stream_metadata(
        &self,
        request: Request<v1::SetStreamMetadataRequest>,
    ) -> Result<Response<v1::SetStreamMetadataResponse>, Status> {
        auth::check(
            &request,
            Operation::MetadataWrite,
            &request.get_ref().stream,
        )?;
        let r = request.into_inner();
        let metadata = metadata_from_proto(r.metadata)?;
        strata_auth::acl::validate_metadata_acl(&metadata.custom)
            .map_err(|reason| invalid("metadata", reason))?;
        let res = self
            .engine
            .set_stream_metadata(&r.stream, expected_from_proto(r.expected), metadata)
            .await
            .map_err(from_engine)?;
        Ok(Response::new(v1::SetStreamMetadataResponse {
            metadata_revision: res.revision,
            position: res.position,
        }))
    }

    type ListStreamsStream = ReceiverStream<Result<v1::ListStreamsResponse, Status>>;

    async fn list_streams(
        &self,
        request: Request<v1::ListStreamsRequest>,
    ) -> Result<Response<Self::ListStreamsStream>, Status> {
        let who = auth::require_user(&request, "list streams")?;
        let r = request.into_inner();
        // A caller who is not an admin sees the streams they may read.
        let everything = who.is_admin();
        let mut streams: Vec<v1::StreamInfo> = self
            .engine
            .list_streams()
            .into_iter()
            .filter(|s| {
                s.name.starts_with(&r.prefix)
                    && (r.include_system || !s.name.starts_with('$'))
                    && (everything || auth::may(&who, Operation::Read, &s.name))
            })
            .map(|s| v1::StreamInfo {
                name: s.name,
                last_revision: s.last_revision,
                soft_deleted: s.soft_deleted,
                tombstoned: s.tombstoned,
            })
            .collect();
        streams.sort_by(|a, b| a.name.cmp(&b.name));
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut it = streams.into_iter().peekable();
            while it.peek().is_some() {
                let chunk: Vec<_> = it.by_ref().take(LIST_BATCH).collect();
                if tx
                    .send(Ok(v1::ListStreamsResponse { streams: chunk }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
