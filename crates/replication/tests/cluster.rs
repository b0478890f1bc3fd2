//! Three nodes in one process, on openraft over an in-memory network: appends through the
//! leader's engine are acknowledged once a majority holds them, followers refuse appends,
//! a leader that stops is replaced, a restarted node catches up, and afterwards every node
//! holds the same entries, the same events at the same positions (the restarted node catches
//! up by a snapshot transfer). Also: a batch that timed out waiting for a majority but commits
//! later keeps its revision (the next batch waits for it).
//! (Multi-process tests with real network isolation are the server's; this one checks the
//! engine and openraft together, deterministically and fast.)

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{RPCError, StreamingError, Unreachable};
use openraft::impls::BasicNode;
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use strata_engine::{AllFrom, Direction, Engine, Error, EventData, ExpectedRevision};
use strata_replication::types::Vote;
use strata_replication::{
    raft_config, snapshot, LogStore, Raft, RaftProposer, StateMachine, TypeConfig,
};
use tempfile::TempDir;

/// Routes RPCs to the nodes that are up. Each node has its own router (`me`); all share the
/// table of nodes and the count of snapshots sent.
#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<HashMap<u64, Up>>>,
    snapshots: Arc<AtomicUsize>,
    /// When set, every AppendEntries call that carries entries is delayed this long
    /// (heartbeats are not, so no election starts).
    slow_entries: Arc<Mutex<Option<Duration>>>,
    me: u64,
}

#[derive(Clone)]
struct Up {
    raft: Raft,
    engine: Arc<Engine>,
    dir: PathBuf,
}

impl Router {
    fn get(&self, id: u64) -> Result<Up, Unreachable<TypeConfig>> {
        self.nodes
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or_else(|| Unreachable::new(&std::io::Error::other(format!("node {id} is down"))))
    }

    fn of(&self, me: u64) -> Router {
        Router { me, ..self.clone() }
    }
}

struct Conn {
    router: Router,
    target: u64,
}

/// Sends a snapshot the way the server's transport does, in parts of at most 64 KiB.
async fn send_snapshot(
    from: &Up,
    to: &Up,
    vote: Vote,
    snapshot: Snapshot,
) -> std::io::Result<SnapshotResponse<TypeConfig>> {
    let last = snapshot
        .meta
        .last_log_id
        .expect("a snapshot has a last entry")
        .index;
    let mut staging = snapshot::Staging::create(&to.dir, last)?;
    let mut next = snapshot::first_needed(&to.engine)?;
    while next <= last {
        let part = snapshot::read_encoded(&from.engine, next, last, 64 * 1024)?;
        for e in &part {
            staging.push(e)?;
        }
        next += part.len() as u64;
    }
    let received = staging.finish()?;
    to.raft
        .install_full_snapshot(
            vote,
            openraft::storage::Snapshot {
                meta: snapshot.meta,
                snapshot: snapshot::SnapshotData::Received(received),
            },
        )
        .await
        .map_err(std::io::Error::other)
}

