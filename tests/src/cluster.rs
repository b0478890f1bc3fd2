//! Helpers for tests of a cluster of real `strata serve` processes: appending through
//! whichever node leads (recording every operation in a [`History`]), waiting until every
//! node shows the same `$all`, and comparing the nodes' log files byte for byte.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use strata_client::{Client, Error, EventData, ExpectedRevision, ReadOptions};
use tonic::Code;
use uuid::Uuid;

use crate::history::{History, Outcome, Seen};

/// A free port on `ip` (bound and released: the cluster listeners need known addresses).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three `strata serve` processes run as one cluster on loopback (see [`start_cluster`]).
pub struct Cluster {
    pub nodes: BTreeMap<u64, crate::Server>,
    /// The peer listeners, by node.
    pub peer_addrs: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

/// Node `i` listens for clients on 127.0.0.(base+i) and for peers on the same address.
pub fn start_cluster(base: u8, extra: impl Fn(u64) -> Vec<String>) -> Cluster {
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
            crate::Server::start_on(dirs[i].path(), &format!("{}:0", ips[i]), &args),
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

/// A client of one node that does not retry by itself: cluster tests choose another node.
pub async fn client_of(n: &crate::Server) -> Client {
    Client::builder(n.url())
        .append_retries(0)
        .connect()
        .await
        .unwrap()
}

/// The clients writers use, by node; tests add and remove nodes as they go.
pub type Clients = Arc<Mutex<HashMap<u64, Client>>>;

/// Writers appending without pause, each to its own stream, through whichever node takes an
/// append ([`append_recorded`]), recording every operation in a [`History`]. A writer panics
/// if an append's outcome stays unknown for 30 s.
pub struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// Starts `n` writers on streams `<prefix>-0`, `<prefix>-1`, ...
    pub fn start(clients: &Clients, history: &Arc<History>, n: u64, prefix: &str) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|w| {
                let (clients, history, stop) = (clients.clone(), history.clone(), stop.clone());
                let stream = format!("{prefix}-{w}");
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let nodes: Vec<(u64, Client)> = {
                            let c = clients.lock().unwrap();
                            c.iter().map(|(id, c)| (*id, c.clone())).collect()
                        };
                        let outcome = append_recorded(
                            &history,
                            &nodes,
                            &stream,
                            ExpectedRevision::Any,
                            event(w, n),
                            Duration::from_secs(30),
                        )
                        .await;
                        if let Outcome::Unknown(e) = outcome {
                            panic!("writer {w}: event {n} not acknowledged within 30 s; last error: {e}");
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Writers { stop, tasks }
    }

    /// Stops the writers once their appends in flight are answered.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

/// Appends one event through whichever of `nodes` accepts it, retrying with the same event ID
/// (idempotent) until `give_up`, and records the operation in `history`. A follower's "not the
/// leader" refusal moves on to the next node; an answer that leaves the outcome open (timeout,
/// UNAVAILABLE, a lost connection) makes the whole operation's outcome unknown unless a retry
/// is acknowledged.
pub async fn append_recorded(
    history: &History,
    nodes: &[(u64, Client)],
    stream: &str,
    expected: ExpectedRevision,
    event: EventData,
    give_up: Duration,
) -> Outcome {
    let invoked = history.now();
    let deadline = Instant::now() + give_up;
    let id = event.id;
    let mut open: Option<String> = None;
    let outcome = 'attempts: loop {
        for (node, c) in nodes {
            match c.append(stream, expected, vec![event.clone()]).await {
                Ok(r) => {
                    break 'attempts Outcome::Acked {
                        revision: r.revision,
                        position: r.position,
                        node: *node,
                    }
                }
                Err(e @ Error::WrongExpectedRevision { .. }) => {
                    break 'attempts match open {
                        None => Outcome::Refused(e.to_string()),
                        Some(earlier) => Outcome::Unknown(format!("{e}, after {earlier}")),
                    };
                }
                Err(Error::Server {
                    code: Code::FailedPrecondition,
                    ..
                }) => {}
                Err(e) => open = Some(format!("node {node}: {e}")),
            }
        }
        if Instant::now() > deadline {
            break Outcome::Unknown(open.unwrap_or_else(|| "no node took the append".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    history.append(stream, expected, id, invoked, outcome.clone());
    outcome
}

/// Every event of `$all` as `c` serves it.
pub async fn all_events(c: &Client) -> Result<Vec<Seen>, Error> {
    c.read_all(ReadOptions::default())
        .await?
        .map_ok(|e| (e.stream, e.revision, e.position, e.id))
        .try_collect()
        .await
}

/// Every event of `stream` as `c` serves it (empty if it has none).
pub async fn stream_events(c: &Client, stream: &str) -> Result<Vec<Seen>, Error> {
    match c.read_stream(stream, ReadOptions::default()).await {
        Ok(s) => {
            s.map_ok(|e| (e.stream, e.revision, e.position, e.id))
                .try_collect()
                .await
        }
        Err(Error::StreamNotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Waits (at most `within`) until every node serves the same `$all`, and returns it; or says
/// how far apart the nodes stayed.
pub async fn converged(nodes: &[(u64, Client)], within: Duration) -> Result<Vec<Seen>, String> {
    let deadline = Instant::now() + within;
    loop {
        let mut views = Vec::new();
        for (_, c) in nodes {
            views.push(all_events(c).await.unwrap_or_default());
        }
        if views.windows(2).all(|w| w[0] == w[1]) && !views[0].is_empty() {
            return Ok(views.pop().unwrap());
        }
        if Instant::now() > deadline {
            let sizes: Vec<usize> = views.iter().map(Vec::len).collect();
            return Err(format!(
                "nodes did not converge within {within:?}: {sizes:?} events"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The records of a node's log: every segment under `dir`, in log order, without its header.
pub fn log_bytes(dir: &Path) -> Vec<u8> {
    fn segments(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                segments(&p, out);
            } else if p.extension().is_some_and(|x| x == "seg") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    segments(dir, &mut files);
    files.sort_by_key(|p| p.file_name().unwrap().to_owned());
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        out.extend_from_slice(&bytes[strata_engine::format::SEGMENT_HEADER_LEN as usize..]);
    }
    out
}

/// Asserts that the running nodes' logs are identical byte for byte. Each attempt freezes
/// every node with SIGSTOP (so no election can append a new leader's entry to some logs and
/// not others, as stopping them one by one would let happen), compares, and thaws them; an
/// entry still on its way to a follower makes an attempt differ, so up to 40 attempts are
/// made, 250 ms apart.
pub fn assert_identical_logs(nodes: &[(u64, &crate::Server)]) {
    let mut last = String::new();
    for _ in 0..40 {
        for (_, n) in nodes {
            n.signal(libc::SIGSTOP);
        }
        let logs: Vec<(u64, Vec<u8>)> = nodes
            .iter()
            .map(|(id, n)| (*id, log_bytes(&n.dir)))
            .collect();
        for (_, n) in nodes {
            n.signal(libc::SIGCONT);
        }
        let (first, reference) = &logs[0];
        assert!(!reference.is_empty(), "node {first} has an empty log");
        match logs[1..].iter().find(|(_, other)| other != reference) {
            None => return,
            Some((node, other)) => {
                let at = reference
                    .iter()
                    .zip(other)
                    .position(|(a, b)| a != b)
                    .unwrap_or(reference.len().min(other.len()));
                last = format!(
                    "the logs of node {first} ({} bytes) and node {node} ({} bytes) differ from byte {at}",
                    reference.len(),
                    other.len()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{last} (for 10 s)");
}

/// The last `lines` lines of each node's log, for a failure message.
pub fn log_tails<'a>(
    nodes: impl IntoIterator<Item = (u64, &'a crate::Server)>,
    lines: usize,
) -> String {
    let mut out = String::new();
    for (id, n) in nodes {
        let logs = n.logs();
        let tail: Vec<&str> = logs.lines().rev().take(lines).collect();
        out.push_str(&format!("--- node {id}:\n"));
        // A panic is the line that explains everything after it.
        for l in logs.lines().filter(|l| l.contains("panicked")).take(3) {
            out.push_str(l);
            out.push('\n');
        }
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// An event with a fixed ID for a writer's `n`th append.
pub fn event(writer: u64, n: u64) -> EventData {
    EventData::json("Written", &serde_json::json!({ "w": writer, "n": n }))
        .unwrap()
        .id(Uuid::from_u64_pair(writer + 1, n))
}
