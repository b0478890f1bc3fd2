//! The `strata.v1.Subscriptions` service: catch-up subscriptions.
//!
//! A subscription is a task that reads the log from storage, page by page, from its own
//! position. When a read reaches the committed end it sends `caught_up` (once), then waits on
//! the engine's change feed for the end to move and reads again. History and live events come
//! from the same position-ordered reads, so nothing is skipped or repeated at the switch, and a
//! slow subscriber only makes its own task wait on its bounded channel: the server never
//! buffers more than a channel's worth of messages for it.

use std::sync::Arc;

use futures::StreamExt;
use strata_engine::{AllFrom, Direction, Engine, Error, EventFilter, StreamFrom};
use strata_proto::v1::{
    self, subscribe_request::From as SubFrom, subscribe_response::Message,
    subscriptions_server::Subscriptions,
};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::convert::{event_to_proto, filter_from_proto};
use crate::status::{from_engine, invalid, shutting_down};

/// Events read per storage read.
const PAGE: usize = 500;
/// Bytes of events read per storage read, at most (at least one event).
const PAGE_BYTES: usize = 1024 * 1024;
/// Messages buffered per subscriber before its reader waits.
const CHANNEL: usize = 256;
/// Bytes of messages buffered per subscriber before its reader waits (a single larger message
/// still goes, alone).
const BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Records examined between checkpoints of a filtered `$all` subscription, by default.
const DEFAULT_CHECKPOINT_INTERVAL: u32 = 1000;

pub struct SubscriptionsService {
    engine: Arc<Engine>,
    shutdown: watch::Receiver<bool>,
}

impl SubscriptionsService {
    pub fn new(engine: Arc<Engine>, shutdown: watch::Receiver<bool>) -> Self {
        SubscriptionsService { engine, shutdown }
    }
}

type Item = (
    Result<v1::SubscribeResponse, Status>,
    Option<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>)>,
);

/// The way to one subscriber: at most [`CHANNEL`] messages and [`BUFFER_BYTES`] bytes wait to
/// be sent; each message holds its bytes' permits until the transport takes it.
#[derive(Clone)]
struct Tx {
    inner: mpsc::Sender<Item>,
    bytes: Arc<Semaphore>,
}

impl Tx {
    fn channel() -> (Tx, mpsc::Receiver<Item>) {
        let (inner, rx) = mpsc::channel(CHANNEL);
        let bytes = Arc::new(Semaphore::new(BUFFER_BYTES));
        (Tx { inner, bytes }, rx)
    }

    async fn send(&self, r: Result<v1::SubscribeResponse, Status>) -> Result<(), ()> {
        let cost = r
            .as_ref()
            .map_or(0, prost::Message::encoded_len)
            .min(BUFFER_BYTES) as u32;
        let permit = match cost {
            0 => None,
            n => {
                let mine = self
                    .bytes
                    .clone()
                    .acquire_many_owned(n)
                    .await
                    .map_err(|_| ())?;
                // And from what all clients together may hold: a lagging subscriber waits
                // (it is behind anyway) rather than fail.
                let shared = crate::budget::get().reserve(n as usize, None).await;
                Some((mine, shared))
            }
        };
        self.inner.send((r, permit)).await.map_err(|_| ())
    }

    async fn closed(&self) {
        self.inner.closed().await
    }
}

fn msg(m: Message) -> Result<v1::SubscribeResponse, Status> {
    Ok(v1::SubscribeResponse { message: Some(m) })
}

enum Target {
    Stream {
        name: String,
        next: u64,
        /// For a derived stream, a caller who is not an admin: entries of streams they may
        /// not read are shown unresolved.
        reader: Option<crate::auth::Access>,
    },
    All {
        position: u64,
        filter: Option<EventFilter>,
        interval: u32,
        /// A caller who is not an admin: events of streams they may not read are left out.
        reader: Option<crate::auth::Access>,
    },
}

/// Why a subscription loop stopped.
enum Stop {
    ClientGone,
    Status(Status),
}

/// A live subscription reads inline when the log has moved by at most this many bytes since
/// its position: a short read of recent records from the page cache, cheaper than handing it
/// to the blocking pool (with many subscribers those hand-offs cost more than the reads).
const INLINE_READ_BYTES: u64 = 256 * 1024;

/// Runs a storage read: inline when `small`, otherwise on the blocking pool.
async fn read<T: Send + 'static>(
    small: bool,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Stop> {
    let result = if small {
        f()
    } else {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Stop::Status(Status::internal(format!("read task failed: {e}"))))?
    };
    result.map_err(|e| Stop::Status(from_engine(e)))
}

async fn send(tx: &Tx, m: Message) -> Result<(), Stop> {
    tx.send(msg(m)).await.map_err(|_| Stop::ClientGone)
}

