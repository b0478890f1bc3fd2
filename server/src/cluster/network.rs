//! Sending Raft messages to peers over gRPC (openraft's network).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{RPCError, StreamingError, Unreachable};
use openraft::impls::BasicNode;
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use strata_engine::Engine;
use strata_proto::cluster::raft_client::RaftClient;
use strata_proto::cluster::{LeaderTransfer, SnapshotPart, SnapshotStartRequest};
use strata_replication::snapshot::{self, SnapshotData};
use strata_replication::types::Vote;
use strata_replication::TypeConfig;
use tonic::transport::{Channel, Endpoint};

use super::wire;

/// Makes a connection per peer, from the address in the membership.
#[derive(Clone)]
pub struct Network {
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// This node's store, which snapshots are sent from.
    pub engine: Arc<Engine>,
}

pub struct Peer {
    target: u64,
    client: Result<RaftClient<Channel>, String>,
    engine: Arc<Engine>,
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable<TypeConfig> {
    Unreachable::new(&std::io::Error::other(e.to_string()))
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            target,
            client: self.connect(target, &node.addr),
            engine: self.engine.clone(),
        }
    }
}

impl Network {
    /// A lazily connecting client of node `target`'s peer listener at `addr`.
    pub fn connect(&self, target: u64, addr: &str) -> Result<RaftClient<Channel>, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("node {target}'s address {addr}: {e}"))
            .and_then(|ep| match &self.tls {
                Some(tls) => ep.tls_config(tls.clone()).map_err(|e| e.to_string()),
                None => Ok(ep),
            })
            .map(|ep| {
                RaftClient::new(
                    ep.connect_timeout(Duration::from_secs(2))
                        .tcp_nodelay(true)
                        .connect_lazy(),
                )
                .max_decoding_message_size(256 * 1024 * 1024)
                .max_encoding_message_size(256 * 1024 * 1024)
            })
    }
}

impl Peer {
    fn client(&self) -> Result<RaftClient<Channel>, Unreachable<TypeConfig>> {
        self.client.clone().map_err(unreachable)
    }

