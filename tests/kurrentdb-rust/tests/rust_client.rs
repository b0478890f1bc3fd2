//! The official KurrentDB Rust client (`kurrentdb` on crates.io), unchanged but for its
//! connection string, against the real `strata` binary: append, read, a catch-up
//! subscription and a persistent subscription; a category stream read with resolved links.

use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, EventData, PersistentSubscriptionOptions,
    ReadStreamOptions, StreamPosition, StreamState, SubscribeToPersistentSubscriptionOptions,
    SubscribeToStreamOptions,
};
use strata_tests::{rt, Server};

#[test]
fn the_official_rust_client_appends_reads_and_subscribes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let settings: ClientSettings = format!("kurrentdb://{}?tls=false", server.addr)
            .parse()
            .unwrap();
        let client = Client::new(settings).unwrap();

        let ids: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
        let events: Vec<EventData> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                EventData::json("Placed", &serde_json::json!({ "i": i }))
                    .unwrap()
                    .id(*id)
            })
            .collect();
        let written = client
            .append_to_stream(
                "orders-rust",
                &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
                events,
            )
            .await
            .unwrap();
        assert_eq!(written.next_expected_version, 2);

        // A conflicting expectation is refused with the current revision.
        let conflict = client
            .append_to_stream(
                "orders-rust",
                &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
                EventData::json("Placed", &serde_json::json!({ "i": 9 })).unwrap(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(conflict, kurrentdb::Error::WrongExpectedVersion { .. }),
            "{conflict:?}"
        );

        let mut read = client
            .read_stream(
                "orders-rust",
                &ReadStreamOptions::default().position(StreamPosition::Start),
            )
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(e) = read.next().await.unwrap() {
            let e = e.get_original_event();
            assert_eq!(e.event_type, "Placed");
            got.push(e.id);
        }
        assert_eq!(got, ids);

        let mut sub = client
            .subscribe_to_stream(
                "orders-rust",
                &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
            )
            .await;
        for (i, id) in ids.iter().enumerate() {
            let e = sub.next().await.unwrap();
            let e = e.get_original_event();
            assert_eq!((e.revision, e.id), (i as u64, *id));
        }
        client
            .append_to_stream(
                "orders-rust",
                &AppendToStreamOptions::default(),
                EventData::json("Paid", &serde_json::json!({})).unwrap(),
            )
            .await
            .unwrap();
        let live = sub.next().await.unwrap();
        assert_eq!(live.get_original_event().revision, 3);

        client
            .create_persistent_subscription(
                "orders-rust",
                "billing",
                &PersistentSubscriptionOptions::default().start_from(StreamPosition::Start),
            )
            .await
            .unwrap();
        let mut group = client
            .subscribe_to_persistent_subscription(
                "orders-rust",
                "billing",
                &SubscribeToPersistentSubscriptionOptions::default(),
            )
            .await
            .unwrap();
        for r in 0..4u64 {
            let e = group.next().await.unwrap();
            assert_eq!(e.get_original_event().revision, r);
            group.ack(&e).await.unwrap();
        }
    });
}

/// The same client against a secure server: TLS with the CA file in the connection string,
/// admin's credentials in it; without credentials the server refuses, and the client reports
/// access denied.
#[test]
fn the_official_rust_client_works_over_tls_with_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let certs = strata_tests::dev_certs(dir.path(), &[]);
    let flags = strata_tests::tls_flags(&certs);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(["--durability", "no-sync"]);
    let server = Server::start(&dir.path().join("data"), &args);
    let ca = certs.join("ca.pem");
    rt().block_on(async {
        let url = |creds: &str| {
            format!(
                "kurrentdb://{creds}127.0.0.1:{}?tls=true&tlsCAFile={}",
                server.addr.port(),
                ca.display()
            )
        };
        let client = Client::new(url("admin:changeit@").parse().unwrap()).unwrap();
        client
            .append_to_stream(
                "secure-rust",
                &AppendToStreamOptions::default(),
                EventData::json("Placed", &serde_json::json!({ "i": 1 })).unwrap(),
            )
            .await
            .unwrap();
        let mut read = client
            .read_stream(
                "secure-rust",
                &ReadStreamOptions::default().position(StreamPosition::Start),
            )
            .await
            .unwrap();
        let first = read.next().await.unwrap().unwrap();
        assert_eq!(first.get_original_event().event_type, "Placed");

        let anonymous = Client::new(url("").parse().unwrap()).unwrap();
        let refused = anonymous
            .read_stream("secure-rust", &ReadStreamOptions::default())
            .await;
        let refused = match refused {
            Err(e) => e,
            Ok(mut s) => s.next().await.unwrap_err(),
        };
        assert!(
            matches!(refused, kurrentdb::Error::AccessDenied),
            "{refused:?}"
        );
    });
}

