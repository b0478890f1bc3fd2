//! `strata serve`: configuration, start-up, the gRPC server and graceful shutdown.

use std::sync::Arc;

use strata_engine::{Config, Durability, Engine};
use strata_persistent::Groups;
use strata_proto::v1::{
    persistent_subscriptions_server::PersistentSubscriptionsServer, server_server::ServerServer,
    streams_server::StreamsServer, subscriptions_server::SubscriptionsServer,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::info::InfoService;
use crate::kurrent::cluster::{KurrentFeatures, KurrentGossip};
use crate::kurrent::persistent::KurrentPersistent;
use crate::kurrent::streams::KurrentStreams;
use crate::persistent::PersistentService;
use crate::streams::StreamsService;
use crate::subscriptions::SubscriptionsService;
use strata_kurrentdb_proto::event_store::client::{
    gossip::gossip_server::GossipServer as KGossipServer,
    persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptionsServer as KPersistentServer,
    server_features::server_features_server::ServerFeaturesServer as KFeaturesServer,
    streams::streams_server::StreamsServer as KStreamsServer,
    users::users_server::UsersServer as KUsersServer,
};

mod args;
pub use args::{parse_duration, DurabilityArg, ServeArgs, VerifyArg};

/// Services reported by `grpc.health.v1` ("" is the server as a whole).
const SERVICES: [&str; 6] = [
    "",
    "strata.v1.Streams",
    "strata.v1.Subscriptions",
    "strata.v1.PersistentSubscriptions",
    "strata.v1.Server",
    "strata.v1.Users",
];

/// How long running requests get to finish once shutdown begins; then their connections are
/// closed.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
/// The process exits this long after a shutdown signal whatever is still running (the store
/// recovers at the next start as after a crash, losing nothing acknowledged).
const HARD_EXIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where clients reach this node, as a cluster node tells its peers: `--advertise-host` /
/// `--advertise-port`, else the client listener's address (its IP when bound to one, the
/// peer listener's when bound to all interfaces).
fn client_endpoint(args: &ServeArgs, listening: std::net::SocketAddr) -> (String, u16) {
    let host = args.advertise_host.clone().unwrap_or_else(|| {
        match (listening.ip().is_unspecified(), args.cluster.cluster_listen) {
            (true, Some(peer)) => peer.ip().to_string(),
            _ => listening.ip().to_string(),
        }
    });
    (host, args.advertise_port.unwrap_or(listening.port()))
}

/// SIGTERM and SIGINT handlers, installed as the server starts: a signal that arrives during
/// recovery or just after the port opens still means a clean shutdown, not the default
/// action (an abrupt exit).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

fn install_signals() -> Result<Signals, String> {
    use tokio::signal::unix::{signal, SignalKind};
    Ok(Signals {
        term: signal(SignalKind::terminate())
            .map_err(|e| format!("cannot install a SIGTERM handler: {e}"))?,
        int: signal(SignalKind::interrupt())
            .map_err(|e| format!("cannot install a SIGINT handler: {e}"))?,
    })
}

/// Resolves when SIGINT or SIGTERM arrives (or arrived since the handlers were installed).
async fn signalled(signals: Signals) {
    let Signals { mut term, mut int } = signals;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received: shutting down"),
    }
}

