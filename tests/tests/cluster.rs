//! Three `strata serve` processes as a cluster on their own loopback addresses (127.0.0.x):
//! 64 writers append through whichever node leads while the leader is killed with SIGKILL;
//! the killed node restarts and catches up, then a follower loses its data directory and
//! catches up from nothing. Afterwards the history checker finds every acknowledged event
//! exactly once, at the position it was acknowledged with, in real-time order, on every node;
//! a subscription started on one node from a position continues on another; and the nodes'
//! logs, read with all of them frozen at once, are identical byte for byte. With mutual TLS,
//! a peer without a certificate from the cluster CA is refused. Also: consumer groups, gossip
//! and leader reads follow the leader; secure mode. (Partitions: `cluster_partitions.rs`.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use strata_client::{
    Client, EventData, ExpectedRevision, GroupMessage, SubscribeFrom, SubscriptionMessage,
};
use strata_tests::cluster::{
    append_recorded, assert_identical_logs, converged, event, log_tails, start_cluster, Cluster,
};
use strata_tests::history::{History, Outcome};
use strata_tests::{rt, Server};

/// A client that does not retry by itself: the writers choose another node instead.
async fn client_of(n: &Server) -> Client {
    Client::builder(n.url())
        .append_retries(0)
        .connect()
        .await
        .unwrap()
}

async fn clients(c: &Cluster) -> HashMap<u64, Client> {
    let mut out = HashMap::new();
    for (id, n) in &c.nodes {
        out.insert(*id, client_of(n).await);
    }
    out
}