/// With every persistent-subscription management method listed in ServerFeatures, the client
/// manages groups over gRPC (it would otherwise fall back to HTTP endpoints Strata does not
/// serve): group info, and `RestartSubsystem`, which drops connected consumers and redelivers
/// what they had not acknowledged.
#[test]
fn the_official_rust_client_manages_groups_and_restarts_the_subsystem() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let settings: ClientSettings = format!("kurrentdb://{}?tls=false", server.addr)
            .parse()
            .unwrap();
        let client = Client::new(settings).unwrap();
        let events: Vec<EventData> = (0..3)
            .map(|i| EventData::json("Placed", &serde_json::json!({ "i": i })).unwrap())
            .collect();
        client
            .append_to_stream("restart-rust", &AppendToStreamOptions::default(), events)
            .await
            .unwrap();
        client
            .create_persistent_subscription(
                "restart-rust",
                "g",
                &PersistentSubscriptionOptions::default().start_from(StreamPosition::Start),
            )
            .await
            .unwrap();
        let info = client
            .get_persistent_subscription_info("restart-rust", "g", &Default::default())
            .await
            .unwrap();
        assert_eq!(info.group_name, "g");

        let mut group = client
            .subscribe_to_persistent_subscription("restart-rust", "g", &Default::default())
            .await
            .unwrap();
        let first = group.next().await.unwrap();
        assert_eq!(first.get_original_event().revision, 0);
        group.ack(&first).await.unwrap();
        let second = group.next().await.unwrap();
        assert_eq!(second.get_original_event().revision, 1);
        // Let the ack of the first arrive before the restart (the client batches acks).
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;

        client
            .restart_persistent_subscription_subsystem(&Default::default())
            .await
            .unwrap();
        let dropped = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                if let Err(e) = group.next().await {
                    return e;
                }
            }
        })
        .await
        .expect("the consumer is dropped by the restart");
        assert!(
            !matches!(dropped, kurrentdb::Error::ResourceNotFound),
            "{dropped:?}"
        );

        // The group is back at once; what was not acknowledged comes again.
        let mut again = client
            .subscribe_to_persistent_subscription("restart-rust", "g", &Default::default())
            .await
            .unwrap();
        let redelivered = again.next().await.unwrap();
        assert_eq!(redelivered.get_original_event().revision, 1);
    });
}

#[test]
fn the_official_rust_client_reads_a_category_with_resolved_links() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--durability", "no-sync", "--derived-streams"],
    );
    rt().block_on(async {
        let settings: ClientSettings = format!("kurrentdb://{}?tls=false", server.addr)
            .parse()
            .unwrap();
        let client = Client::new(settings).unwrap();
        let mut written = Vec::new();
        for stream in ["shop-1", "shop-2", "shop-1"] {
            let id = uuid::Uuid::new_v4();
            client
                .append_to_stream(
                    stream,
                    &AppendToStreamOptions::default(),
                    EventData::json("Bought", &serde_json::json!({}))
                        .unwrap()
                        .id(id),
                )
                .await
                .unwrap();
            written.push((stream, id));
        }
        let mut read = client
            .read_stream(
                "$ce-shop",
                &ReadStreamOptions::default()
                    .position(StreamPosition::Start)
                    .resolve_link_tos(),
            )
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(e) = read.next().await.unwrap() {
            assert!(e.is_resolved(), "{e:?}");
            let link = e.link.as_ref().unwrap();
            let event = e.event.as_ref().unwrap();
            assert_eq!(link.event_type, "$>");
            assert_eq!(link.stream_id(), "$ce-shop");
            assert_eq!(
                &link.data[..],
                format!("{}@{}", event.revision, event.stream_id()).as_bytes()
            );
            got.push((link.revision, event.stream_id().to_owned(), event.id));
        }
        let want: Vec<(u64, String, uuid::Uuid)> = written
            .iter()
            .enumerate()
            .map(|(i, (s, id))| (i as u64, s.to_string(), *id))
            .collect();
        assert_eq!(got, want);
    });
}