    async fn vote_rpc(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        pre_vote: bool,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request =
            serde_json::to_vec(&rpc).map_err(|e| RPCError::Unreachable(unreachable(e)))?;
        let mut req = tonic::Request::new(strata_proto::cluster::VoteRequest {
            request: request.into(),
            pre_vote,
        });
        req.set_timeout(option.hard_ttl());
        let reply = self
            .client()?
            .vote(req)
            .await
            .map_err(|s| RPCError::Unreachable(unreachable(s.message())))?
            .into_inner();
        match wire::decode_reply::<VoteResponse<TypeConfig>, openraft::error::RaftError<TypeConfig>>(
            &reply,
        ) {
            Ok(Ok(v)) => Ok(v),
            // The peer's Raft has stopped: as good as unreachable.
            Ok(Err(e)) => Err(RPCError::Unreachable(unreachable(format!(
                "node {}: {e}",
                self.target
            )))),
            Err(e) => Err(RPCError::Unreachable(unreachable(e))),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let (body, sent) = wire::encode_append(rpc, wire::MAX_PAYLOAD_BYTES)
            .map_err(|e| RPCError::Unreachable(unreachable(e)))?;
        let bytes: usize = body.entries.iter().map(|e| e.len()).sum();
        let mut req = tonic::Request::new(body);
        req.set_timeout(wire::append_timeout(option.hard_ttl(), bytes));
        let reply = self
            .client()?
            .append(req)
            .await
            .map_err(|s| RPCError::Unreachable(unreachable(s.message())))?
            .into_inner();
        match wire::decode_reply::<
            AppendEntriesResponse<TypeConfig>,
            openraft::error::RaftError<TypeConfig>,
        >(&reply)
        {
            // The peer took every entry sent, which was only the first part of those asked for.
            Ok(Ok(AppendEntriesResponse::Success)) => match sent {
                wire::Sent::All => Ok(AppendEntriesResponse::Success),
                wire::Sent::Partial(last) => Ok(AppendEntriesResponse::PartialSuccess(Some(last))),
            },
            Ok(Ok(v)) => Ok(v),
            // The peer's Raft has stopped: as good as unreachable.
            Ok(Err(e)) => Err(RPCError::Unreachable(unreachable(format!(
                "node {}: {e}",
                self.target
            )))),
            Err(e) => Err(RPCError::Unreachable(unreachable(e))),
        }
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request =
            serde_json::to_vec(&rpc).map_err(|e| RPCError::Unreachable(unreachable(e)))?;
        let mut req = tonic::Request::new(LeaderTransfer {
            request: request.into(),
        });
        req.set_timeout(option.hard_ttl());
        let reply = self
            .client()?
            .transfer_leader(req)
            .await
            .map_err(|s| RPCError::Unreachable(unreachable(s.message())))?
            .into_inner();
        match wire::decode_reply::<
            TransferLeaderResponse<TypeConfig>,
            openraft::error::Fatal<TypeConfig>,
        >(&reply)
        {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(RPCError::Unreachable(unreachable(format!(
                "node {}: {e}",
                self.target
            )))),
            Err(e) => Err(RPCError::Unreachable(unreachable(e))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_rpc(rpc, false, option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_rpc(rpc, true, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl std::future::Future<Output = openraft::error::ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let fail = |e: String| StreamingError::Unreachable(unreachable(e));
        let Some(last) = snapshot.meta.last_log_id else {
            return Err(fail("a snapshot without a last entry".into()));
        };
        let mut client = self.client()?;
        let first = client
            .snapshot_start(SnapshotStartRequest {})
            .await
            .map_err(|s| fail(format!("node {}: {}", self.target, s.message())))?
            .into_inner()
            .first_needed;
        let head = SnapshotPart {
            vote: serde_json::to_vec(&vote)
                .map_err(|e| fail(e.to_string()))?
                .into(),
            meta: serde_json::to_vec(&snapshot.meta)
                .map_err(|e| fail(e.to_string()))?
                .into(),
            entries: Vec::new(),
        };
        tracing::info!(
            target = self.target,
            first,
            last = last.index,
            "sending a snapshot"
        );
        // Parts are read while earlier ones are on the wire; two in flight at most.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let engine = self.engine.clone();
        let producer = tokio::spawn(async move {
            if tx.send(head).await.is_err() {
                return Ok(());
            }
            let mut next = first;
            while next <= last.index {
                let e = engine.clone();
                let entries = tokio::task::spawn_blocking(move || {
                    snapshot::read_encoded(&e, next, last.index, wire::SNAPSHOT_PART_BYTES)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                next += entries.len() as u64;
                let part = SnapshotPart {
                    entries,
                    ..Default::default()
                };
                if tx.send(part).await.is_err() {
                    break; // the call ended; its answer says why
                }
            }
            Ok::<(), String>(())
        });
        let call = client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let reply = tokio::select! {
            reply = call => reply,
            closed = cancel => {
                producer.abort();
                return Err(StreamingError::Closed(closed));
            }
        };
        if let Ok(Err(e)) = producer.await {
            return Err(fail(format!("reading the snapshot to send: {e}")));
        }
        let reply = reply
            .map_err(|s| fail(format!("node {}: {}", self.target, s.message())))?
            .into_inner();
        match wire::decode_reply::<SnapshotResponse<TypeConfig>, openraft::error::Fatal<TypeConfig>>(
            &reply,
        ) {
            Ok(Ok(r)) => {
                super::metrics::snapshot_sent();
                Ok(r)
            }
            Ok(Err(e)) => Err(fail(format!("node {}: {e}", self.target))),
            Err(e) => Err(fail(e)),
        }
    }
}
