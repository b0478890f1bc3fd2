//! The cluster listener's service: Raft messages from peers handed to this node's Raft, and
//! snapshots from the leader staged and installed.

use std::sync::Arc;

use strata_engine::Engine;
use strata_proto::cluster::raft_server::Raft as RaftService;
use strata_proto::cluster::{
    AppendRequest, DescribeRequest, LeaderTransfer, NodeDescription, Reply, SnapshotPart,
    SnapshotStartReply, SnapshotStartRequest, VoteRequest,
};
use strata_replication::snapshot::{self, SnapshotData, Staging};
use strata_replication::types::Vote;
use strata_replication::{Raft, TypeConfig};
use tonic::{Request, Response, Status, Streaming};

use super::wire;

pub struct PeerService {
    pub raft: Raft,
    /// What this node tells peers about itself.
    pub me: NodeDescription,
    pub engine: Arc<Engine>,
    /// Held while a snapshot is received: one staging file, one transfer at a time.
    pub receiving: tokio::sync::Mutex<()>,
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => Status::invalid_argument(e.to_string()),
            _ => Status::internal(format!("staging the snapshot: {e}")),
        })
}

#[tonic::async_trait]
impl RaftService for PeerService {
    async fn append(&self, req: Request<AppendRequest>) -> Result<Response<Reply>, Status> {
        let rpc = wire::decode_append(req.into_inner()).map_err(Status::invalid_argument)?;
        let r = self.raft.append_entries(rpc).await;
        Ok(Response::new(wire::encode_reply(&r)))
    }

    async fn vote(&self, req: Request<VoteRequest>) -> Result<Response<Reply>, Status> {
        let req = req.into_inner();
        let rpc = serde_json::from_slice(&req.request)
            .map_err(|e| Status::invalid_argument(format!("vote request: {e}")))?;
        let r = if req.pre_vote {
            self.raft.pre_vote(rpc).await
        } else {
            self.raft.vote(rpc).await
        };
        Ok(Response::new(wire::encode_reply(&r)))
    }

    async fn transfer_leader(
        &self,
        req: Request<LeaderTransfer>,
    ) -> Result<Response<Reply>, Status> {
        let rpc = serde_json::from_slice(&req.into_inner().request)
            .map_err(|e| Status::invalid_argument(format!("leader transfer request: {e}")))?;
        let r = self.raft.handle_transfer_leader(rpc).await;
        Ok(Response::new(wire::encode_reply(&r)))
    }

    async fn describe(
        &self,
        _req: Request<DescribeRequest>,
    ) -> Result<Response<NodeDescription>, Status> {
        Ok(Response::new(self.me.clone()))
    }

    async fn snapshot_start(
        &self,
        _req: Request<SnapshotStartRequest>,
    ) -> Result<Response<SnapshotStartReply>, Status> {
        let engine = self.engine.clone();
        let first_needed = blocking(move || snapshot::first_needed(&engine)).await?;
        Ok(Response::new(SnapshotStartReply { first_needed }))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotPart>>,
    ) -> Result<Response<Reply>, Status> {
        let _one = self
            .receiving
            .try_lock()
            .map_err(|_| Status::unavailable("this node is already receiving a snapshot"))?;
        let mut parts = req.into_inner();
        let head = parts
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("a snapshot transfer without parts"))?;
        let vote: Vote = serde_json::from_slice(&head.vote)
            .map_err(|e| Status::invalid_argument(format!("snapshot vote: {e}")))?;
        let meta: openraft::type_config::alias::SnapshotMetaOf<TypeConfig> =
            serde_json::from_slice(&head.meta)
                .map_err(|e| Status::invalid_argument(format!("snapshot metadata: {e}")))?;
        let last = meta
            .last_log_id
            .ok_or_else(|| Status::invalid_argument("a snapshot without a last entry"))?
            .index;
        let dir = self.engine.config().dir.clone();
        let mut staging = blocking(move || Staging::create(&dir, last)).await?;
        let mut entries = head.entries;
        loop {
            staging = blocking(move || {
                for e in &entries {
                    staging.push(e)?;
                }
                Ok(staging)
            })
            .await?;
            match parts.message().await? {
                Some(part) => entries = part.entries,
                None => break,
            }
        }
        let received = blocking(move || staging.finish()).await?;
        let r = self
            .raft
            .install_full_snapshot(
                vote,
                openraft::storage::Snapshot {
                    meta,
                    snapshot: SnapshotData::Received(received),
                },
            )
            .await;
        if r.is_ok() {
            super::metrics::snapshot_installed();
        }
        Ok(Response::new(wire::encode_reply(&r)))
    }
}
