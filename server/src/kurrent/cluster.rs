//! `event_store.client.gossip.Gossip` (a single node: one member, the leader; a cluster node:
//! every member, as [`ClusterMembers`] reports them) and
//! `event_store.client.server_features.ServerFeatures` (what this mapping implements).

use std::sync::LazyLock;

use strata_kurrentdb_proto::event_store::client::{
    self as kc, gossip as kg, server_features as kf,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::uuid_to;

static INSTANCE: LazyLock<Uuid> = LazyLock::new(Uuid::new_v4);

/// This process's instance ID, as gossip reports it (new at every start).
pub fn instance_id() -> Uuid {
    *INSTANCE
}

/// One cluster member as gossip reports it.
pub struct GossipMember {
    pub instance_id: Uuid,
    pub state: kg::member_info::VNodeState,
    pub is_alive: bool,
    pub host: String,
    pub port: u16,
}

/// The members of this node's cluster, with their client endpoints and roles.
pub trait ClusterMembers: Send + Sync {
    fn members(&self) -> Vec<GossipMember>;
}

/// What gossip advertises: the configured host and port (`--advertise-host`,
/// `--advertise-port`), each defaulting to the host and port the client asked for (the
/// request's `:authority`), else the local address its connection reached.
#[derive(Clone, Default)]
pub struct KurrentGossip {
    pub host: Option<String>,
    pub port: Option<u16>,
    /// On a cluster node: every member (the advertised host and port above are then this
    /// node's own, as its peers learn them).
    pub cluster: Option<std::sync::Arc<dyn ClusterMembers>>,
}

#[tonic::async_trait]
impl kg::gossip_server::Gossip for KurrentGossip {
    async fn read(&self, request: Request<kc::Empty>) -> Result<Response<kg::ClusterInfo>, Status> {
        let ticks = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            / 100;
        if let Some(cluster) = &self.cluster {
            let members = cluster
                .members()
                .into_iter()
                .map(|m| kg::MemberInfo {
                    instance_id: Some(uuid_to(m.instance_id, false)),
                    time_stamp: ticks as i64,
                    state: m.state as i32,
                    is_alive: m.is_alive,
                    http_end_point: Some(kg::EndPoint {
                        address: m.host,
                        port: u32::from(m.port),
                    }),
                })
                .collect();
            return Ok(Response::new(kg::ClusterInfo { members }));
        }
        let local = request
            .extensions()
            .get::<crate::net::listener::PeerInfo>()
            .and_then(|p| p.tcp.local_addr())
            .ok_or_else(|| Status::internal("the connection's local address is unknown"))?;
        let asked = request
            .extensions()
            .get::<crate::auth::layer::RequestAuthority>()
            .filter(|a| !a.host.is_empty());
        let address = self
            .host
            .clone()
            .or_else(|| asked.map(|a| a.host.clone()))
            .unwrap_or_else(|| local.ip().to_string());
        let port = self
            .port
            .or_else(|| asked.and_then(|a| a.port))
            .unwrap_or(local.port());
        Ok(Response::new(kg::ClusterInfo {
            members: vec![kg::MemberInfo {
                instance_id: Some(uuid_to(*INSTANCE, false)),
                time_stamp: ticks as i64,
                state: kg::member_info::VNodeState::Leader as i32,
                is_alive: true,
                http_end_point: Some(kg::EndPoint {
                    address,
                    port: u32::from(port),
                }),
            }],
        }))
    }
}

pub struct KurrentFeatures;

/// The KurrentDB release whose client protocol this mapping implements, reported as the
/// server version: clients compare it (as integers or as semver) to decide which calls they
/// may make. Strata's own version is in its own API (`strata.v1.Server/Info`).
pub const KURRENTDB_PROTOCOL_VERSION: &str = "26.1.0";

/// (service, method, features): the KurrentDB RPCs this server implements.
const METHODS: &[(&str, &str, &[&str])] = &[
    (
        "event_store.client.streams.streams",
        "read",
        &["position", "events"],
    ),
    ("event_store.client.streams.streams", "append", &[]),
    (
        "event_store.client.streams.streams",
        "batchappend",
        &["deadline_duration"],
    ),
    ("event_store.client.streams.streams", "delete", &[]),
    ("event_store.client.streams.streams", "tombstone", &[]),
    (
        "event_store.client.persistent_subscriptions.persistentsubscriptions",
        "create",
        &["stream", "all"],
    ),
    (
        "event_store.client.persistent_subscriptions.persistentsubscriptions",
        "update",
        &["stream", "all"],
    ),
    (
        "event_store.client.persistent_subscriptions.persistentsubscriptions",
        "delete",
        &["stream", "all"],
    ),
    (
        "event_store.client.persistent_subscriptions.persistentsubscriptions",
        "read",
        &["stream", "all"],
    ),
    (
        "event_store.client.persistent_subscriptions.persistentsubscriptions",
        "getinfo",
        &["stream", "all"],
    ),
    (
        "event_store.client.persistent_subscriptions.persistentsubscriptions",
        "replayparked",
        &["stream", "all"],
    ),
    (
        "event_store.client.persistent_subscriptions.persistentsubscriptions",
        "list",
        &["stream", "all"],
    ),
    (
        "event_store.client.persistent_subscriptions.persistentsubscriptions",
        "restartsubsystem",
        &[],
    ),
    ("event_store.client.gossip.gossip", "read", &[]),
    ("event_store.client.users.users", "create", &[]),
    ("event_store.client.users.users", "update", &[]),
    ("event_store.client.users.users", "delete", &[]),
    ("event_store.client.users.users", "disable", &[]),
    ("event_store.client.users.users", "enable", &[]),
    ("event_store.client.users.users", "details", &[]),
    ("event_store.client.users.users", "changepassword", &[]),
    ("event_store.client.users.users", "resetpassword", &[]),
    (
        "kurrentdb.protocol.v2.streams.streamsservice",
        "appendsession",
        &[],
    ),
    (
        "kurrentdb.protocol.v2.streams.streamsservice",
        "appendrecords",
        &[],
    ),
    (
        "event_store.client.server_features.serverfeatures",
        "getsupportedmethods",
        &[],
    ),
];

#[tonic::async_trait]
impl kf::server_features_server::ServerFeatures for KurrentFeatures {
    async fn get_supported_methods(
        &self,
        _request: Request<kc::Empty>,
    ) -> Result<Response<kf::SupportedMethods>, Status> {
        Ok(Response::new(kf::SupportedMethods {
            methods: METHODS
                .iter()
                .map(|(service, method, features)| kf::SupportedMethod {
                    method_name: (*method).into(),
                    service_name: (*service).into(),
                    features: features.iter().map(|f| (*f).into()).collect(),
                })
                .collect(),
            event_store_server_version: KURRENTDB_PROTOCOL_VERSION.into(),
        }))
    }
}
