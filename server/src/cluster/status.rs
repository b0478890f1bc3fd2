//! What `Info` reports about the cluster (`strata cluster status`), and leadership transfer
//! (`strata cluster transfer-leader`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use strata_engine::Engine;
use strata_proto::v1::{ClusterMember, ClusterStatus};
use strata_replication::{Raft, TypeConfig};
use tonic::Status;

use super::members::Members;

/// A cluster node's handles, for the server information service.
#[derive(Clone)]
pub struct Handle {
    pub raft: Raft,
    pub members: Arc<Members>,
    pub engine: Arc<Engine>,
}

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

impl Handle {
    /// This node's view of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let last = m.last_log_index;
        let log_end = last.and_then(|l| self.engine.entry_end(l).ok().flatten());
        let mut members: Vec<ClusterMember> = membership
            .nodes()
            .map(|(id, node)| {
                let mut member = ClusterMember {
                    node_id: *id,
                    peer_address: node.addr.clone(),
                    voter: voters.contains(id),
                    client_endpoint: self
                        .members
                        .client_endpoint(*id)
                        .map(|(h, p)| format!("{h}:{p}"))
                        .unwrap_or_default(),
                    alive: self.members.alive(*id),
                    ..Default::default()
                };
                if let Some(replication) = &m.replication {
                    member.has_replication = true;
                    let matched = replication.get(id).cloned().flatten().map(|l| l.index);
                    member.matched_index = matched.unwrap_or(0);
                    member.lag_entries = match (last, matched) {
                        (Some(l), Some(m)) => l.saturating_sub(m),
                        (Some(l), None) => l + 1,
                        _ => 0,
                    };
                    let matched_end = match matched {
                        Some(i) => self.engine.entry_end(i).ok().flatten(),
                        None => Some(0),
                    };
                    member.lag_bytes = match (log_end, matched_end) {
                        (Some(end), Some(at)) => end.saturating_sub(at),
                        _ => 0,
                    };
                    member.last_ack_ms = if *id == m.id {
                        Some(0)
                    } else {
                        m.heartbeat
                            .as_ref()
                            .and_then(|h| h.get(id).cloned().flatten())
                            .map(|at| openraft::Instant::elapsed(&*at).as_millis() as u64)
                    };
                }
                member
            })
            .collect();
        members.sort_by_key(|m| m.node_id);
        ClusterStatus {
            node_id: m.id,
            role: role(m.state).into(),
            term: m.current_term,
            leader_id: m.current_leader.unwrap_or(0),
            last_log_index: last.unwrap_or(0),
            committed_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            members,
        }
    }

    /// This node's Raft metrics, if it leads; otherwise the refusal naming the leader.
    pub(super) fn leading(&self) -> Result<openraft::RaftMetrics<TypeConfig>, Status> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader == Some(m.id) {
            return Ok(m);
        }
        let leader = match m.current_leader {
            Some(l) => match self.members.client_endpoint(l) {
                Some((h, p)) => format!("node {l} (at {h}:{p}) leads: ask it"),
                None => format!("node {l} leads: ask it"),
            },
            None => "no node leads right now (an election is under way): retry".into(),
        };
        Err(Status::failed_precondition(format!(
            "this node (node {}) is not the leader; {leader}",
            m.id
        )))
    }

    /// Hands leadership to voter `to` and waits until it leads.
    pub async fn transfer_leader(&self, to: u64) -> Result<u64, Status> {
        let m = self.leading()?;
        if to == m.id {
            return Ok(to);
        }
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == to)
        {
            return Err(Status::invalid_argument(format!(
                "node {to} is not a voter of this cluster"
            )));
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| Status::unavailable(format!("Raft stopped: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(l) = metrics.borrow_watched().current_leader.filter(|l| *l == to) {
                return Ok(l);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Status::unavailable(format!(
                    "node {to} did not take over within 10 s (is it alive and caught up?)"
                )));
            }
            let _ = tokio::time::timeout(left, metrics.changed()).await;
        }
    }
}
