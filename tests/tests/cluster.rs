//! Three `strata serve` processes as a cluster on their own loopback addresses (127.0.0.x):
//! 64 writers append through whichever node leads while the leader is killed with SIGKILL;
//! the killed node restarts and catches up. Afterwards every node holds every acknowledged
//! event exactly once, at the position it was acknowledged with, in the same order, and a
//! subscription started on one node from a position continues on another. With mutual TLS,
//! a peer without a certificate from the cluster CA is refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use strata_client::{
    Client, EventData, ExpectedRevision, ReadOptions, SubscribeFrom, SubscriptionMessage,
};
use strata_tests::{rt, Server};
use uuid::Uuid;

/// A free port on `ip` (bound and released: the cluster listeners need known addresses).
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    nodes: BTreeMap<u64, Server>,
    /// The peer listeners, by node.
    peer_addrs: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

/// Node `i` listens for clients on 127.0.0.(base+i) and for peers on the same address.
fn start_cluster(base: u8, extra: impl Fn(u64) -> Vec<String>) -> Cluster {
    let ips: Vec<String> = (1..=3).map(|i| format!("127.0.0.{}", base + i)).collect();
    let peers: Vec<String> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("{}={ip}:{}", i + 1, free_port(ip)))
        .collect();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        let i = id as usize - 1;
        let cluster_listen = peers[i].split_once('=').unwrap().1.to_owned();
        let mut args = vec![
            "--node-id".to_owned(),
            id.to_string(),
            "--cluster-listen".into(),
            cluster_listen,
            "--peers".into(),
            peers.join(","),
        ];
        if id == 1 {
            args.push("--cluster-init".into());
        }
        args.extend(extra(id));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.insert(
            id,
            Server::start_on(dirs[i].path(), &format!("{}:0", ips[i]), &args),
        );
    }
    let peer_addrs = peers
        .iter()
        .map(|p| p.split_once('=').unwrap().1.to_owned())
        .collect();
    Cluster {
        nodes,
        peer_addrs,
        _dirs: dirs,
    }
}

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

/// Appends `event` to `stream` through whichever node accepts it, retrying (same event ID)
/// while no leader acknowledges; returns the acknowledged (revision, position).
async fn append_anywhere(
    clients: &Arc<Mutex<HashMap<u64, Client>>>,
    stream: &str,
    event: EventData,
    deadline: Instant,
) -> Result<(u64, u64), String> {
    let mut last = String::new();
    loop {
        let all: Vec<Client> = clients.lock().unwrap().values().cloned().collect();
        for c in all {
            match c
                .append(stream, ExpectedRevision::Any, vec![event.clone()])
                .await
            {
                Ok(r) => return Ok((r.revision, r.position)),
                Err(e) => last = e.to_string(),
            }
        }
        if Instant::now() > deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Seen = Vec<(String, u64, u64, Uuid)>;

async fn all_events(c: &Client) -> Seen {
    c.read_all(ReadOptions::default())
        .await
        .unwrap()
        .map_ok(|e| (e.stream, e.revision, e.position, e.id))
        .try_collect()
        .await
        .unwrap()
}

#[test]
fn writers_keep_going_through_a_leader_kill_and_every_node_ends_identical() {
    rt().block_on(async {
        let started = Instant::now();
        let mut cluster = start_cluster(20, |_| vec!["--durability".into(), "fsync".into()]);
        eprintln!("cluster started in {:?}", started.elapsed());
        let clients = Arc::new(Mutex::new(clients(&cluster).await));
        let acked: Arc<Mutex<Seen>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..64u64 {
            let (clients, acked, stop) = (clients.clone(), acked.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let stream = format!("w-{w}");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = Uuid::from_u64_pair(w + 1, n);
                    let event = EventData::json("Written", &serde_json::json!({ "w": w, "n": n }))
                        .unwrap()
                        .id(id);
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let (rev, pos) = append_anywhere(&clients, &stream, event, deadline)
                        .await
                        .unwrap_or_else(|e| panic!("writer {w}: event {n} not acknowledged within 30 s; last error: {e}"));
                    acked.lock().unwrap().push((stream.clone(), rev, pos, id));
                    n += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Kill whichever node leads now.
        let leader = {
            let probe = clients.lock().unwrap().clone();
            let mut leader = None;
            for (id, c) in &probe {
                if c.append("probe", ExpectedRevision::Any, vec![EventData::binary("P", vec![])]).await.is_ok() {
                    leader = Some(*id);
                }
            }
            leader.expect("a leader")
        };
        let before = acked.lock().unwrap().len();
        cluster.nodes.get_mut(&leader).unwrap().kill();
        clients.lock().unwrap().remove(&leader);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after_kill = acked.lock().unwrap().len();
        if after_kill == before {
            for (id, n) in &cluster.nodes {
                let logs = n.logs();
                let tail: Vec<&str> = logs.lines().rev().take(15).collect();
                eprintln!("--- node {id}:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
            panic!("no append was acknowledged within 3 s after the leader (node {leader}) was killed");
        }
        // It comes back, and writers go on.
        let node = cluster.nodes.get_mut(&leader).unwrap();
        node.restart();
        let c = client_of(node).await;
        clients.lock().unwrap().insert(leader, c);
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }

        eprintln!("writers stopped at {:?}", started.elapsed());
        // Every node converges on the same events.
        let clients = clients.lock().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let reference = loop {
            let mut views = Vec::new();
            for id in 1..=3 {
                views.push(all_events(&clients[&id]).await);
            }
            if views.windows(2).all(|w| w[0] == w[1]) {
                break views.pop().unwrap();
            }
            assert!(Instant::now() < deadline, "nodes did not converge within 30 s: {} / {} / {} events",
                views[0].len(), views[1].len(), views[2].len());
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let acked = acked.lock().unwrap().clone();
        // Exactly once, where it was acknowledged; dense revisions per stream; log order.
        let ids: HashSet<Uuid> = reference.iter().map(|e| e.3).collect();
        assert_eq!(ids.len(), reference.len(), "an event appears twice");
        let by_id: HashMap<Uuid, (String, u64, u64)> =
            reference.iter().map(|e| (e.3, (e.0.clone(), e.1, e.2))).collect();
        for (stream, rev, pos, id) in &acked {
            assert_eq!(by_id.get(id), Some(&(stream.clone(), *rev, *pos)), "acknowledged event {id} is not where it was acknowledged");
        }
        let mut next: HashMap<&str, u64> = HashMap::new();
        for (stream, rev, _, _) in &reference {
            let n = next.entry(stream.as_str()).or_default();
            assert_eq!(*rev, *n, "revisions of {stream} are not dense");
            *n += 1;
        }
        assert!(reference.windows(2).all(|w| w[0].2 < w[1].2), "positions are not increasing");
        eprintln!("{} events acknowledged ({} before the kill, {} within 3 s after it), {} in the log",
            acked.len(), before, after_kill - before, reference.len());

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
    });
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
        let clients = Arc::new(Mutex::new(clients(&cluster).await));
        let deadline = Instant::now() + Duration::from_secs(30);
        let event = EventData::json("Secure", &serde_json::json!({})).unwrap();
        assert!(
            append_anywhere(&clients, "s-1", event, deadline)
                .await
                .is_ok(),
            "no leader over mutual TLS"
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