/// A page of a stream subscription: each event with its revision in the stream subscribed to
/// (for a derived stream, where it is listed there).
struct StreamPage {
    events: Vec<(u64, v1::RecordedEvent)>,
    next_revision: Option<u64>,
    last_revision: u64,
}

fn stream_page(
    engine: &Engine,
    stream: &str,
    from: u64,
    reader: Option<&crate::auth::Access>,
) -> Result<StreamPage, Error> {
    let from = StreamFrom::Revision(from);
    if strata_engine::derived::is_derived(stream) {
        let mut slice = engine.read_derived(stream, from, Direction::Forwards, PAGE, PAGE_BYTES)?;
        if let Some(reader) = reader {
            crate::streams::hide_unreadable(&mut slice.events, reader);
        }
        return Ok(StreamPage {
            events: slice
                .events
                .into_iter()
                .map(|d| (d.revision, crate::convert::derived_to_proto(stream, d)))
                .collect(),
            next_revision: slice.next_revision,
            last_revision: slice.last_revision,
        });
    }
    let slice = engine.read_stream_budget(stream, from, Direction::Forwards, PAGE, PAGE_BYTES)?;
    Ok(StreamPage {
        events: slice
            .events
            .into_iter()
            .map(|e| (e.revision, event_to_proto(e)))
            .collect(),
        next_revision: slice.next_revision,
        last_revision: slice.last_revision,
    })
}

/// Runs one subscription until the client leaves, the server shuts down or an error ends it.
async fn run(
    engine: Arc<Engine>,
    mut target: Target,
    tx: Tx,
    mut shutdown: watch::Receiver<bool>,
    guard: crate::metrics::SubscriptionGuard,
) -> Result<(), Stop> {
    let mut end_rx = engine.watch_log_end();
    let mut caught_up = false;
    let mut since_checkpoint: u64 = 0;
    // Where the last read that reached the end stopped: a live read from there is small.
    let mut live_from: Option<u64> = None;
    loop {
        // The committed end before reading: if the read reaches it, everything up to it was seen.
        let end_before = *end_rx.borrow_and_update();
        let small = live_from.is_some_and(|p| end_before.saturating_sub(p) <= INLINE_READ_BYTES);
        let at_end = match &mut target {
            Target::Stream { name, next, reader } => {
                let (e, n, from, r) = (engine.clone(), name.clone(), *next, reader.clone());
                let page = read(small, move || match stream_page(&e, &n, from, r.as_ref()) {
                    Err(Error::StreamNotFound { .. }) => Ok(None),
                    other => other.map(Some),
                })
                .await?;
                match page {
                    None => true,
                    Some(slice) => {
                        let full = slice.events.len() == PAGE;
                        for (revision, ev) in slice.events {
                            *next = revision + 1;
                            send(&tx, Message::Event(ev)).await?;
                        }
                        // Events hidden by max-age or truncation were skipped: move past them too.
                        *next = (*next).max(slice.next_revision.unwrap_or(slice.last_revision + 1));
                        !full && slice.next_revision.is_none()
                    }
                }
            }
            Target::All {
                position,
                filter,
                interval,
                reader,
            } => {
                let (e, f, from) = (engine.clone(), filter.clone(), *position);
                // A filtered read examines at most one checkpoint interval of records, so a
                // checkpoint can follow every read that found nothing.
                let scan = if f.is_some() {
                    (*interval as usize).clamp(1, PAGE * 32)
                } else {
                    PAGE
                };
                let slice = read(small, move || {
                    e.read_all_budget(
                        AllFrom::Position(from),
                        Direction::Forwards,
                        PAGE,
                        f.as_ref(),
                        scan,
                        PAGE_BYTES,
                    )
                })
                .await?;
                let mut events = slice.events;
                if let Some(reader) = reader {
                    crate::streams::readable_only(&mut events, reader);
                }
                for ev in events {
                    send(&tx, Message::Event(event_to_proto(ev))).await?;
                }
                *position = slice.next_position;
                if filter.is_some() {
                    since_checkpoint += slice.records_scanned as u64;
                    if since_checkpoint >= u64::from(*interval) {
                        since_checkpoint = 0;
                        send(
                            &tx,
                            Message::Checkpoint(v1::Checkpoint {
                                position: *position,
                            }),
                        )
                        .await?;
                    }
                }
                slice.is_end && *position >= end_before
            }
        };
        guard.set_position(match &target {
            Target::Stream { next, .. } => *next,
            Target::All { position, .. } => *position,
        });
        if !at_end {
            live_from = None;
            continue;
        }
        live_from = Some(end_before);
        if !caught_up {
            caught_up = true;
            let position = match &target {
                Target::Stream { next, .. } => *next,
                Target::All { position, .. } => *position,
            };
            send(&tx, Message::CaughtUp(v1::CaughtUp { position })).await?;
        }
        // Live: wait for the log to move, the client to leave, or shutdown.
        tokio::select! {
            changed = end_rx.wait_for(|end| *end > end_before) => {
                if changed.is_err() {
                    return Err(Stop::Status(shutting_down()));
                }
            }
            _ = tx.closed() => return Err(Stop::ClientGone),
            _ = shutdown.wait_for(|s| *s) => return Err(Stop::Status(shutting_down())),
        }
    }
}

