//! The cluster listener's service: Raft messages from peers handed to this node's Raft.

use strata_proto::cluster::raft_server::Raft as RaftService;
use strata_proto::cluster::{AppendRequest, DescribeRequest, NodeDescription, Reply, VoteRequest};
use strata_replication::Raft;
use tonic::{Request, Response, Status};

use super::wire;

pub struct PeerService {
    pub raft: Raft,
    /// What this node tells peers about itself.
    pub me: NodeDescription,
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

    async fn describe(
        &self,
        _req: Request<DescribeRequest>,
    ) -> Result<Response<NodeDescription>, Status> {
        Ok(Response::new(self.me.clone()))
    }
}
