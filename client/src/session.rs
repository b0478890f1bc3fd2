//! The append session: concurrent `append` calls on one client share one long-lived
//! `AppendSession` stream. A driver task owns the stream, numbers the requests, and hands each
//! result to its caller by correlation ID. If the stream breaks, every append in flight fails
//! with [`Error::Unavailable`] (the caller's retry re-sends it on a new stream: safe, because
//! the events keep their IDs) and the next append opens a new stream.

use std::collections::HashMap;
use std::time::Duration;

use crate::transport::Transport as Channel;
use prost::Message;
use strata_proto::v1::{
    self, append_session_response::Result as SessionResult, streams_client::StreamsClient,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use crate::error::{Error, Result};

/// Appends queued for the driver before callers wait.
const QUEUE: usize = 1024;

struct Pending {
    request: v1::AppendRequest,
    reply: oneshot::Sender<Result<v1::AppendResponse>>,
}

#[derive(Debug, Clone)]
pub(crate) struct AppendSession {
    tx: mpsc::Sender<Pending>,
}

impl AppendSession {
    pub(crate) fn start(channel: Channel) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(drive(channel, rx));
        AppendSession { tx }
    }

    pub(crate) async fn append(
        &self,
        request: v1::AppendRequest,
        timeout: Option<Duration>,
    ) -> Result<v1::AppendResponse> {
        let (reply, rx) = oneshot::channel();
        let gone = || Error::Unavailable("the append session stopped".into());
        let wait = async {
            self.tx
                .send(Pending { request, reply })
                .await
                .map_err(|_| gone())?;
            rx.await.map_err(|_| gone())?
        };
        match timeout {
            // A timed-out append may still be written; retrying it is safe (same event IDs).
            Some(t) => tokio::time::timeout(t, wait)
                .await
                .map_err(|_| Error::DeadlineExceeded)?,
            None => wait.await,
        }
    }
}

fn session_error(e: v1::AppendError) -> Error {
    let details = e.detail.map(|d| d.encode_to_vec()).unwrap_or_default();
    Error::from(Status::with_details(
        Code::from_i32(e.code),
        e.message,
        details.into(),
    ))
}

/// A session that could not open or broke: transient, so the appends in it are retried (safe:
/// each keeps its event IDs), unless the server refused the caller (no usable credentials, or
/// no access), which a retry would only repeat.
fn transport_failure(status: Status) -> Error {
    match Error::from(status) {
        e @ (Error::Unavailable(_) | Error::Unauthenticated(_) | Error::AccessDenied { .. }) => e,
        other => Error::Unavailable(format!("the append session failed: {other}")),
    }
}

/// Runs sessions one after another for as long as the client exists.
async fn drive(channel: Channel, mut rx: mpsc::Receiver<Pending>) {
    let mut next_id: u64 = 0;
    // When the client follows a new leader, the session starts again there.
    let mut moves = channel.moves();
    // Opened when the first append arrives; reopened after a failure.
    while let Some(first) = rx.recv().await {
        let (out, out_rx) = mpsc::channel::<v1::AppendSessionRequest>(QUEUE);
        let mut waiting: HashMap<u64, oneshot::Sender<Result<v1::AppendResponse>>> = HashMap::new();
        next_id += 1;
        waiting.insert(next_id, first.reply);
        let _ = out.try_send(v1::AppendSessionRequest {
            correlation_id: next_id,
            append: Some(first.request),
        });
        // This stream goes to the node in use now: only later moves end it.
        moves.borrow_and_update();
        let mut client =
            StreamsClient::new(channel.clone()).max_decoding_message_size(64 * 1024 * 1024);
        let mut inbound = match client.append_session(ReceiverStream::new(out_rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let err = transport_failure(status);
                for (_, reply) in waiting.drain() {
                    let _ = reply.send(Err(err.clone()));
                }
                continue;
            }
        };
        let mut accepting = true;
        let failure = loop {
            tokio::select! {
                pending = rx.recv(), if accepting => match pending {
                    Some(p) => {
                        next_id += 1;
                        waiting.insert(next_id, p.reply);
                        let request = v1::AppendSessionRequest { correlation_id: next_id, append: Some(p.request) };
                        if out.send(request).await.is_err() {
                            break Error::Unavailable("the append session closed".into());
                        }
                    }
                    // The client is gone: finish what is in flight, then stop.
                    None => accepting = false,
                },
                response = inbound.message() => match response {
                    Ok(Some(r)) => {
                        if let Some(reply) = waiting.remove(&r.correlation_id) {
                            let result = match r.result {
                                Some(SessionResult::Success(ok)) => Ok(ok),
                                Some(SessionResult::Error(e)) => Err(session_error(e)),
                                None => Err(Error::Server { code: Code::Internal, message: "empty append result".into() }),
                            };
                            let _ = reply.send(result);
                        }
                        if !accepting && waiting.is_empty() {
                            return;
                        }
                    }
                    Ok(None) => break Error::Unavailable("the server ended the append session".into()),
                    Err(status) => break transport_failure(status),
                },
                _ = moves.changed() => break Error::Unavailable("the client moved to the cluster's new leader".into()),
            }
        };
        for (_, reply) in waiting.drain() {
            let _ = reply.send(Err(failure.clone()));
        }
        if !accepting {
            return;
        }
    }
}
