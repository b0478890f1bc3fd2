//! The engine's writer proposes each batch through Raft and waits for it to be applied.

use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use strata_engine::replica::{Proposer, Refusal};

use crate::types::{Batch, TypeConfig};
use crate::Raft;

/// Proposes batches on this node's Raft; only a leader's proposals succeed.
pub struct RaftProposer {
    raft: Raft,
    /// The term [`Proposer::prepare`] found this node leading, with everything before it
    /// applied; a proposal in another term is refused (it was planned against that state).
    term: std::sync::Mutex<Option<u64>>,
    runtime: tokio::runtime::Handle,
    /// How long a batch may wait for a majority before its appenders are told it was not
    /// acknowledged (it may still commit later; a retry is idempotent).
    timeout: Duration,
    /// A batch whose appenders were told it was not acknowledged but which is still in this
    /// leader's log, with the term it was proposed in: it may yet commit, so no batch may be
    /// planned against state without it until it is resolved (committed and applied, or
    /// refused) or the term has changed.
    unresolved: std::sync::Mutex<Option<(u64, tokio::task::JoinHandle<()>)>>,
}

impl RaftProposer {
    pub fn new(raft: Raft, runtime: tokio::runtime::Handle, timeout: Duration) -> Self {
        RaftProposer {
            raft,
            term: std::sync::Mutex::new(None),
            runtime,
            timeout,
            unresolved: std::sync::Mutex::new(None),
        }
    }
}

/// What an appender is told when its batch did not commit.
fn explain(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Refusal {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_id {
            Some(leader) => Refusal::NotLeader(match f.leader_node {
                Some(n) => format!("it is not the leader; node {leader} (peer address {}) is", n.addr),
                None => format!("it is not the leader; node {leader} is"),
            }),
            None => Refusal::NotAcknowledged(
                "this node is not the leader, and no leader is known (an election may be under way)".into(),
            ),
        },
        other => Refusal::NotAcknowledged(other.to_string()),
    }
}

impl RaftProposer {
    fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }
}

/// Whether `m` shows this node leading with an entry of its own term applied (a new leader's
/// first entry is a blank one: once it is applied, so is everything earlier leaders wrote).
/// Only then does the node's committed state hold everything any leader acknowledged.
pub fn ready(m: &openraft::RaftMetrics<TypeConfig>) -> bool {
    m.current_leader == Some(m.id)
        && m.last_applied
            .is_some_and(|l| l.leader_id.term == m.current_term && l.leader_id.node_id == m.id)
}

impl RaftProposer {
    /// Waits (at most the commit timeout) for a batch that timed out earlier in this term.
    fn settle_unresolved(&self) -> Result<(), Refusal> {
        let mut unresolved = self.unresolved.lock().unwrap_or_else(|p| p.into_inner());
        let Some((term, handle)) = unresolved.as_mut() else {
            return Ok(());
        };
        if handle.is_finished() || *term != self.metrics().current_term {
            // Resolved; or the term changed, and a leader of the new term plans only once it
            // has applied an entry of its own term, after this one's fate is settled.
            *unresolved = None;
            return Ok(());
        }
        match self
            .runtime
            .block_on(async { tokio::time::timeout(self.timeout, handle).await })
        {
            Ok(_) => {
                *unresolved = None;
                Ok(())
            }
            Err(_) => Err(Refusal::NotAcknowledged(format!(
                "an earlier batch of this leader has waited for a majority for over {} ms (the cluster may have lost its quorum)",
                self.timeout.as_millis()
            ))),
        }
    }
}

impl Proposer for RaftProposer {
    fn prepare(&self) -> Result<(), Refusal> {
        self.settle_unresolved()?;
        let m = self.metrics();
        if m.current_leader != Some(m.id) {
            return Err(match m.current_leader {
                Some(leader) => {
                    Refusal::NotLeader(format!("it is not the leader; node {leader} is"))
                }
                None => Refusal::NotAcknowledged(
                    "no leader is known (an election may be under way)".into(),
                ),
            });
        }
        let m = if ready(&m) {
            m
        } else {
            let term = m.current_term;
            let waiter = self.raft.wait(Some(self.timeout));
            let wait = waiter.metrics(
                move |m| ready(m) || m.current_term != term,
                "a new leader applies its predecessors' entries",
            );
            self.runtime.block_on(wait).map_err(|e| {
                Refusal::NotAcknowledged(format!(
                    "this node was elected but has not yet applied the entries of earlier leaders: {e}"
                ))
            })?
        };
        if !ready(&m) {
            return Err(Refusal::NotAcknowledged("leadership changed; retry".into()));
        }
        *self.term.lock().unwrap_or_else(|p| p.into_inner()) = Some(m.current_term);
        Ok(())
    }

    fn propose(&self, body: Bytes) -> Result<u64, Refusal> {
        let prepared = *self.term.lock().unwrap_or_else(|p| p.into_inner());
        let m = self.metrics();
        if prepared != Some(m.current_term) || !ready(&m) {
            return Err(Refusal::NotAcknowledged(
                "leadership changed while the batch was being prepared; retry".into(),
            ));
        }
        // The write runs as its own task, so that one that outlives the timeout is still
        // followed to its end (see `unresolved`).
        let raft = self.raft.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let write = self.runtime.spawn(async move {
            let _ = tx.send(raft.client_write(Batch(body)).await);
        });
        match self
            .runtime
            .block_on(async { tokio::time::timeout(self.timeout, rx).await })
        {
            Ok(Ok(Ok(r))) => Ok(r.data),
            Ok(Ok(Err(e))) => Err(explain(e)),
            Ok(Err(_)) => Err(Refusal::NotAcknowledged(
                "the batch's proposal ended without an answer; retry".into(),
            )),
            Err(_) => {
                *self.unresolved.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((m.current_term, write));
                Err(Refusal::NotAcknowledged(format!(
                    "no majority acknowledged the batch within {} ms (the cluster may have lost its quorum)",
                    self.timeout.as_millis()
                )))
            }
        }
    }
}