#[test]
fn writers_keep_going_through_a_leader_kill_and_a_wiped_node_and_every_node_ends_identical() {
    rt().block_on(async {
        let started = Instant::now();
        let mut cluster = start_cluster(20, |_| vec!["--durability".into(), "fsync".into()]);
        eprintln!("cluster started in {:?}", started.elapsed());
        let clients = Arc::new(Mutex::new(clients(&cluster).await));
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..64u64 {
            let (clients, history, stop) = (clients.clone(), history.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let stream = format!("w-{w}");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let nodes: Vec<(u64, Client)> = clients.lock().unwrap().iter().map(|(id, c)| (*id, c.clone())).collect();
                    let outcome = append_recorded(&history, &nodes, &stream, ExpectedRevision::Any, event(w, n), Duration::from_secs(30)).await;
                    if let Outcome::Unknown(e) = outcome {
                        panic!("writer {w}: event {n} not acknowledged within 30 s; last error: {e}");
                    }
                    n += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Kill whichever node leads now.
        let leader = leader_of(&clients).await;
        let before = history.acked();
        let killed_at = history.now();
        cluster.nodes.get_mut(&leader).unwrap().kill();
        clients.lock().unwrap().remove(&leader);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after_kill = history.acked();
        if after_kill == before {
            panic!("no append was acknowledged within 3 s after the leader (node {leader}) was killed\n{}",
                log_tails(cluster.nodes.iter().map(|(id, n)| (*id, n)), 15));
        }
        assert_eq!(history.acked_by_since(leader, killed_at), 0, "the killed node acknowledged appends");
        // It comes back, and writers go on.
        let node = cluster.nodes.get_mut(&leader).unwrap();
        node.restart();
        let c = client_of(node).await;
        clients.lock().unwrap().insert(leader, c);
        tokio::time::sleep(Duration::from_secs(1)).await;

        // A follower (not the one that initialised the cluster) loses its disk: it comes back
        // empty and catches up from the leader's log while the writers go on.
        let leader = leader_of(&clients).await;
        let wiped = (2..=3).find(|&n| n != leader).unwrap();
        let node = cluster.nodes.get_mut(&wiped).unwrap();
        node.kill();
        clients.lock().unwrap().remove(&wiped);
        std::fs::remove_dir_all(&node.dir).unwrap();
        std::fs::create_dir(&node.dir).unwrap();
        node.restart();
        let c = client_of(node).await;
        clients.lock().unwrap().insert(wiped, c);
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }

        eprintln!("writers stopped at {:?}", started.elapsed());
        // Every node converges on the same events, which hold every acknowledged append once,
        // where and in the order it was acknowledged.
        let clients = clients.lock().unwrap().clone();
        let nodes: Vec<(u64, Client)> = (1..=3).map(|id| (id, clients[&id].clone())).collect();
        let reference = converged(&nodes, Duration::from_secs(60)).await.unwrap_or_else(|e| {
            panic!("{e} (node {wiped} was wiped)\n{}", log_tails(cluster.nodes.iter().map(|(id, n)| (*id, n)), 30))
        });
        // The probes that found the leader are the only events no writer appended.
        let log: Vec<_> = reference.iter().filter(|e| e.0 != "probe").cloned().collect();
        let summary = history.check(&log).unwrap_or_else(|v| panic!("the history has violations: {v}"));
        eprintln!("{} events acknowledged ({} before the kill, {} within 3 s after it), {} in the log",
            summary.acked, before, after_kill - before, reference.len());

        // A subscription moves between nodes by position.
        let middle = reference[reference.len() / 2].2;
        let mut first = clients[&1].subscribe("$all", SubscribeFrom::AfterPosition(middle), None).await.unwrap();
        let mut last_seen = middle;
        for _ in 0..10 {
            if let Some(Ok(SubscriptionMessage::Event(e))) = first.next().await {
                last_seen = e.position;
            }
        }
        drop(first);
        let mut second = clients[&2].subscribe("$all", SubscribeFrom::AfterPosition(last_seen), None).await.unwrap();
        let want = reference.iter().find(|e| e.2 > last_seen).unwrap();
        match second.next().await {
            Some(Ok(SubscriptionMessage::Event(e))) => assert_eq!((e.id, e.position), (want.3, want.2)),
            other => panic!("unexpected {other:?}"),
        }

        // The three logs are the same bytes (the wiped node's included).
        let nodes: Vec<(u64, &Server)> = cluster.nodes.iter().map(|(id, n)| (*id, n)).collect();
        assert_identical_logs(&nodes);
    });
}

/// KurrentDB gossip as `node` answers it: (state, alive, "host:port") per member.
async fn gossip(node: &Server) -> Vec<(i32, bool, String)> {
    use strata_kurrentdb_proto::event_store::client::{gossip::gossip_client::GossipClient, Empty};
    let mut g = GossipClient::connect(node.url()).await.unwrap();
    let info = g.read(Empty {}).await.unwrap().into_inner();
    info.members
        .into_iter()
        .map(|m| {
            let ep = m.http_end_point.unwrap();
            (m.state, m.is_alive, format!("{}:{}", ep.address, ep.port))
        })
        .collect()
}

/// The node that takes an append now (a probe event, on its own stream).
async fn leader_of(clients: &Arc<Mutex<HashMap<u64, Client>>>) -> u64 {
    let probe = clients.lock().unwrap().clone();
    for (id, c) in &probe {
        if c.append(
            "probe",
            ExpectedRevision::Any,
            vec![EventData::binary("P", vec![])],
        )
        .await
        .is_ok()
        {
            return *id;
        }
    }
    panic!("no node takes appends");
}

#[test]
fn peers_need_a_certificate_from_the_cluster_ca() {
    let certs_dir = tempfile::tempdir().unwrap();
    let out = certs_dir.path().join("certs");
    let done = std::process::Command::new(strata_tests::strata_bin())
        .args(["certs", "dev", "--out"])
        .arg(&out)
        .args([
            "--host",
            "127.0.0.31",
            "--host",
            "127.0.0.32",
            "--host",
            "127.0.0.33",
        ])
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let f = |n: &str| out.join(n).display().to_string();
    rt().block_on(async {
        let cluster = start_cluster(30, |_| {
            vec![
                "--cluster-tls-cert".into(),
                f("node.pem"),
                "--cluster-tls-key".into(),
                f("node.key"),
                "--cluster-tls-ca".into(),
                f("ca.pem"),
            ]
        });
        let clients = clients(&cluster).await;
        let nodes: Vec<(u64, Client)> = clients.into_iter().collect();
        let history = History::default();
        let event = EventData::json("Secure", &serde_json::json!({})).unwrap();
        let outcome = append_recorded(
            &history,
            &nodes,
            "s-1",
            ExpectedRevision::Any,
            event,
            Duration::from_secs(30),
        )
        .await;
        assert!(
            matches!(outcome, Outcome::Acked { .. }),
            "no leader over mutual TLS: {outcome:?}"
        );
        // A peer that trusts the CA but shows no certificate of its own gets nowhere.
        let peer_addr = &cluster.peer_addrs[0];
        let ca = std::fs::read(out.join("ca.pem")).unwrap();
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca));
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{peer_addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await;
        let refused = match channel {
            Err(_) => true,
            Ok(ch) => strata_proto::cluster::raft_client::RaftClient::new(ch)
                .vote(strata_proto::cluster::VoteRequest {
                    request: b"{}".to_vec().into(),
                    pre_vote: false,
                })
                .await
                .is_err(),
        };
        assert!(refused, "a peer without a client certificate was let in");
    });
}

