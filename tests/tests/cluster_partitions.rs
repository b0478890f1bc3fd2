//! Three `strata serve` processes, each in its own network namespace (10.213.0.1–3, joined by
//! veth links to a bridge; see `strata_tests::netns`), with mutual TLS between them. Writers
//! append with expected revisions to a few shared streams and readers read them from any node,
//! every operation recorded in a history, while rounds chosen by a fixed seed break the
//! network: the leader isolated in a minority, a follower isolated, one link cut (a
//! non-transitive split), a flapping link, packet loss, a slow link, and a node killed with
//! SIGKILL in the middle of an election. After the network heals, the history checker holds
//! every answer against the log all nodes end with, and the nodes' log files are compared byte
//! for byte.
//!
//! Needs root (network namespaces, iptables, tc).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_client::{Client, ExpectedRevision, ReadOptions};
use strata_tests::cluster::{
    append_recorded, assert_identical_logs, converged, event, log_tails, stream_events,
};
use strata_tests::history::{History, Outcome};
use strata_tests::netns::Lab;
use strata_tests::{rt, Server};

const SEED: u64 = 0x5EED_0015;
const STREAMS: u64 = 6;
const WRITERS: u64 = 12;

/// xorshift64*: the rounds and the writers' choices, repeatable from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    IsolateLeader,
    IsolateFollower,
    CutLink,
    FlappingLink,
    PacketLoss,
    SlowLeader,
    KillDuringElection,
}

const FAULTS: [Fault; 7] = [
    Fault::IsolateLeader,
    Fault::IsolateFollower,
    Fault::CutLink,
    Fault::FlappingLink,
    Fault::PacketLoss,
    Fault::SlowLeader,
    Fault::KillDuringElection,
];

async fn connect(node: &Server) -> Client {
    Client::builder(node.url())
        .append_retries(0)
        .timeout(Some(Duration::from_secs(4)))
        .connect()
        .await
        .unwrap()
}

/// The nodes in the order to try them: the one that acknowledged last first.
fn by_hint(clients: &[(u64, Client)], hint: u64) -> Vec<(u64, Client)> {
    let mut v = clients.to_vec();
    v.sort_by_key(|(id, _)| *id != hint);
    v
}

/// The last revision of `stream` as some node serves it.
async fn last_revision(clients: &[(u64, Client)], stream: &str) -> Option<ExpectedRevision> {
    for (_, c) in clients {
        let opts = ReadOptions::default().backwards().max_count(1);
        if let Ok(events) = stream_events_with(c, stream, opts).await {
            return Some(match events.first() {
                Some(e) => ExpectedRevision::Exact(e.1),
                None => ExpectedRevision::NoStream,
            });
        }
    }
    None
}

