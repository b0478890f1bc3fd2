//! The `strata.v1.Server` service: server information and transport diagnostics.

use std::sync::Arc;
use std::time::Instant;

use strata_engine::{Durability, Engine};
use strata_proto::v1::{self, server_server::Server};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::status::invalid;

pub struct InfoService {
    engine: Arc<Engine>,
    started: Instant,
    /// Set on a cluster node.
    cluster: Option<crate::cluster::status::Handle>,
}

impl InfoService {
    pub fn new(engine: Arc<Engine>, cluster: Option<crate::cluster::status::Handle>) -> Self {
        InfoService {
            engine,
            started: Instant::now(),
            cluster,
        }
    }
}

impl InfoService {
    /// The cluster handle, for an operator's request on a cluster node.
    fn cluster_for<T>(
        &self,
        request: &Request<T>,
        operation: &str,
    ) -> Result<&crate::cluster::status::Handle, Status> {
        crate::auth::require_operator(request, operation)?;
        self.cluster.as_ref().ok_or_else(|| {
            Status::failed_precondition("this server is a single node, not a cluster node")
        })
    }
}

fn membership_response(
    cluster: &crate::cluster::status::Handle,
) -> Response<v1::MembershipResponse> {
    Response::new(v1::MembershipResponse {
        status: Some(cluster.status()),
    })
}

#[tonic::async_trait]
impl Server for InfoService {
    async fn info(
        &self,
        _: Request<v1::InfoRequest>,
    ) -> Result<Response<v1::InfoResponse>, Status> {
        let stats = self.engine.stats();
        Ok(Response::new(v1::InfoResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: self.started.elapsed().as_secs(),
            log_end_position: stats.log_end,
            stream_count: stats.stream_count as u64,
            data_bytes: stats.log_bytes + stats.index_bytes,
            segment_count: stats.segment_count as u64,
            durability: match self.engine.config().durability {
                Durability::Fsync => "fsync".into(),
                Durability::NoSync => "no-sync".into(),
            },
            read_only_reason: stats.read_only.unwrap_or_default(),
            data_dir: self.engine.config().dir.display().to_string(),
            cluster: self.cluster.as_ref().map(|c| c.status()),
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::TransferLeaderResponse>, Status> {
        let cluster = self.cluster_for(&request, "transfer cluster leadership")?;
        let leader_id = cluster.transfer_leader(request.into_inner().to).await?;
        Ok(Response::new(v1::TransferLeaderResponse { leader_id }))
    }

    async fn add_member(
        &self,
        request: Request<v1::AddMemberRequest>,
    ) -> Result<Response<v1::MembershipResponse>, Status> {
        let cluster = self.cluster_for(&request, "add a cluster member")?;
        let r = request.into_inner();
        cluster
            .add_member(r.node_id, r.peer_address, r.voter)
            .await?;
        Ok(membership_response(cluster))
    }

    async fn promote_member(
        &self,
        request: Request<v1::MemberRequest>,
    ) -> Result<Response<v1::MembershipResponse>, Status> {
        let cluster = self.cluster_for(&request, "promote a cluster member")?;
        cluster.promote_member(request.into_inner().node_id).await?;
        Ok(membership_response(cluster))
    }

    async fn remove_member(
        &self,
        request: Request<v1::MemberRequest>,
    ) -> Result<Response<v1::MembershipResponse>, Status> {
        let cluster = self.cluster_for(&request, "remove a cluster member")?;
        cluster.remove_member(request.into_inner().node_id).await?;
        Ok(membership_response(cluster))
    }

    async fn ping(
        &self,
        _: Request<v1::PingRequest>,
    ) -> Result<Response<v1::PingResponse>, Status> {
        Ok(Response::new(v1::PingResponse {}))
    }

    type FloodStream = ReceiverStream<Result<v1::FloodResponse, Status>>;

    async fn flood(
        &self,
        request: Request<v1::FloodRequest>,
    ) -> Result<Response<Self::FloodStream>, Status> {
        let r = request.into_inner();
        if r.size > 64 * 1024 {
            return Err(invalid("size", "at most 65536 bytes per message"));
        }
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let payload = bytes::Bytes::from(vec![0u8; r.size as usize]);
            for _ in 0..r.count {
                if tx
                    .send(Ok(v1::FloodResponse {
                        payload: payload.clone(),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