#[tonic::async_trait]
impl Subscriptions for SubscriptionsService {
    type SubscribeStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<v1::SubscribeResponse, Status>> + Send>,
    >;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        if *self.shutdown.borrow() {
            return Err(shutting_down());
        }
        let who = crate::auth::check(
            &request,
            strata_auth::Operation::Read,
            &request.get_ref().stream,
        )?;
        let r = request.into_inner();
        let target = if r.stream == "$all" {
            let (filter, interval) = filter_from_proto(r.filter)?;
            let interval = if interval == 0 {
                DEFAULT_CHECKPOINT_INTERVAL
            } else {
                interval
            };
            let position = match r.from {
                None | Some(SubFrom::Start(_)) => 0,
                Some(SubFrom::End(_)) => self.engine.log_end(),
                Some(SubFrom::AfterPosition(p)) => {
                    // The position after the record at p.
                    let e = self.engine.clone();
                    let slice = tokio::task::spawn_blocking(move || {
                        e.read_all_scan(AllFrom::Position(p), Direction::Forwards, 1, None, 1)
                    })
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(from_engine)?;
                    slice.next_position
                }
                Some(SubFrom::FromPosition(p)) => {
                    // Must be a record boundary (or the end): check by reading the record there.
                    let e = self.engine.clone();
                    tokio::task::spawn_blocking(move || {
                        e.read_all_scan(AllFrom::Position(p), Direction::Forwards, 1, None, 1)
                    })
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(from_engine)?;
                    p.min(self.engine.log_end())
                }
                Some(SubFrom::AfterRevision(_)) => {
                    return Err(invalid(
                        "from",
                        "$all subscriptions start after a position, not a revision",
                    ))
                }
            };
            Target::All {
                position,
                filter,
                interval,
                reader: (!who.is_admin()).then_some(who),
            }
        } else {
            if r.filter.is_some() {
                return Err(invalid(
                    "filter",
                    "filters apply to $all subscriptions only",
                ));
            }
            if r.stream.is_empty() {
                return Err(invalid("stream", "must not be empty"));
            }
            crate::streams::derived_served(&self.engine, &r.stream)?;
            let next = match r.from {
                None | Some(SubFrom::Start(_)) => 0,
                Some(SubFrom::End(_)) => match self.engine.last_revision(&r.stream) {
                    Ok(last) => last + 1,
                    Err(Error::StreamNotFound { .. }) => 0,
                    Err(e) => return Err(from_engine(e)),
                },
                Some(SubFrom::AfterRevision(n)) => n.checked_add(1).ok_or_else(|| {
                    invalid(
                        "from",
                        format!("after_revision {n} is the largest revision there is: nothing can follow it"),
                    )
                })?,
                Some(SubFrom::AfterPosition(_) | SubFrom::FromPosition(_)) => {
                    return Err(invalid(
                        "from",
                        "stream subscriptions start after a revision, not a position",
                    ))
                }
            };
            if let Err(e @ Error::StreamDeleted { .. }) =
                self.engine
                    .read_stream(&r.stream, StreamFrom::Start, Direction::Forwards, 1)
            {
                return Err(from_engine(e));
            }
            Target::Stream {
                name: r.stream,
                next,
                reader: (!who.is_admin()).then_some(who),
            }
        };
        let (tx, rx) = Tx::channel();
        let id = Uuid::new_v4().to_string();
        // Counted before the confirmation, so a client that has it sees itself in the metrics.
        let guard = crate::metrics::get().subscription(match &target {
            Target::Stream { name, .. } => Some(name.clone()),
            Target::All { .. } => None,
        });
        tx.send(msg(Message::Confirmation(v1::Confirmation {
            subscription_id: id.clone(),
        })))
        .await
        .map_err(|_| Status::cancelled("client went away"))?;
        let engine = self.engine.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tracing::debug!(subscription = %id, "subscription started");
            match run(engine, target, tx.clone(), shutdown, guard).await {
                Ok(()) | Err(Stop::ClientGone) => {}
                Err(Stop::Status(status)) => {
                    let _ = tx.send(Err(status)).await;
                }
            }
            tracing::debug!(subscription = %id, "subscription ended");
        });
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|(message, _permit)| message),
        )))
    }
}