/// What follows the leader. KurrentDB gossip on every node lists every member, the leader
/// as such, and marks a dead one; a follower redirects leader reads to the leader's endpoint.
/// Consumer groups run on the leader only: a follower refuses them; after the leader is
/// killed the next leader resumes each group from its last checkpoint (messages acked since
/// may come again, none is skipped); a leader that is deposed ends its consumers with
/// UNAVAILABLE so they reconnect to the new one.
#[test]
fn gossip_leader_reads_and_consumer_groups_follow_the_leader() {
    rt().block_on(async {
        let mut cluster = start_cluster(40, |_| vec![]);
        let clients = Arc::new(Mutex::new(clients(&cluster).await));
        let nodes: Vec<(u64, Client)> = clients.lock().unwrap().iter().map(|(id, c)| (*id, c.clone())).collect();
        let history = History::default();
        let mut ids = Vec::new();
        for n in 0..100 {
            let e = event(0, n);
            ids.push(e.id);
            let outcome = append_recorded(&history, &nodes, "orders-1", ExpectedRevision::Any, e, Duration::from_secs(30)).await;
            assert!(matches!(outcome, Outcome::Acked { .. }), "{outcome:?}");
        }
        let leader = leader_of(&clients).await;
        let all = clients.lock().unwrap().clone();
        let follower = *all.keys().find(|&&id| id != leader).unwrap();

        // KurrentDB gossip on every node names every member where clients reach it, and the
        // leader as the one that takes appends.
        use strata_kurrentdb_proto::event_store::client::gossip::member_info::VNodeState;
        let addrs: HashMap<u64, String> = cluster.nodes.iter().map(|(id, n)| (*id, n.addr.to_string())).collect();
        let addr_of = |id: u64| addrs[&id].clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        for id in 1..=3 {
            loop {
                let mut members = gossip(&cluster.nodes[&id]).await;
                members.sort_by(|a, b| a.2.cmp(&b.2));
                let mut want: Vec<(i32, bool, String)> = (1..=3)
                    .map(|n| {
                        let state = if n == leader { VNodeState::Leader } else { VNodeState::Follower };
                        (state as i32, true, addr_of(n))
                    })
                    .collect();
                want.sort_by(|a, b| a.2.cmp(&b.2));
                if members == want {
                    break;
                }
                assert!(Instant::now() < deadline, "node {id}'s gossip: {members:?}, expected {want:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }

        // A read that requires the leader: a follower points at the leader as KurrentDB does
        // (NOT_FOUND "Leader info available" with the leader's endpoint in trailers); the
        // leader answers it.
        let mut raw = strata_proto::v1::streams_client::StreamsClient::connect(cluster.nodes[&follower].url()).await.unwrap();
        let mut req = tonic::Request::new(strata_proto::v1::ReadRequest { stream: "orders-1".into(), ..Default::default() });
        req.metadata_mut().insert("requires-leader", "true".parse().unwrap());
        let status = match raw.read(req).await {
            Err(s) => s,
            Ok(r) => match r.into_inner().message().await {
                Err(s) => s,
                other => panic!("a follower served a leader read: {other:?}"),
            },
        };
        assert_eq!((status.code(), status.message()), (tonic::Code::NotFound, "Leader info available"));
        let trailer = |k: &str| status.metadata().get(k).map(|v| v.to_str().unwrap().to_owned());
        let (host, port) = addr_of(leader).rsplit_once(':').map(|(h, p)| (h.to_owned(), p.to_owned())).unwrap();
        assert_eq!((trailer("leader-endpoint-host"), trailer("leader-endpoint-port")), (Some(host), Some(port)));
        assert_eq!(trailer("exception").as_deref(), Some("not-leader"));
        let leader_read = |c: Client| async move {
            c.read_stream("orders-1", strata_client::ReadOptions::default().require_leader()).await?.try_collect::<Vec<_>>().await
        };
        assert_eq!(leader_read(all[&leader].clone()).await.unwrap().len(), 100);

        let refused = all[&follower].create_group("orders-1", "billing", strata_tests::group_from_start()).await.unwrap_err();
        assert!(
            matches!(&refused, strata_client::Error::Server { code: tonic::Code::FailedPrecondition, message } if message.contains("leader")),
            "a follower answered a group creation with {refused:?}"
        );

        let settings = strata_client::GroupSettings {
            checkpoint_after_count: Some(10),
            checkpoint_after: Some(Duration::from_millis(100)),
            ..strata_tests::group_from_start()
        };
        all[&leader].create_group("orders-1", "billing", settings).await.unwrap();
        let mut consumer = all[&leader].consume_group("orders-1", "billing", 10).await.unwrap();
        let mut delivered = std::collections::HashSet::new();
        for _ in 0..60 {
            let Some(Ok(GroupMessage::Event(e))) = consumer.next().await else { panic!("the group stopped delivering") };
            consumer.ack(&[e.event.id]).await.unwrap();
            delivered.insert(e.event.id);
        }
        // Let the checkpoint (every 10 settled messages) commit, then kill the leader.
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.nodes.get_mut(&leader).unwrap().kill();
        clients.lock().unwrap().remove(&leader);
        drop(consumer);

        // Gossip on a survivor reports the dead member as not alive, and another leader.
        let survivor = &cluster.nodes[&follower];
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let members = gossip(survivor).await;
            let dead = members.iter().find(|m| m.2 == addr_of(leader)).map(|m| m.1);
            let leaders: Vec<&String> = members.iter().filter(|m| m.0 == VNodeState::Leader as i32 && m.1).map(|m| &m.2).collect();
            if dead == Some(false) && leaders.len() == 1 && *leaders[0] != addr_of(leader) {
                break;
            }
            assert!(Instant::now() < deadline, "gossip after the leader's death: {members:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // The next leader runs the group from its checkpoint.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (next, mut consumer) = loop {
            let live = clients.lock().unwrap().clone();
            let mut found = None;
            for (id, c) in &live {
                if let Ok(consumer) = c.consume_group("orders-1", "billing", 10).await {
                    found = Some((*id, consumer));
                    break;
                }
            }
            if let Some(f) = found {
                break f;
            }
            assert!(Instant::now() < deadline, "no node ran the group within 30 s of the leader's death");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut first = None;
        while delivered.len() < ids.len() {
            let m = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await;
            let Ok(Some(Ok(GroupMessage::Event(e)))) = m else {
                panic!("the group on node {next} stopped after {} of {} events: {m:?}", delivered.len(), ids.len())
            };
            first.get_or_insert(e.event.revision);
            consumer.ack(&[e.event.id]).await.unwrap();
            delivered.insert(e.event.id);
        }
        let first = first.unwrap();
        eprintln!("node {next} resumed the group at revision {first}");
        assert!((50..=60).contains(&first), "the new leader resumed the group at revision {first}, not from the checkpoint (50..=60)");

        // Deposed (frozen while the others elect), the leader ends its consumers: reconnect.
        let node = &cluster.nodes[&next];
        node.signal(libc::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(3)).await;
        node.signal(libc::SIGCONT);
        match tokio::time::timeout(Duration::from_secs(15), consumer.next()).await {
            Ok(Some(Err(strata_client::Error::Unavailable(m)))) => assert!(m.contains("no longer the cluster's leader"), "{m}"),
            other => panic!("a deposed leader's consumer got {other:?}"),
        }
    });
}

/// Secure mode on a cluster: TLS and credentials for clients on every node. The leader
/// creates the initial accounts; an account created, changed or deleted through the leader
/// takes effect on every node (each learns accounts from its log).
#[test]
fn accounts_made_on_the_leader_work_on_every_node_in_secure_mode() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = certs_dir.path().join("certs");
    let made = std::process::Command::new(strata_tests::strata_bin())
        .args(["certs", "dev", "--out"])
        .arg(&certs)
        .args([
            "--host",
            "127.0.0.51",
            "--host",
            "127.0.0.52",
            "--host",
            "127.0.0.53",
        ])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let f = |n: &str| certs.join(n).display().to_string();
    rt().block_on(async {
        let cluster = start_cluster(50, |_| {
            let mut args = strata_tests::tls_flags(&certs);
            for (flag, file) in [("--cluster-tls-cert", "node.pem"), ("--cluster-tls-key", "node.key"), ("--cluster-tls-ca", "ca.pem")] {
                args.push(flag.into());
                args.push(f(file));
            }
            args
        });
        let as_user = |user: Option<(&'static str, &'static str)>| {
            let certs = certs.clone();
            let nodes: Vec<(u64, String)> = cluster.nodes.iter().map(|(id, n)| (*id, n.https_url())).collect();
            async move {
                let mut out = Vec::new();
                for (id, url) in nodes {
                    let mut b = Client::builder(url).tls_ca_file(certs.join("ca.pem")).unwrap().append_retries(0);
                    if let Some((u, p)) = user {
                        b = b.credentials(u, p);
                    }
                    out.push((id, b.connect().await.unwrap()));
                }
                out
            }
        };
        // The initial admin exists once a leader has written it.
        let admin = as_user(Some(("admin", "changeit"))).await;
        let history = History::default();
        let event = EventData::json("Secure", &serde_json::json!({})).unwrap();
        let outcome = append_recorded(&history, &admin, "secure-1", ExpectedRevision::Any, event, Duration::from_secs(30)).await;
        let Outcome::Acked { node: leader, .. } = outcome else { panic!("admin could not append: {outcome:?}") };
        let leader_client = admin.iter().find(|(id, _)| *id == leader).unwrap().1.clone();

        // Anonymous callers are refused everywhere.
        for (id, c) in as_user(None).await {
            let r = strata_tests::cluster::stream_events(&c, "secure-1").await;
            assert!(matches!(r, Err(strata_client::Error::Unauthenticated(_))), "node {id} let an anonymous read through: {r:?}");
        }

        // An account made on the leader works on every node; so do its changes.
        leader_client.create_user("carol", "carol-pass-1", "Carol", &[]).await.unwrap();
        let works_everywhere = |user: (&'static str, &'static str), want: bool| {
            async move {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let mut all = true;
                    for (_, c) in as_user(Some(user)).await {
                        let ok = strata_tests::cluster::stream_events(&c, "secure-1").await.is_ok();
                        all &= ok == want;
                    }
                    if all {
                        return;
                    }
                    assert!(Instant::now() < deadline, "{user:?} did not become {} on every node within 10 s", if want { "valid" } else { "invalid" });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        works_everywhere(("carol", "carol-pass-1"), true).await;
        leader_client.reset_password("carol", "carol-pass-2").await.unwrap();
        works_everywhere(("carol", "carol-pass-1"), false).await;
        works_everywhere(("carol", "carol-pass-2"), true).await;
        leader_client.delete_user("carol").await.unwrap();
        works_everywhere(("carol", "carol-pass-2"), false).await;

        // A follower does not manage accounts itself: it names the leader.
        let (_, follower) = admin.iter().find(|(id, _)| *id != leader).unwrap();
        let refused = follower.create_user("dave", "dave-pass-1", "Dave", &[]).await.unwrap_err();
        assert!(matches!(&refused, strata_client::Error::Server { code: tonic::Code::FailedPrecondition, message } if message.contains("leader")), "{refused:?}");
    });
}
