//! Where the writer's results go: the reply of each request, and the outcome a batch holds
//! for each request until the batch is durable (or replicated) or has failed.

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::types::AppendResult;

/// Where a write's result goes. Called exactly once: with the result, or with
/// [`Error::Closed`] if the request is dropped unanswered (the engine shut down).
pub(crate) struct Reply(Option<Box<dyn FnOnce(Result<AppendResult>) + Send>>);

impl Reply {
    /// A reply that runs `f` on the writer thread.
    pub(crate) fn call(f: impl FnOnce(Result<AppendResult>) + Send + 'static) -> Self {
        Reply(Some(Box::new(f)))
    }

    /// A reply delivered to the returned receiver.
    pub(crate) fn channel() -> (Self, oneshot::Receiver<Result<AppendResult>>) {
        let (tx, rx) = oneshot::channel();
        (
            Reply::call(move |r| {
                let _ = tx.send(r);
            }),
            rx,
        )
    }

    pub(crate) fn send(mut self, result: Result<AppendResult>) {
        if let Some(f) = self.0.take() {
            f(result);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(Error::Closed));
        }
    }
}

pub(super) enum Outcome {
    /// Reply with this when the batch is durable.
    Reply(Reply, Result<AppendResult>),
    /// The same for a multi-stream append.
    Multi(
        oneshot::Sender<Result<crate::multi::MultiAppendResult>>,
        Result<crate::multi::MultiAppendResult>,
    ),
}

impl Outcome {
    pub(super) fn send(self) {
        match self {
            Outcome::Reply(reply, r) => reply.send(r),
            Outcome::Multi(tx, r) => {
                let _ = tx.send(r);
            }
        }
    }

    pub(super) fn fail(self, err: &impl Fn() -> Error) {
        match self {
            Outcome::Reply(reply, r) => reply.send(r.and(Err(err()))),
            Outcome::Multi(tx, r) => {
                let _ = tx.send(r.and(Err(err())));
            }
        }
    }

    /// Moves the positions of a replicated batch's results (planned relative to the entry's
    /// body) to where the body was written. Replays already carry their original positions.
    pub(super) fn place_at(&mut self, base: u64) {
        match self {
            Outcome::Reply(_, Ok(r)) if !r.idempotent_replay => r.position += base,
            Outcome::Multi(_, Ok(r)) if !r.idempotent_replay => {
                r.position += base;
                for s in &mut r.streams {
                    s.position += base;
                }
            }
            _ => {}
        }
    }
}
