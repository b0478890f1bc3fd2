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
        crate::auth::require_operator(&request, "transfer cluster leadership")?;
        let Some(cluster) = &self.cluster else {
            return Err(Status::failed_precondition(
                "this server is a single node, not a cluster node",
            ));
        };
        let leader_id = cluster.transfer_leader(request.into_inner().to).await?;
        Ok(Response::new(v1::TransferLeaderResponse { leader_id }))
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
