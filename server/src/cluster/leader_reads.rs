//! Requests that ask for the leader (`requires-leader: true`, as KurrentDB clients and
//! `ReadOptions::require_leader` send it). On a cluster node such a request is served only
//! once this node has confirmed that it still leads and has applied everything committed up
//! to then, so a read sees every append acknowledged before it was sent. A follower answers
//! as KurrentDB does: NOT_FOUND "Leader info available" with the trailers `exception:
//! not-leader` and the leader's client endpoint in `leader-endpoint-host` /
//! `leader-endpoint-port`, which KurrentDB clients follow.
//! Without a cluster (or without the header) requests pass untouched.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use openraft::error::{LinearizableReadError, RaftError};
use openraft::ReadPolicy;
use strata_replication::{Raft, TypeConfig};

use super::members::Members;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::Status;

/// The node's Raft and member table, once the cluster has started (empty on a single node).
#[derive(Clone, Default)]
pub struct LeaderReads(Arc<OnceLock<(Raft, Arc<Members>)>>);

impl LeaderReads {
    pub fn set(&self, raft: Raft, members: Arc<Members>) {
        let _ = self.0.set((raft, members));
    }
}

/// KurrentDB's answer to a leader request that reached a follower.
fn leader_is_elsewhere(members: &Members, leader: u64) -> Status {
    match members.client_endpoint(leader) {
        Some((host, port)) => {
            let mut status = Status::not_found("Leader info available");
            let m = status.metadata_mut();
            // KurrentDB's exception trailer: clients recognise the redirect by it.
            m.insert("exception", "not-leader".parse().expect("ASCII"));
            if let (Ok(h), Ok(p)) = (host.parse(), port.to_string().parse()) {
                m.insert("leader-endpoint-host", h);
                m.insert("leader-endpoint-port", p);
            }
            status
        }
        // Not heard from yet: say who leads; the client retries.
        None => Status::unavailable(format!(
            "the request requires the leader (requires-leader), and this node is not the leader; node {leader} is, at an address not known here yet: retry"
        )),
    }
}

/// Calls that never need the leader: health, and the discovery calls clients use to find it.
const EXEMPT: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/event_store.client.gossip.Gossip/",
    "/event_store.client.server_features.ServerFeatures/",
];

fn requires_leader(req: &Request<Body>) -> bool {
    req.headers()
        .get("requires-leader")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
        && !EXEMPT.iter().any(|p| req.uri().path().starts_with(p))
}

/// Confirms leadership: by the leader's lease when it is fresh, else by a round of
/// heartbeats to a majority (read index).
async fn confirm(raft: &Raft, members: &Members) -> Result<(), Status> {
    let explain = |e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>| {
        match e {
        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => match f.leader_id {
            Some(leader) => leader_is_elsewhere(members, leader),
            None => Status::unavailable(
                "the request requires the leader (requires-leader), and no leader is known (an election may be under way): retry",
            ),
        },
        other => Status::unavailable(format!(
            "this node could not confirm that it still leads: {other}; retry"
        )),
    }
    };
    match raft.ensure_linearizable(ReadPolicy::LeaseRead).await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map(|_| ())
            .map_err(explain),
        Err(e) => Err(explain(e)),
    }
}

#[derive(Clone)]
pub struct LeaderReadsLayer(pub LeaderReads);

impl<S> tower::Layer<S> for LeaderReadsLayer {
    type Service = LeaderCheck<S>;
    fn layer(&self, inner: S) -> LeaderCheck<S> {
        LeaderCheck {
            inner,
            raft: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LeaderCheck<S> {
    inner: S,
    raft: LeaderReads,
}

impl<S> tower::Service<Request<Body>> for LeaderCheck<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The inner service was made ready by poll_ready: take it, leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let cluster = self.raft.0.get().filter(|_| requires_leader(&req)).cloned();
        Box::pin(async move {
            if let Some((raft, members)) = cluster {
                if let Err(status) = confirm(&raft, &members).await {
                    return Ok(status.into_http());
                }
            }
            inner.call(req).await
        })
    }
}
