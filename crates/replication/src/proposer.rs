//! The engine's writer proposes each batch through Raft and waits for it to be applied.

use std::time::Duration;

use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use strata_engine::replica::Proposer;

use crate::types::{Batch, TypeConfig};
use crate::Raft;

/// Proposes batches on this node's Raft; only a leader's proposals succeed.
pub struct RaftProposer {
    raft: Raft,
    runtime: tokio::runtime::Handle,
    /// How long a batch may wait for a majority before its appenders are told it was not
    /// acknowledged (it may still commit later; a retry is idempotent).
    timeout: Duration,
}

impl RaftProposer {
    pub fn new(raft: Raft, runtime: tokio::runtime::Handle, timeout: Duration) -> Self {
        RaftProposer {
            raft,
            runtime,
            timeout,
        }
    }
}

/// What an appender is told when its batch did not commit.
fn explain(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> String {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_id {
            Some(leader) => format!("this node is not the leader; node {leader} is"),
            None => {
                "this node is not the leader, and no leader is known (an election may be under way)"
                    .into()
            }
        },
        other => other.to_string(),
    }
}

impl Proposer for RaftProposer {
    fn propose(&self, body: Bytes) -> Result<u64, String> {
        let write = self.raft.client_write(Batch(body));
        match self
            .runtime
            .block_on(async { tokio::time::timeout(self.timeout, write).await })
        {
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(e)) => Err(explain(e)),
            Err(_) => Err(format!(
                "no majority acknowledged the batch within {} ms (the cluster may have lost its quorum)",
                self.timeout.as_millis()
            )),
        }
    }
}
