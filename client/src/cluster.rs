//! A cluster node's view of its cluster, and leadership transfer (operators).
//!
//! ```no_run
//! # async fn demo(client: strata_client::Client) -> strata_client::Result<()> {
//! if let Some(status) = client.server_info().await?.cluster {
//!     println!("node {} is {} in term {}", status.node_id, status.role, status.term);
//!     let other = status.members.iter().find(|m| m.voter && m.node_id != status.node_id);
//!     if let (Some(other), "leader") = (other, status.role.as_str()) {
//!         client.transfer_leader(other.node_id).await?;
//!     }
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use strata_proto::v1::{self, server_client::ServerClient};

use crate::transport::{Security, Transport};
use crate::{Client, Error, Result};

/// The nodes a client was given, to find the leader among.
#[derive(Debug)]
pub(crate) struct Nodes {
    pub urls: Vec<String>,
    pub security: Security,
    pub connect_timeout: Duration,
}

impl Nodes {
    /// A connection to the node that leads; if none says it does (an election), to the first
    /// that answers; a single node (no cluster) counts as leading.
    pub(crate) async fn leader(&self) -> Result<Transport> {
        let mut first = None;
        let mut last = None;
        for url in &self.urls {
            let t = match Transport::connect(url, &self.security, self.connect_timeout).await {
                Ok(t) => t,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let mut ask = tonic::Request::new(v1::InfoRequest {});
            ask.set_timeout(Duration::from_secs(2));
            match ServerClient::new(t.clone()).info(ask).await {
                Ok(r) => match r.into_inner().cluster {
                    None => return Ok(t),
                    Some(c) if c.role == "leader" => return Ok(t),
                    Some(_) => {
                        first.get_or_insert(t);
                    }
                },
                Err(s) => last = Some(Error::from(s)),
            }
        }
        first
            .ok_or_else(|| last.unwrap_or_else(|| Error::Connect("no server address given".into())))
    }
}

/// What a cluster node reports about its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node_id: u64,
    /// "leader", "follower", "candidate", "learner" or "shutdown".
    pub role: String,
    pub term: u64,
    /// The leader the node knows of (`None` during an election).
    pub leader_id: Option<u64>,
    /// Raft entries: the last held, the last committed and applied, the last snapshotted.
    pub last_log_index: u64,
    pub committed_index: u64,
    pub snapshot_index: u64,
    pub members: Vec<ClusterMember>,
}

/// One member, as the reporting node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    pub node_id: u64,
    pub peer_address: String,
    pub voter: bool,
    /// Where clients reach it, if the node has heard from it.
    pub client_endpoint: Option<String>,
    pub alive: bool,
    /// Reported by the leader only.
    pub replication: Option<Replication>,
}

/// How far a member is behind the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    pub matched_index: u64,
    pub lag_entries: u64,
    pub lag_bytes: u64,
    /// Since it last acknowledged the leader (`None`: never).
    pub last_ack: Option<Duration>,
}

pub(crate) fn status_from_proto(s: v1::ClusterStatus) -> ClusterStatus {
    ClusterStatus {
        node_id: s.node_id,
        role: s.role,
        term: s.term,
        leader_id: Some(s.leader_id).filter(|l| *l != 0),
        last_log_index: s.last_log_index,
        committed_index: s.committed_index,
        snapshot_index: s.snapshot_index,
        members: s
            .members
            .into_iter()
            .map(|m| ClusterMember {
                node_id: m.node_id,
                peer_address: m.peer_address,
                voter: m.voter,
                client_endpoint: Some(m.client_endpoint).filter(|e| !e.is_empty()),
                alive: m.alive,
                replication: m.has_replication.then(|| Replication {
                    matched_index: m.matched_index,
                    lag_entries: m.lag_entries,
                    lag_bytes: m.lag_bytes,
                    last_ack: m.last_ack_ms.map(Duration::from_millis),
                }),
            })
            .collect(),
    }
}

impl Client {
    /// Adds node `node_id` (already running; `peer_address` is its `--cluster-listen`) to the
    /// cluster as a learner, returning once it has caught up; with `voter`, then makes it a
    /// voter. Send it to the leader; operators only. Returns the leader's view afterwards.
    pub async fn add_member(
        &self,
        node_id: u64,
        peer_address: &str,
        voter: bool,
    ) -> Result<ClusterStatus> {
        let r = ServerClient::new(self.channel.clone())
            .add_member(self.unary(v1::AddMemberRequest {
                node_id,
                peer_address: peer_address.to_owned(),
                voter,
            }))
            .await?
            .into_inner();
        Ok(status_from_proto(r.status.unwrap_or_default()))
    }

    /// Makes learner `node_id` a voter (leader; operators).
    pub async fn promote_member(&self, node_id: u64) -> Result<ClusterStatus> {
        let r = ServerClient::new(self.channel.clone())
            .promote_member(self.unary(v1::MemberRequest { node_id }))
            .await?
            .into_inner();
        Ok(status_from_proto(r.status.unwrap_or_default()))
    }

    /// Removes node `node_id`, voter or learner, from the cluster (leader; operators).
    pub async fn remove_member(&self, node_id: u64) -> Result<ClusterStatus> {
        let r = ServerClient::new(self.channel.clone())
            .remove_member(self.unary(v1::MemberRequest { node_id }))
            .await?
            .into_inner();
        Ok(status_from_proto(r.status.unwrap_or_default()))
    }

    /// Asks the leader (this client's server must be it) to hand leadership to voter `to`;
    /// returns once `to` leads. Operators only.
    pub async fn transfer_leader(&self, to: u64) -> Result<u64> {
        let r = ServerClient::new(self.channel.clone())
            .transfer_leader(self.unary(v1::TransferLeaderRequest { to }))
            .await?
            .into_inner();
        Ok(r.leader_id)
    }
}