/// A whole stream, read with `opts` (empty if it has no events).
async fn read_with(
    c: &Client,
    stream: &str,
    opts: ReadOptions,
) -> Result<Vec<strata_tests::history::Seen>, strata_client::Error> {
    use futures::TryStreamExt;
    match c.read_stream(stream, opts).await {
        Ok(s) => {
            s.map_ok(|e| (e.stream, e.revision, e.position, e.id))
                .try_collect()
                .await
        }
        Err(strata_client::Error::StreamNotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

async fn stream_events_with(
    c: &Client,
    stream: &str,
    opts: ReadOptions,
) -> Result<Vec<(String, u64)>, strata_client::Error> {
    use futures::TryStreamExt;
    match c.read_stream(stream, opts).await {
        Ok(s) => s.map_ok(|e| (e.stream, e.revision)).try_collect().await,
        Err(strata_client::Error::StreamNotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[test]
fn partitions_lose_no_acknowledged_append_and_every_node_ends_identical() {
    let lab = Lab::new(3);
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = certs_dir.path().join("certs");
    let made = std::process::Command::new(strata_tests::strata_bin())
        .args(["certs", "dev", "--out"])
        .arg(&certs)
        .args([
            "--host",
            &Lab::addr(1),
            "--host",
            &Lab::addr(2),
            "--host",
            &Lab::addr(3),
        ])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let f = |n: &str| certs.join(n).display().to_string();
    let peers: Vec<String> = (1..=3)
        .map(|i| format!("{i}={}:2114", Lab::addr(i)))
        .collect();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: HashMap<u64, Server> = HashMap::new();
    for i in 1..=3usize {
        let mut args = vec![
            "--node-id".to_owned(),
            i.to_string(),
            "--cluster-listen".into(),
            format!("{}:2114", Lab::addr(i)),
            "--peers".into(),
            peers.join(","),
            "--cluster-tls-cert".into(),
            f("node.pem"),
            "--cluster-tls-key".into(),
            f("node.key"),
            "--cluster-tls-ca".into(),
            f("ca.pem"),
            "--commit-timeout".into(),
            "2s".into(),
            "--insecure".into(),
        ];
        if i == 1 {
            args.push("--cluster-init".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let listen = format!("{}:2113", Lab::addr(i));
        nodes.insert(
            i as u64,
            Server::start_in_netns(dirs[i - 1].path(), &listen, &args, &Lab::netns(i)),
        );
    }

    rt().block_on(async {
        let mut clients: Vec<(u64, Client)> = Vec::new();
        for id in 1..=3u64 {
            clients.push((id, connect(&nodes[&id]).await));
        }
        let clients = Arc::new(clients);
        let history = Arc::new(History::default());
        let hint = Arc::new(AtomicU64::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (clients, history, hint, stop) =
                (clients.clone(), history.clone(), hint.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(SEED ^ (w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let mut belief: HashMap<String, ExpectedRevision> = HashMap::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let stream = format!("acct-{}", rng.below(STREAMS));
                    let expected = *belief.entry(stream.clone()).or_insert(ExpectedRevision::NoStream);
                    let order = by_hint(&clients, hint.load(Ordering::Relaxed));
                    let outcome = append_recorded(&history, &order, &stream, expected, event(w, n), Duration::from_secs(15)).await;
                    n += 1;
                    match outcome {
                        Outcome::Acked { revision, node, .. } => {
                            hint.store(node, Ordering::Relaxed);
                            belief.insert(stream, ExpectedRevision::Exact(revision));
                        }
                        Outcome::Refused(_) | Outcome::Unknown(_) => {
                            if let Some(r) = last_revision(&order, &stream).await {
                                belief.insert(stream, r);
                            }
                        }
                    }
                }
            }));
        }
        for r in 0..2u64 {
            let (clients, history, stop) = (clients.clone(), history.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(SEED ^ (100 + r));
                while !stop.load(Ordering::Relaxed) {
                    let (node, c) = &clients[rng.below(3) as usize];
                    let stream = format!("acct-{}", rng.below(STREAMS));
                    let invoked = history.now();
                    // Reader 0 asks for the leader (requires-leader): whichever node answers
                    // must have confirmed it leads, so the read is linearizable.
                    if r == 0 {
                        let opts = ReadOptions::default().require_leader();
                        if let Ok(events) = read_with(c, &stream, opts).await {
                            history.read_from_leader(&stream, *node, invoked, events);
                        }
                    } else if let Ok(events) = stream_events(c, &stream).await {
                        history.read(&stream, *node, invoked, events);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }

        let sleep = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
        sleep(2000).await;
        // Every kind of fault once, in an order the seed picks, then two picked at random.
        let mut rng = Rng(SEED);
        let mut rounds = FAULTS.to_vec();
        for i in (1..rounds.len()).rev() {
            rounds.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for _ in 0..2 {
            rounds.push(FAULTS[rng.below(FAULTS.len() as u64) as usize]);
        }
        for (round, fault) in rounds.into_iter().enumerate() {
            let leader = hint.load(Ordering::Relaxed) as usize;
            let follower = [1, 2, 3].into_iter().filter(|&n| n != leader).nth(rng.below(2) as usize).unwrap();
            let acked_before = history.acked();
            eprintln!("round {round}: {fault:?} (leader is node {leader}) at {:?}", history.now());
            match fault {
                Fault::IsolateLeader => {
                    lab.isolate(leader);
                    let since = history.now();
                    sleep(6000).await;
                    let by_old = history.acked_by_since(leader as u64, since);
                    let by_others: usize = (1..=3).filter(|&n| n != leader as u64).map(|n| history.acked_by_since(n, since)).sum();
                    assert_eq!(by_old, 0, "the isolated leader (node {leader}) acknowledged {by_old} appends invoked after it was cut off");
                    assert!(by_others > 0, "the majority did not elect a leader and go on within 6 s of the leader's isolation");
                }
                Fault::IsolateFollower => {
                    lab.isolate(follower);
                    sleep(4000).await;
                }
                Fault::CutLink => {
                    // The leader loses one follower but keeps the other: still a majority.
                    lab.cut(leader, follower);
                    sleep(4000).await;
                }
                Fault::FlappingLink => {
                    for _ in 0..8 {
                        lab.cut(leader, follower);
                        sleep(200 + rng.below(400)).await;
                        lab.heal();
                        sleep(200 + rng.below(400)).await;
                    }
                }
                Fault::PacketLoss => {
                    for n in 1..=3 {
                        lab.lossy(n, 0.2);
                    }
                    sleep(4000).await;
                }
                Fault::SlowLeader => {
                    lab.slow(leader, "1mbit");
                    sleep(4000).await;
                }
                Fault::KillDuringElection => {
                    // Cut the leader off; while the other two elect, kill one of them and
                    // bring it back on the Raft state it had written by then.
                    lab.isolate(leader);
                    sleep(300 + rng.below(400)).await;
                    let victim = nodes.get_mut(&(follower as u64)).unwrap();
                    victim.kill();
                    sleep(500).await;
                    victim.restart();
                    sleep(4000).await;
                }
            }
            lab.heal();
            sleep(2000).await;
            let acked_after = history.acked();
            eprintln!("  {} appends acknowledged during the round", acked_after - acked_before);
            if acked_after == acked_before {
                panic!("no append was acknowledged in round {round} ({fault:?}), 2 s after healing\n{}",
                    log_tails(nodes.iter().map(|(id, n)| (*id, n)), 25));
            }
        }

        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        let log = converged(&clients, Duration::from_secs(60)).await.unwrap_or_else(|e| {
            panic!("{e}\n{}", log_tails(nodes.iter().map(|(id, n)| (*id, n)), 30))
        });
        let summary = history.check(&log).unwrap_or_else(|v| panic!("the history has violations: {v}"));
        eprintln!("history: {summary:?}, {} events in the log", log.len());
        assert!(summary.acked >= 500, "only {} appends acknowledged", summary.acked);
        assert!(summary.reads >= 100, "only {} reads", summary.reads);
        assert!(summary.leader_reads >= 20, "only {} leader reads", summary.leader_reads);
    });

    let running: Vec<(u64, &Server)> = (1..=3u64).map(|i| (i, &nodes[&i])).collect();
    assert_identical_logs(&running);
    drop(lab);
}