pub async fn serve(args: ServeArgs) -> Result<(), String> {
    let signals = install_signals()?;
    if args.max_append_size == 0 || args.max_append_size > 64 * 1024 * 1024 {
        return Err(format!(
            "--max-append-size must be between 1 byte and 64MiB, got {}",
            args.max_append_size
        ));
    }
    if args.segment_size < 4096 {
        return Err(format!(
            "--segment-size must be at least 4KiB, got {}",
            args.segment_size
        ));
    }
    let mut config = Config::new(&args.data_dir);
    config.durability = match args.durability {
        DurabilityArg::Fsync => Durability::Fsync,
        DurabilityArg::NoSync => Durability::NoSync,
    };
    config.segment_size = args.segment_size;
    config.max_append_size = args.max_append_size as usize;
    config.index_cache_bytes = args.index_cache_size;
    config.accept_data_loss = args.accept_data_loss;
    config.derived = args
        .derived_streams
        .then_some(strata_engine::derived::CategoryRule {
            separator: args.category_separator,
            from_last: args.category_from_last,
        });

    let mode = crate::auth::mode::resolve(&args.security, args.listen, args.metrics_listen.0)?;
    if args.cluster.enabled() {
        args.cluster.validate()?;
        config.replicated = true;
    }
    let admin_password = crate::auth::mode::initial_admin_password(&args.security)?;
    let tls = match &mode {
        crate::auth::mode::Mode::Secure { tls, .. } => Some(tokio_rustls::TlsAcceptor::from(
            crate::net::tls::server_config(tls, &[b"h2"])?,
        )),
        crate::auth::mode::Mode::Insecure => None,
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;

    config.observer = Some(Arc::new(crate::metrics::Observer));

    if let Some(limit) = crate::net::listener::raise_fd_limit() {
        if (limit as usize) < args.max_connections.saturating_add(256) {
            tracing::warn!(
                fd_limit = limit,
                max_connections = args.max_connections,
                "the file-descriptor limit leaves little room above --max-connections; raise it (ulimit -n) or lower --max-connections"
            );
        }
    }
    let limits = crate::net::listener::Limits {
        max_connections: args.max_connections.max(1),
        handshake_timeout: args.handshake_timeout,
    };
    let decode_limit = args.max_append_size as usize + 1024 * 1024;
    crate::budget::init(args.memory_budget.min(usize::MAX as u64) as usize);
    crate::trim::start();

    // The port serves from now on: health answers NOT_SERVING and every other call is told
    // the store is recovering, until the full services are installed on the same server.
    let listener = Arc::new(
        TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?,
    );
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let ready = crate::net::gate::Ready::default();
    let edge = crate::auth::layer::Edge::default();
    let leader_reads = crate::cluster::leader_reads::LeaderReads::default();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let server = {
        let mut stop = shutdown_rx.clone();
        let incoming = crate::net::listener::incoming(listener, limits, tls);
        let health_service = health_service.clone();
        let ready = ready.clone();
        let edge = edge.clone();
        let leader_reads = leader_reads.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .trace_fn(|req| tracing::debug_span!("grpc", method = %req.uri().path()))
                .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
                .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
                .tcp_keepalive(Some(std::time::Duration::from_secs(60)))
                // Every error response is counted by code here, whichever service made it.
                .layer(crate::grpc_errors::CountErrorsLayer)
                // Every request is authenticated before the gate hands it to a service.
                .layer(crate::auth::layer::AuthLayer(edge))
                // Then, on a cluster, `requires-leader` calls wait for confirmed leadership.
                .layer(crate::cluster::leader_reads::LeaderReadsLayer(leader_reads))
                .layer(crate::net::gate::GateLayer(ready))
                .add_service(health_service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };
    // Shutdown begins at SIGTERM/SIGINT, whatever the server is doing then.
    let (signalled_tx, mut signalled_rx) = watch::channel(false);
    {
        let health = health.clone();
        tokio::spawn(async move {
            signalled(signals).await;
            let _ = signalled_tx.send(true);
            // Whatever still runs then, the process ends: the lock is released and the next
            // start recovers the store as after a crash.
            std::thread::spawn(|| {
                std::thread::sleep(HARD_EXIT);
                tracing::error!(
                    "shutdown did not finish within {} s of the signal; exiting now (the next start recovers the store)",
                    HARD_EXIT.as_secs()
                );
                std::process::exit(1);
            });
            for name in SERVICES {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            // Subscriptions end with UNAVAILABLE; in-flight unary calls finish.
            let _ = shutdown_tx.send(true);
        });
    }

    tracing::info!(%addr, "recovering the store; health checks on {addr} answer NOT_SERVING until it is open");
    let verify_first = args.verify_log == VerifyArg::Startup;
    let opened = tokio::task::spawn_blocking(move || {
        let engine = Engine::open(config)?;
        if verify_first {
            let started = std::time::Instant::now();
            let report = engine.verify()?;
            crate::store_health::log_verified(&report, started.elapsed());
        }
        Ok::<_, strata_engine::Error>(engine)
    })
    .await;
    let engine = opened
        .map_err(|e| e.to_string())?
        .map_err(|e| {
            let hint = match e {
                strata_engine::Error::DataLoss { .. } => ". Restore the missing files from a backup, or start with --accept-data-loss to serve what is left",
                _ => "",
            };
            format!("cannot open the store in {}: {e}{hint}", args.data_dir.display())
        })?;
    let engine = Arc::new(engine);
    let r = engine.recovery_report().clone();
    tracing::info!(
        data_dir = %args.data_dir.display(),
        durability = ?args.durability,
        segments = r.segments,
        log_end = r.log_end,
        index_checkpoint = r.index_checkpoint,
        reindexed_events = r.reindexed_events,
        truncated_bytes = r.truncated_bytes,
        recovery_ms = r.duration.as_millis() as u64,
        "store recovered"
    );

    let cluster = if args.cluster.enabled() {
        Some(
            crate::cluster::start(
                &args.cluster,
                engine.clone(),
                limits,
                client_endpoint(&args, addr),
                shutdown_rx.clone(),
            )
            .await?,
        )
    } else {
        None
    };
    if let Some(node) = &cluster {
        leader_reads.set(node.raft.clone(), node.members.clone());
    }

    // Set when shutdown begins, so the background check lets go of the store.
    let stop_verify = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if args.verify_log == VerifyArg::Background {
        let (engine, stop) = (engine.clone(), stop_verify.clone());
        tokio::task::spawn_blocking(move || {
            crate::store_health::verify_in_background(&engine, &stop)
        });
    }

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection service: {e}"))?;

    let streams = StreamsServer::new(StreamsService::new(engine.clone(), shutdown_rx.clone()))
        .max_decoding_message_size(decode_limit);
    let subscriptions = SubscriptionsServer::new(SubscriptionsService::new(
        engine.clone(),
        shutdown_rx.clone(),
    ));
    let info = ServerServer::new(InfoService::new(
        engine.clone(),
        cluster.as_ref().map(|node| crate::cluster::status::Handle {
            raft: node.raft.clone(),
            members: node.members.clone(),
            engine: engine.clone(),
        }),
    ));
    let k_streams = KStreamsServer::new(KurrentStreams::new(engine.clone(), shutdown_rx.clone()))
        .max_decoding_message_size(decode_limit);
    let k_streams_v2 = strata_kurrentdb_proto::kurrentdb::protocol::v2::streams::streams_service_server::StreamsServiceServer::new(
        crate::kurrent::v2::KurrentStreamsV2::new(engine.clone()),
    )
    .max_decoding_message_size(decode_limit);
    // On a cluster node the groups run only while it leads.
    let groups = match &cluster {
        None => Groups::open(engine.clone())
            .map_err(|e| format!("cannot load persistent subscription groups: {e}"))?,
        Some(node) => {
            let groups = Groups::standby(engine.clone());
            crate::cluster::leadership::run_groups(
                node.raft.clone(),
                groups.clone(),
                shutdown_rx.clone(),
            );
            groups
        }
    };
    groups.set_max_groups(args.max_groups);
    groups.set_buffer_memory(args.group_buffer_memory.min(usize::MAX as u64) as usize);
    let persistent = PersistentSubscriptionsServer::new(PersistentService::new(
        groups.clone(),
        shutdown_rx.clone(),
    ));
    let k_persistent =
        KPersistentServer::new(KurrentPersistent::new(groups.clone(), shutdown_rx.clone()));
    let (users, authenticator) = match &mode {
        crate::auth::mode::Mode::Secure {
            default_passwords, ..
        } => {
            let users = Arc::new(
                strata_auth::Users::load(engine.clone())
                    .map_err(|e| format!("cannot load the users: {e}"))?,
            );
            let ops_password = args.security.initial_ops_password.clone();
            match &cluster {
                None => users
                    .ensure_initial(admin_password, ops_password)
                    .await
                    .map_err(|e| format!("cannot create the initial users: {e}"))?,
                // Every node learns accounts from its log; the leader writes the initial ones.
                Some(node) => {
                    users.follow();
                    crate::cluster::leadership::initial_users(
                        node.raft.clone(),
                        users.clone(),
                        admin_password,
                        ops_password,
                        shutdown_rx.clone(),
                    );
                }
            }
            for r in users.list() {
                if r.default_password && !default_passwords {
                    tracing::warn!(user = %r.login_name,
                        "this user still has the default password, which is refused beyond loopback: set one with --initial-admin-password (admin) or reset it (see docs/security.md)");
                }
            }
            let authenticator = Arc::new(strata_auth::Authenticator::new(
                users.clone(),
                *default_passwords,
            ));
            edge.open(Some(authenticator.clone()));
            tracing::info!("secure mode: TLS on, every call but health, gossip and server features needs credentials");
            (Some(users), Some(authenticator))
        }
        crate::auth::mode::Mode::Insecure => {
            edge.open(None);
            (None, None)
        }
    };
    crate::auth::install(strata_auth::Authorizer::new(engine.clone()));
    drop(users);
    let strata_users = strata_proto::v1::users_server::UsersServer::new(
        crate::auth::users_service::UsersService::new(authenticator.clone()),
    );
    let k_users = KUsersServer::new(crate::auth::kurrent_users::KurrentUsers::new(
        authenticator.clone(),
    ));
    ready.open(
        tonic::service::Routes::new(health_service)
            .add_service(reflection)
            .add_service(streams)
            .add_service(subscriptions)
            .add_service(persistent)
            .add_service(info)
            .add_service(strata_users)
            // The KurrentDB client protocol v1, for existing KurrentDB clients.
            .add_service(k_streams)
            // The KurrentDB protocol v2: multi-stream appends.
            .add_service(k_streams_v2)
            .add_service(k_persistent)
            .add_service(KGossipServer::new(KurrentGossip {
                host: args.advertise_host.clone(),
                port: args.advertise_port,
                cluster: cluster
                    .as_ref()
                    .map(|n| n.members.clone() as Arc<dyn crate::kurrent::cluster::ClusterMembers>),
            }))
            .add_service(KFeaturesServer::new(KurrentFeatures))
            .add_service(k_users),
    );
    if !*signalled_rx.borrow() {
        for name in SERVICES {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
    }

    let metrics_task = match args.metrics_listen.0 {
        None => None,
        Some(m) => {
            let l = TcpListener::bind(m)
                .await
                .map_err(|e| format!("cannot listen for metrics on {m}: {e}"))?;
            let maddr = l.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(%maddr, "metrics on http://{maddr}/metrics");
            let security = match (&mode, &authenticator) {
                (crate::auth::mode::Mode::Secure { tls, .. }, Some(authenticator)) => {
                    crate::metrics::MetricsSecurity::Secure {
                        acceptor: tokio_rustls::TlsAcceptor::from(crate::net::tls::server_config(
                            tls,
                            &[b"http/1.1"],
                        )?),
                        authenticator: authenticator.clone(),
                    }
                }
                _ => crate::metrics::MetricsSecurity::Open,
            };
            Some(tokio::spawn(crate::metrics::serve(
                l,
                engine.clone(),
                groups.clone(),
                security,
                shutdown_rx.clone(),
            )))
        }
    };

    // A failed write or fsync turns the store read-only until it is reopened: the write
    // paths (and the server as a whole) then report NOT_SERVING; reads and catch-up
    // subscriptions go on.
    tokio::spawn(crate::store_health::watch_read_only(
        engine.clone(),
        health.clone(),
        shutdown_rx.clone(),
    ));

    tracing::info!(%addr, "listening on {addr}");
    let _ = signalled_rx.wait_for(|s| *s).await;
    stop_verify.store(true, std::sync::atomic::Ordering::Relaxed);
    // Running requests get DRAIN to finish; then their connections are closed.
    let mut server = server;
    match tokio::time::timeout(DRAIN, &mut server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "the gRPC server failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "the gRPC server task failed"),
        Err(_) => {
            tracing::warn!(
                "requests still running {} s after shutdown began; closing their connections",
                DRAIN.as_secs()
            );
            server.abort();
        }
    }

    // The services (and the store handles they hold) go with the server.
    drop(server);
    drop(ready);
    // The accounts (and through them the store) go with the authentication layer.
    drop(edge);
    drop(authenticator);
    tracing::info!("gRPC server stopped; closing the store");
    // Groups write their final checkpoints while the store is still open.
    if tokio::time::timeout(DRAIN, groups.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "consumer groups did not stop within {} s; their last checkpoints may be older",
            DRAIN.as_secs()
        );
    }
    drop(groups);
    if let Some(node) = cluster {
        node.shutdown().await;
    }
    if let Some(mut t) = metrics_task {
        if tokio::time::timeout(DRAIN, &mut t).await.is_err() {
            t.abort();
        }
    }
    // Reads and subscriptions still finishing hold the engine for a moment.
    let mut engine = engine;
    let deadline = tokio::time::Instant::now() + DRAIN;
    let engine = loop {
        match Arc::try_unwrap(engine) {
            Ok(e) => break e,
            Err(shared) if tokio::time::Instant::now() < deadline => {
                engine = shared;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(_) => return Err(format!("work was still running {} s after the connections closed; exiting without closing the store (the next start recovers it, losing nothing acknowledged)", DRAIN.as_secs())),
        }
    };
    let stats = engine.stats();
    tracing::info!(
        batches = stats.batches_committed,
        requests = stats.requests_committed,
        events = stats.events_committed,
        requests_per_batch =
            stats.requests_committed as f64 / stats.batches_committed.max(1) as f64,
        log_end = stats.log_end,
        "write totals since start"
    );
    tokio::task::spawn_blocking(move || engine.close())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("closing the store failed: {e}"))?;
    tracing::info!("store closed cleanly");
    Ok(())
}
