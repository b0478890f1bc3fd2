//! Client-facing membership: every node asks its peers twice a second what they are and where
//! clients reach them (the `Describe` call on the peer listener), so that any node can tell a
//! KurrentDB client the whole cluster: each member's client endpoint, whether it is alive
//! (its last answer was a success, within the last 2 s: a refused or timed-out call marks it
//! dead at once, so clients stop choosing a dead leader) and its role (from this node's Raft:
//! the leader it knows).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use strata_kurrentdb_proto::event_store::client::gossip::member_info::VNodeState;
use strata_proto::cluster::raft_client::RaftClient;
use strata_proto::cluster::{DescribeRequest, NodeDescription};
use strata_replication::Raft;
use tonic::transport::Channel;
use uuid::Uuid;

use super::network::Network;
use crate::kurrent::cluster::{ClusterMembers, GossipMember};

/// How often peers are asked, and how long an answer may take.
const POLL: Duration = Duration::from_millis(500);
/// A peer that has not answered for this long is reported dead.
const ALIVE_FOR: Duration = Duration::from_secs(2);

/// What a peer last said, when it last answered, and whether the latest call failed.
struct Seen {
    description: NodeDescription,
    answered: Instant,
    failing: bool,
}

pub struct Members {
    me: NodeDescription,
    raft: Raft,
    seen: Mutex<HashMap<u64, Seen>>,
}

impl Members {
    /// Starts asking the members of this node's Raft membership, until `stop`.
    pub fn start(
        raft: Raft,
        network: Network,
        me: NodeDescription,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Members> {
        let members = Arc::new(Members {
            me,
            raft,
            seen: Mutex::default(),
        });
        let polling = members.clone();
        tokio::spawn(async move {
            let mut clients: HashMap<(u64, String), RaftClient<Channel>> = HashMap::new();
            loop {
                let peers: Vec<(u64, String)> = {
                    let m = polling.raft.metrics().borrow_watched().clone();
                    m.membership_config
                        .membership()
                        .nodes()
                        .filter(|(id, _)| **id != polling.me.node_id)
                        .map(|(id, n)| (*id, n.addr.clone()))
                        .collect()
                };
                for key in peers {
                    let client = match clients.get(&key) {
                        Some(c) => c.clone(),
                        None => match network.connect(key.0, &key.1) {
                            Ok(c) => clients.entry(key.clone()).or_insert(c).clone(),
                            Err(e) => {
                                tracing::debug!(node = key.0, error = %e, "cannot reach peer");
                                continue;
                            }
                        },
                    };
                    let mut c = client;
                    let mut req = tonic::Request::new(DescribeRequest {});
                    req.set_timeout(POLL);
                    let answer = tokio::time::timeout(POLL, c.describe(req)).await;
                    let mut seen = polling.seen.lock().unwrap();
                    match answer {
                        Ok(Ok(d)) if d.get_ref().node_id == key.0 => {
                            seen.insert(
                                key.0,
                                Seen {
                                    description: d.into_inner(),
                                    answered: Instant::now(),
                                    failing: false,
                                },
                            );
                        }
                        _ => {
                            if let Some(s) = seen.get_mut(&key.0) {
                                s.failing = true;
                            }
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
        members
    }
}

impl Members {
    /// Where clients reach node `id`, if this node knows.
    pub fn client_endpoint(&self, id: u64) -> Option<(String, u16)> {
        if id == self.me.node_id {
            return Some((self.me.client_host.clone(), self.me.client_port as u16));
        }
        let seen = self.seen.lock().unwrap();
        seen.get(&id).map(|s| {
            (
                s.description.client_host.clone(),
                s.description.client_port as u16,
            )
        })
    }
}

impl Members {
    /// Whether node `id` answered this node's polls lately (this node always has).
    pub fn alive(&self, id: u64) -> bool {
        if id == self.me.node_id {
            return true;
        }
        let seen = self.seen.lock().unwrap();
        seen.get(&id)
            .is_some_and(|s| !s.failing && s.answered.elapsed() < ALIVE_FOR)
    }
}

impl ClusterMembers for Members {
    fn members(&self) -> Vec<GossipMember> {
        let m = self.raft.metrics().borrow_watched().clone();
        let seen = self.seen.lock().unwrap();
        let mut ids: Vec<u64> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| {
                let (d, alive) = if id == self.me.node_id {
                    (&self.me, true)
                } else {
                    let s = seen.get(&id)?;
                    (
                        &s.description,
                        !s.failing && s.answered.elapsed() < ALIVE_FOR,
                    )
                };
                let voter = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == id);
                let state = match m.current_leader {
                    // A learner: a non-voting replica, which serves reads.
                    _ if !voter => VNodeState::ReadOnlyReplica,
                    Some(l) if l == id && alive => VNodeState::Leader,
                    Some(_) => VNodeState::Follower,
                    // An election is under way: no member leads.
                    None => VNodeState::Unknown,
                };
                Some(GossipMember {
                    instance_id: Uuid::parse_str(&d.instance_id).unwrap_or_default(),
                    state,
                    is_alive: alive,
                    host: d.client_host.clone(),
                    port: d.client_port as u16,
                })
            })
            .collect()
    }
}
