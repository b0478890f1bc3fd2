//! Membership changes at runtime (`strata cluster add | promote | remove`), on the leader,
//! through openraft's joint consensus: a node is added as a learner (a non-voting replica that
//! receives the log), waited for until it has caught up, and only then made a voter; removing
//! a voter is one more membership change.

use std::collections::BTreeSet;

use openraft::error::{ClientWriteError, RaftError};
use openraft::impls::BasicNode;
use openraft::ChangeMembers;
use strata_replication::TypeConfig;
use tonic::Status;

use super::status::Handle;

fn refused(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            Status::failed_precondition(match f.leader_id {
                Some(l) => format!("this node is not the leader; node {l} is: ask it"),
                None => "no node leads right now (an election is under way): retry".into(),
            })
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Status::failed_precondition(format!("the membership change was refused: {e}"))
        }
        RaftError::APIError(e) => Status::unavailable(format!(
            "the membership change may not have been made (leadership changed?): {e}; check with `strata cluster status` and retry"
        )),
        RaftError::Fatal(e) => Status::unavailable(format!("Raft stopped: {e}")),
    }
}

impl Handle {
    fn is_voter(m: &openraft::RaftMetrics<TypeConfig>, id: u64) -> bool {
        m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == id)
    }

    fn is_member(m: &openraft::RaftMetrics<TypeConfig>, id: u64) -> bool {
        m.membership_config
            .membership()
            .nodes()
            .any(|(n, _)| *n == id)
    }

    /// Adds node `id` (its peer listener at `addr`) as a learner, waits until it has caught
    /// up with the leader's log, and, with `voter`, makes it a voter.
    pub async fn add_member(&self, id: u64, addr: String, voter: bool) -> Result<(), Status> {
        let m = self.leading()?;
        if addr.trim().is_empty() || !addr.contains(':') {
            return Err(Status::invalid_argument(format!(
                "peer address '{addr}' is not host:port (the new node's --cluster-listen)"
            )));
        }
        if Self::is_voter(&m, id) {
            return Err(Status::invalid_argument(format!(
                "node {id} is already a voter of this cluster"
            )));
        }
        tracing::info!(node = id, %addr, voter, "adding a member: as a learner first, until it has caught up");
        self.raft
            .add_learner(id, BasicNode::new(addr), true)
            .await
            .map_err(refused)?;
        if voter {
            self.promote_member(id).await?;
        }
        Ok(())
    }

    /// Makes learner `id` a voter (joint consensus: the change commits under both the old and
    /// the new set of voters).
    pub async fn promote_member(&self, id: u64) -> Result<(), Status> {
        let m = self.leading()?;
        if !Self::is_member(&m, id) {
            return Err(Status::invalid_argument(format!(
                "node {id} is not a member of this cluster: add it first"
            )));
        }
        if Self::is_voter(&m, id) {
            return Ok(());
        }
        tracing::info!(node = id, "making a learner a voter");
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(refused)?;
        Ok(())
    }

    /// Removes node `id` from the cluster, voter or learner. Removing the leader itself is
    /// allowed: it steps down once the change commits.
    pub async fn remove_member(&self, id: u64) -> Result<(), Status> {
        let m = self.leading()?;
        if !Self::is_member(&m, id) {
            return Err(Status::invalid_argument(format!(
                "node {id} is not a member of this cluster"
            )));
        }
        let change = if Self::is_voter(&m, id) {
            if m.membership_config.membership().voter_ids().count() == 1 {
                return Err(Status::failed_precondition(format!(
                    "node {id} is the cluster's only voter"
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        tracing::info!(node = id, "removing a member");
        self.raft
            .change_membership(change, false)
            .await
            .map_err(refused)?;
        Ok(())
    }
}