/// A three-node cluster with a connection string naming every node: the client finds the
/// leader through gossip, appends and reads; when the leader is deposed (frozen with SIGSTOP
/// while the others elect, then thawed as a follower) the old leader redirects the client to
/// the new one (NOT_FOUND "Leader info available" with the endpoint in trailers), and it goes
/// on; everything it appended is there once. (This client release does not re-discover when
/// the node it is connected to dies: on an error without a leader endpoint it keeps its
/// connection, see docs/compatibility.md; so the leader is deposed here, not killed.)
#[test]
fn the_official_rust_client_finds_the_leader_of_a_cluster_and_follows_a_new_one() {
    use std::time::{Duration, Instant};
    let cluster = strata_tests::cluster::start_cluster(60, |_| vec![]);
    rt().block_on(async {
        let hosts: Vec<String> = cluster.nodes.values().map(|n| n.addr.to_string()).collect();
        let settings: ClientSettings = format!(
            "kurrentdb://{}?tls=false&nodePreference=leader",
            hosts.join(",")
        )
        .parse()
        .unwrap();
        let client = Client::new(settings).unwrap();
        // Appends with fixed IDs, retried until acknowledged (idempotent): the cluster may
        // still be electing at first, and is again after the kill.
        let append = |n: u64| {
            let client = client.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let event = EventData::json("Placed", &serde_json::json!({ "n": n }))
                        .unwrap()
                        .id(uuid::Uuid::from_u64_pair(61, n));
                    match client
                        .append_to_stream(
                            "orders-cluster",
                            &AppendToStreamOptions::default(),
                            event,
                        )
                        .await
                    {
                        Ok(_) => return,
                        Err(e) => {
                            assert!(
                                Instant::now() < deadline,
                                "append {n} not acknowledged within 30 s: {e:?}"
                            );
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        };
        for n in 0..10 {
            append(n).await;
        }
        // The leader is the node that holds the client's appends first; find it by gossip.
        let leader = {
            use strata_kurrentdb_proto::event_store::client::gossip::{
                gossip_client::GossipClient, member_info::VNodeState,
            };
            use strata_kurrentdb_proto::event_store::client::Empty;
            let any = cluster.nodes.values().next().unwrap();
            let info = GossipClient::connect(any.url())
                .await
                .unwrap()
                .read(Empty {})
                .await
                .unwrap()
                .into_inner();
            let leader = info
                .members
                .iter()
                .find(|m| m.state == VNodeState::Leader as i32)
                .expect("a leader in gossip");
            let ep = leader.http_end_point.as_ref().unwrap();
            let addr = format!("{}:{}", ep.address, ep.port);
            *cluster
                .nodes
                .iter()
                .find(|(_, n)| n.addr.to_string() == addr)
                .expect("the leader is a node")
                .0
        };
        let old = &cluster.nodes[&leader];
        old.signal(libc::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(3)).await;
        old.signal(libc::SIGCONT);
        for n in 10..20 {
            append(n).await;
        }
        let mut read = client
            .read_stream(
                "orders-cluster",
                &ReadStreamOptions::default().position(StreamPosition::Start),
            )
            .await
            .unwrap();
        let mut seen = Vec::new();
        while let Some(e) = read.next().await.unwrap() {
            seen.push(e.get_original_event().id);
        }
        let want: Vec<uuid::Uuid> = (0..20).map(|n| uuid::Uuid::from_u64_pair(61, n)).collect();
        assert_eq!(
            seen, want,
            "every append once, in order, after the failover"
        );
    });
}