type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, snapshot::SnapshotData>;

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Conn;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Conn {
        Conn {
            router: self.clone(),
            target,
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Conn {
    type SnapshotData = snapshot::SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.get(self.target)?.raft;
        let delay = *self.router.slow_entries.lock().unwrap();
        if let Some(d) = delay.filter(|_| !rpc.entries.is_empty()) {
            tokio::time::sleep(d).await;
        }
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.get(self.target)?.raft;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl std::future::Future<Output = openraft::error::ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let from = self.router.get(self.router.me)?;
        let to = self.router.get(self.target)?;
        let r = send_snapshot(&from, &to, vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        self.router.snapshots.fetch_add(1, Ordering::SeqCst);
        Ok(r)
    }
}

struct Node {
    engine: Arc<Engine>,
    raft: Raft,
}

async fn start(id: u64, dir: &TempDir, router: &Router) -> Node {
    start_with(id, dir, router, Duration::from_secs(5)).await
}

/// Starts a node whose appends wait at most `commit_timeout` for a majority.
async fn start_with(id: u64, dir: &TempDir, router: &Router, commit_timeout: Duration) -> Node {
    let mut c = strata_engine::Config::new(dir.path());
    c.replicated = true;
    c.durability = strata_engine::Durability::NoSync;
    c.index_cache_bytes = 4 * 1024 * 1024;
    c.segment_size = 64 * 1024;
    let engine = Arc::new(Engine::open(c).unwrap());
    let config = Arc::new(raft_config("test", 4).unwrap());
    let raft = Raft::new(
        id,
        config,
        router.of(id),
        LogStore::new(engine.clone()).unwrap(),
        StateMachine::new(engine.clone()),
    )
    .await
    .unwrap();
    engine.set_proposer(Some(Arc::new(RaftProposer::new(
        raft.clone(),
        tokio::runtime::Handle::current(),
        commit_timeout,
    ))));
    router.nodes.lock().unwrap().insert(
        id,
        Up {
            raft: raft.clone(),
            engine: engine.clone(),
            dir: dir.path().to_owned(),
        },
    );
    Node { engine, raft }
}

/// Stops a node as a crash would for its peers: it is unreachable at once, and its store is
/// closed once Raft lets go of it.
async fn stop(id: u64, node: Node, router: &Router) {
    router.nodes.lock().unwrap().remove(&id);
    node.engine.set_proposer(None);
    node.raft.shutdown().await.unwrap();
    drop(node.raft);
    let mut engine = node.engine;
    for _ in 0..500 {
        match Arc::try_unwrap(engine) {
            Ok(e) => {
                e.close().unwrap();
                return;
            }
            Err(e) => {
                engine = e;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    panic!("node {id}'s store is still in use after its Raft stopped");
}

async fn leader_of(nodes: &HashMap<u64, Node>) -> u64 {
    for _ in 0..500 {
        for (id, n) in nodes {
            if n.raft.current_leader().await == Some(*id) {
                return *id;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no leader elected within 10 s");
}

fn event(n: u64) -> EventData {
    EventData::json("Happened", format!("{{\"n\":{n}}}"))
        .with_id(uuid::Uuid::from_u128(n as u128 + 1))
}

/// Appends events `from..to`, 16 at a time, through whichever node leads, retrying (with
/// the same event IDs, as a client would) when an append was not acknowledged; returns
/// (stream, revision, position) of each.
async fn write(nodes: &HashMap<u64, Node>, from: u64, to: u64) -> Vec<(String, u64, u64)> {
    let handles: Vec<(u64, Arc<Engine>, Raft)> = nodes
        .iter()
        .map(|(id, n)| (*id, n.engine.clone(), n.raft.clone()))
        .collect();
    let handles = Arc::new(handles);
    let mut acked = Vec::new();
    for chunk in (from..to).collect::<Vec<_>>().chunks(16) {
        let mut tasks = Vec::new();
        for &n in chunk {
            let handles = handles.clone();
            tasks.push(tokio::spawn(async move {
                let stream = format!("s-{}", n % 7);
                for _ in 0..100 {
                    let leader = handles[0].2.current_leader().await;
                    let Some((_, engine, _)) = handles.iter().find(|h| Some(h.0) == leader) else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    match engine
                        .append(&stream, ExpectedRevision::Any, vec![event(n)])
                        .await
                    {
                        Ok(r) => return (stream, r.revision, r.position),
                        Err(Error::NotAcknowledged { .. } | Error::NotLeader { .. }) => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(e) => panic!("append of event {n}: {e}"),
                    }
                }
                panic!("event {n} was never acknowledged");
            }));
        }
        for t in tasks {
            acked.push(t.await.unwrap());
        }
    }
    acked
}

/// Waits until `node` has applied everything up to `index`.
async fn caught_up(node: &Node, index: u64) {
    for _ in 0..500 {
        if node
            .engine
            .committed_entry()
            .unwrap()
            .is_some_and(|c| c.index >= index)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a node did not catch up to entry {index}");
}

fn events(engine: &Engine) -> Vec<(String, u64, u64)> {
    engine
        .read_all(AllFrom::Start, Direction::Forwards, 1_000_000, None)
        .unwrap()
        .events
        .into_iter()
        .map(|e| (e.stream, e.revision, e.position))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_fail_over_and_catch_up() {
    let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let router = Router::default();
    let mut nodes = HashMap::new();
    for id in 1..=3u64 {
        nodes.insert(id, start(id, &dirs[id as usize - 1], &router).await);
    }
    let members: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|i| (i, BasicNode::new(format!("node-{i}"))))
        .collect();
    nodes[&1].raft.initialize(members.clone()).await.unwrap();
    // Initialising twice is refused: restarts never re-initialise a cluster.
    assert!(nodes[&1].raft.initialize(members).await.is_err());

    let mut acked = write(&nodes, 0, 200).await;
    let leader = leader_of(&nodes).await;

    // A follower refuses appends, naming the leader.
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let err = nodes[&follower]
        .engine
        .append("s-x", ExpectedRevision::Any, vec![event(10_000)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err}");
    assert!(err.to_string().contains("not the leader"), "{err}");

    // The leader stops; the other two elect a new one and go on.
    let old = leader;
    stop(old, nodes.remove(&old).unwrap(), &router).await;
    let leader = leader_of(&nodes).await;
    assert_ne!(leader, old);
    acked.extend(write(&nodes, 200, 400).await);

    // The old leader comes back and catches up: it is more entries behind than the snapshot
    // interval (4), so by a snapshot transfer.
    nodes.insert(old, start(old, &dirs[old as usize - 1], &router).await);
    acked.extend(write(&nodes, 400, 450).await);
    let leader = leader_of(&nodes).await;
    let last = nodes[&leader]
        .engine
        .committed_entry()
        .unwrap()
        .unwrap()
        .index;
    for n in nodes.values() {
        caught_up(n, last).await;
    }

    // Every node: the same entries, and every acknowledged event once, where it was acked.
    let reference = nodes[&leader].engine.read_entries(0, last + 1).unwrap();
    assert_eq!(reference.len() as u64, last + 1);
    let mut want = acked.clone();
    want.sort_by_key(|a| a.2);
    for (id, n) in &nodes {
        assert_eq!(
            n.engine.read_entries(0, last + 1).unwrap(),
            reference,
            "node {id}'s log differs"
        );
        let got = events(&n.engine);
        assert_eq!(
            got, want,
            "node {id}'s events differ from the acknowledged ones"
        );
        n.engine.verify().unwrap();
    }
    assert!(
        router.snapshots.load(Ordering::SeqCst) >= 1,
        "the restarted node was not sent a snapshot"
    );
    for (id, n) in nodes {
        stop(id, n, &router).await;
    }
}

/// A batch that times out waiting for a majority stays in the leader's log and may commit
/// later. The next batch must be planned with it: planned without it, it would take the same
/// revision, and once both committed the indexer would refuse the second and stop the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_timed_out_but_commits_later_keeps_its_revision() {
    let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let router = Router::default();
    let mut nodes = HashMap::new();
    for id in 1..=3u64 {
        let node = start_with(
            id,
            &dirs[id as usize - 1],
            &router,
            Duration::from_millis(300),
        );
        nodes.insert(id, node.await);
    }
    let members: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|i| (i, BasicNode::new(format!("node-{i}"))))
        .collect();
    nodes[&1].raft.initialize(members).await.unwrap();
    let leader = leader_of(&nodes).await;
    let engine = nodes[&leader].engine.clone();
    let append_until_acked = |n: u64| {
        let engine = engine.clone();
        async move {
            for _ in 0..100 {
                match engine
                    .append("acct", ExpectedRevision::Any, vec![event(n)])
                    .await
                {
                    Ok(r) => return r,
                    Err(Error::NotAcknowledged { .. }) => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => panic!("append of event {n}: {e}"),
                }
            }
            panic!("event {n} was never acknowledged");
        }
    };
    assert_eq!(append_until_acked(1).await.revision, 0);

    // Replication slows down past the commit timeout: the append is not acknowledged, but
    // its batch is in the leader's log and commits once the followers have it.
    *router.slow_entries.lock().unwrap() = Some(Duration::from_millis(1500));
    let timed_out = engine
        .append("acct", ExpectedRevision::Any, vec![event(2)])
        .await;
    assert!(
        matches!(timed_out, Err(Error::NotAcknowledged { .. })),
        "{timed_out:?}"
    );
    let next = append_until_acked(3).await;
    *router.slow_entries.lock().unwrap() = None;
    assert_eq!(
        next.revision, 2,
        "the next append was planned without the first"
    );

    let last = engine.committed_entry().unwrap().unwrap().index;
    for (id, n) in &nodes {
        caught_up(n, last).await;
        assert_eq!(n.engine.read_only_reason(), None, "node {id}");
        let got: Vec<(String, u64)> = events(&n.engine)
            .into_iter()
            .map(|(s, r, _)| (s, r))
            .collect();
        let want: Vec<(String, u64)> = (0..3).map(|r| ("acct".to_owned(), r)).collect();
        assert_eq!(got, want, "node {id}");
    }
    drop(engine);
    for (id, n) in nodes {
        stop(id, n, &router).await;
    }
}
