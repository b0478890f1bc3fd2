//! Snapshot transfers between real `strata serve` processes (127.0.0.7x): a follower that
//! lost its disk is further behind than the snapshot interval, so the leader streams it the
//! committed log; the follower is SIGKILLed in the middle of that transfer, restarts, and
//! catches up. Afterwards every acknowledged event is on every node exactly once, the staging
//! file is gone, and the three logs are identical byte for byte.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use strata_client::{Client, Error, EventData, ExpectedRevision};
use strata_tests::cluster::{
    assert_identical_logs, client_of, converged, log_tails, start_cluster,
};
use strata_tests::{rt, Server};
use tonic::Code;
use uuid::Uuid;

/// Events per append and bytes per event: appends just under the 1 MiB limit.
const EVENTS: u64 = 32;
const EVENT_BYTES: usize = 31 * 1024;

/// Appends batch `b` (its event IDs fixed, so a retry is idempotent) through whichever node
/// takes it; returns the node that acknowledged it.
async fn append_batch(nodes: &[(u64, Client)], b: u64) -> u64 {
    let events: Vec<EventData> = (0..EVENTS)
        .map(|i| {
            EventData::binary("Filled", vec![(b % 251) as u8; EVENT_BYTES])
                .id(Uuid::from_u64_pair(b + 1, i))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        for (id, c) in nodes {
            match c
                .append(
                    &format!("fill-{}", b % 8),
                    ExpectedRevision::Any,
                    events.clone(),
                )
                .await
            {
                Ok(_) => return *id,
                Err(
                    e @ Error::Server {
                        code: Code::InvalidArgument,
                        ..
                    },
                ) => panic!("batch {b}: {e}"),
                Err(e) => last = format!("node {id}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("batch {b} was not acknowledged within 60 s; last error: {last}");
}

/// Appends batches `from..to`, four at a time; returns the node that acknowledged the last.
async fn fill(nodes: &[(u64, Client)], from: u64, to: u64) -> u64 {
    let mut leader = 0;
    for chunk in (from..to).collect::<Vec<_>>().chunks(4) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&b| {
                let nodes = nodes.to_vec();
                tokio::spawn(async move { append_batch(&nodes, b).await })
            })
            .collect();
        for t in tasks {
            leader = t.await.unwrap();
        }
    }
    leader
}

#[test]
fn a_wiped_node_catches_up_by_snapshot_even_when_killed_in_the_middle_of_the_transfer() {
    rt().block_on(async {
        let mut cluster = start_cluster(70, |_| vec!["--snapshot-entries".into(), "5".into()]);
        let mut clients = HashMap::new();
        for (id, n) in &cluster.nodes {
            clients.insert(*id, client_of(n).await);
        }
        let all = |clients: &HashMap<u64, Client>| -> Vec<(u64, Client)> {
            (1..=3)
                .filter_map(|id| clients.get(&id).map(|c| (id, c.clone())))
                .collect()
        };
        // About 46 MiB of committed log.
        let leader = fill(&all(&clients), 0, 48).await;

        // A follower that did not initialise the cluster goes down; more is written without
        // it (so the leader has taken snapshots since), and it comes back without its disk.
        let victim = (2..=3).find(|&n| n != leader).unwrap();
        let node = cluster.nodes.get_mut(&victim).unwrap();
        node.kill();
        clients.remove(&victim);
        let leader = fill(&all(&clients), 48, 64).await;
        let node = cluster.nodes.get_mut(&victim).unwrap();
        std::fs::remove_dir_all(&node.dir).unwrap();
        std::fs::create_dir(&node.dir).unwrap();
        let staging = node.dir.join("raft").join("snapshot.incoming");
        node.restart();

        // It is killed once the transfer has staged a first MiB.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::fs::metadata(&staging).is_ok_and(|m| m.len() > 1 << 20) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no snapshot transfer to node {victim} was seen within 60 s\n{}",
                log_tails(cluster.nodes.iter().map(|(id, n)| (*id, n)), 20)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let node = cluster.nodes.get_mut(&victim).unwrap();
        node.kill();
        let staged = std::fs::metadata(&staging).map(|m| m.len()).unwrap_or(0);
        eprintln!("node {victim} killed with {staged} bytes of the snapshot staged");

        // It restarts on what it had, and catches up while the writers go on.
        node.restart();
        clients.insert(victim, client_of(node).await);
        let leader_logs = cluster.nodes[&leader].logs();
        fill(&all(&clients), 64, 72).await;

        let nodes = all(&clients);
        let reference = converged(&nodes, Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e}\n{}",
                    log_tails(cluster.nodes.iter().map(|(id, n)| (*id, n)), 30)
                )
            });
        // Every acknowledged batch, exactly once (each was acknowledged: `fill` panics if not).
        let mut seen: HashMap<Uuid, usize> = HashMap::new();
        for e in &reference {
            *seen.entry(e.3).or_default() += 1;
        }
        for b in 0..72u64 {
            for i in 0..EVENTS {
                let id = Uuid::from_u64_pair(b + 1, i);
                assert_eq!(seen.get(&id), Some(&1), "event {i} of batch {b}");
            }
        }
        assert_eq!(reference.len() as u64, 72 * EVENTS);
        assert!(
            leader_logs.contains("sending a snapshot"),
            "the leader never sent a snapshot:\n{leader_logs}"
        );
        assert!(
            cluster.nodes[&victim]
                .logs()
                .contains("installing a snapshot"),
            "node {victim} never installed a snapshot"
        );
        assert!(!staging.exists(), "the staging file is left behind");
        let nodes: Vec<(u64, &Server)> = cluster.nodes.iter().map(|(id, n)| (*id, n)).collect();
        assert_identical_logs(&nodes);
    });
}
