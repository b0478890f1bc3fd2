//! Cluster mode: this node's Raft (openraft, through `strata-replication`), the listener for
//! its peers, and the engine writer's path into Raft. See `docs/replication.md`.
//!
//! - `wire`: how Raft messages are encoded on the wire.
//! - `network`: sending them to peers; `service`: receiving them.

pub mod leader_reads;
pub mod leadership;
pub mod members;
mod membership;
mod metrics;
mod network;
mod service;
pub mod status;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::impls::BasicNode;
use strata_engine::Engine;
use strata_replication::{raft_config, LogStore, Raft, RaftProposer, StateMachine};

/// The cluster settings of `strata serve`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// This node's ID; with --cluster-listen and --peers, runs the server as a cluster node.
    /// Never reuse an ID for a node with a different data directory.
    #[arg(long, env = "STRATA_NODE_ID")]
    pub node_id: Option<u64>,

    /// Address the node listens on for its peers (node-to-node traffic only).
    #[arg(long, env = "STRATA_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,

    /// Every voter of the cluster, this node included: ID=host:port of its --cluster-listen,
    /// comma-separated (e.g. 1=10.0.0.1:2114,2=10.0.0.2:2114,3=10.0.0.3:2114).
    #[arg(long, env = "STRATA_PEERS", value_delimiter = ',', value_parser = parse_peer)]
    pub peers: Vec<(u64, String)>,

    /// Initialise the cluster with --peers as its voters, if it never was. Give it to one node
    /// for the first start; a cluster is initialised once, so restarts with it change nothing.
    #[arg(long, env = "STRATA_CLUSTER_INIT")]
    pub cluster_init: bool,

    /// How long an append waits for a majority of nodes before it is answered UNAVAILABLE.
    #[arg(long, env = "STRATA_COMMIT_TIMEOUT", default_value = "5s", value_parser = crate::serve::parse_duration)]
    pub commit_timeout: Duration,

    /// Raft entries between snapshots. A snapshot copies nothing (the log is the state); a
    /// node further behind than this catches up by one streamed transfer of the leader's
    /// committed entries instead of entry-by-entry replication.
    #[arg(long, env = "STRATA_SNAPSHOT_ENTRIES", default_value_t = 1000)]
    pub snapshot_entries: u64,

    /// Certificate (PEM) this node shows its peers, as server and as client (mutual TLS).
    #[arg(long, env = "STRATA_CLUSTER_TLS_CERT", requires_all = ["cluster_tls_key", "cluster_tls_ca"])]
    pub cluster_tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --cluster-tls-cert.
    #[arg(long, env = "STRATA_CLUSTER_TLS_KEY", requires = "cluster_tls_cert")]
    pub cluster_tls_key: Option<PathBuf>,

    /// The CA (PEM) every peer's certificate must chain to; peers without one are refused.
    #[arg(long, env = "STRATA_CLUSTER_TLS_CA", requires = "cluster_tls_cert")]
    pub cluster_tls_ca: Option<PathBuf>,
}

fn parse_peer(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not ID=host:port"))?;
    let id = id
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("'{id}' in '{s}' is not a node ID (a number)"))?;
    let addr = addr.trim();
    if addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_none()
    {
        return Err(format!("'{addr}' in '{s}' is not host:port"));
    }
    Ok((id, addr.to_owned()))
}

impl ClusterArgs {
    /// Whether cluster mode is asked for (checked by [`ClusterArgs::check`]).
    pub fn enabled(&self) -> bool {
        self.node_id.is_some() || self.cluster_listen.is_some() || !self.peers.is_empty()
    }

    /// The node ID, listener and voters, or what is missing or wrong.
    fn check(&self) -> Result<(u64, SocketAddr, BTreeMap<u64, BasicNode>), String> {
        let (Some(id), Some(listen)) = (self.node_id, self.cluster_listen) else {
            return Err(
                "cluster mode needs --node-id, --cluster-listen and --peers together".into(),
            );
        };
        let mut voters = BTreeMap::new();
        for (pid, addr) in &self.peers {
            if voters.insert(*pid, BasicNode::new(addr.clone())).is_some() {
                return Err(format!("--peers names node {pid} twice"));
            }
        }
        if !voters.contains_key(&id) {
            return Err(format!(
                "--peers must include this node (--node-id {id}) with its own address"
            ));
        }
        if self.cluster_tls_cert.is_none() && !listen.ip().is_loopback() {
            return Err(format!(
                "node-to-node traffic on {listen} would be neither encrypted nor authenticated: give --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca (mutual TLS; `strata certs dev --host ...` makes development ones), or keep --cluster-listen on loopback"
            ));
        }
        Ok((id, listen, voters))
    }

    fn tls_files(&self) -> Option<crate::net::tls::TlsFiles> {
        Some(crate::net::tls::TlsFiles {
            cert: self.cluster_tls_cert.clone()?,
            key: self.cluster_tls_key.clone()?,
            ca: self.cluster_tls_ca.clone(),
        })
    }

    /// Fails early (before the store is opened) on settings that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        self.check().map(|_| ())
    }
}

/// A running cluster node.
pub struct Node {
    pub raft: Raft,
    /// Every member as clients should see it (KurrentDB gossip).
    pub members: Arc<members::Members>,
    engine: Arc<Engine>,
}

impl Node {
    /// Stops Raft (peers see this node as down) and lets go of the store.
    pub async fn shutdown(self) {
        self.engine.set_proposer(None);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "stopping Raft");
        }
    }
}

/// Starts this node's Raft over `engine` (opened as a cluster node), its peer listener, and
/// the writer's path into Raft; initialises the cluster if asked to and never done.
/// `client` is where clients reach this node (host, port), as its peers will report it.
pub async fn start(
    args: &ClusterArgs,
    engine: Arc<Engine>,
    limits: crate::net::listener::Limits,
    client: (String, u16),
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Node, String> {
    let (id, listen, voters) = args.check()?;
    let config = Arc::new(
        raft_config("strata", args.snapshot_entries.max(1))
            .map_err(|e| format!("Raft settings: {e}"))?,
    );
    let data_dir = engine.config().dir.clone();
    strata_replication::snapshot::remove_leftover(&data_dir).map_err(|e| {
        format!("removing the staging file of an unfinished snapshot transfer: {e}")
    })?;
    let (client_tls, acceptor) = match args.tls_files() {
        None => (None, None),
        Some(files) => {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let ca = files.ca.as_ref().expect("required with the certificate");
            let client = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?))
                .identity(tonic::transport::Identity::from_pem(
                    read(&files.cert)?,
                    read(&files.key)?,
                ));
            let server = crate::net::tls::peer_server_config(&files)?;
            (Some(client), Some(tokio_rustls::TlsAcceptor::from(server)))
        }
    };
    let store = LogStore::new(engine.clone()).map_err(|e| e.to_string())?;
    let network = network::Network {
        tls: client_tls,
        engine: engine.clone(),
    };
    let raft = Raft::new(
        id,
        config,
        network.clone(),
        store,
        StateMachine::new(engine.clone()),
    )
    .await
    .map_err(|e| format!("starting Raft: {e}"))?;

    let listener = Arc::new(
        tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen for peers on {listen}: {e}"))?,
    );
    let incoming = crate::net::listener::incoming(listener, limits, acceptor);
    let me = strata_proto::cluster::NodeDescription {
        node_id: id,
        client_host: client.0,
        client_port: u32::from(client.1),
        instance_id: crate::kurrent::cluster::instance_id().to_string(),
    };
    let members = members::Members::start(raft.clone(), network, me.clone(), stop.clone());
    metrics::start(
        status::Handle {
            raft: raft.clone(),
            members: members.clone(),
            engine: engine.clone(),
        },
        stop.clone(),
    );
    let peers = strata_proto::cluster::raft_server::RaftServer::new(service::PeerService {
        raft: raft.clone(),
        me,
        engine: engine.clone(),
        receiving: tokio::sync::Mutex::new(()),
    })
    .max_decoding_message_size(256 * 1024 * 1024);
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(peers)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the peer listener stopped");
        }
    });

    engine.set_proposer(Some(Arc::new(RaftProposer::new(
        raft.clone(),
        tokio::runtime::Handle::current(),
        args.commit_timeout,
    ))));
    if args.cluster_init {
        match raft.is_initialized().await {
            Ok(true) => {
                tracing::info!("the cluster is already initialised; --cluster-init changes nothing")
            }
            Ok(false) => {
                raft.initialize(voters.clone())
                    .await
                    .map_err(|e| format!("initialising the cluster: {e}"))?;
                tracing::info!(voters = ?voters.keys().collect::<Vec<_>>(), "cluster initialised");
            }
            Err(e) => return Err(format!("Raft stopped: {e}")),
        }
    }
    tracing::info!(node = id, %listen, tls = args.cluster_tls_cert.is_some(), "cluster node started");
    Ok(Node {
        raft,
        members,
        engine,
    })
}
