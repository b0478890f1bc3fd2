//! A rolling restart of a three-node cluster of real processes (127.0.0.101–103) under load,
//! as docs/operations.md describes it: each follower in turn is stopped with SIGTERM (a clean
//! shutdown) and started again, then leadership is handed to a restarted node and the old
//! leader is restarted last. Writers never stop; appends keep being acknowledged while each
//! node is down; afterwards the history checker finds every acknowledged append exactly once
//! and the logs are identical byte for byte.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_client::Client;
use strata_tests::cluster::{
    assert_identical_logs, client_of, converged, log_tails, start_cluster, Clients, Cluster,
    Writers,
};
use strata_tests::history::History;
use strata_tests::{rt, Server};

/// The node that leads, as the nodes report it.
async fn leader_id(clients: &Clients) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all: Vec<Client> = clients.lock().unwrap().values().cloned().collect();
        for c in all {
            if let Ok(Some(s)) = c.server_info().await.map(|i| i.cluster) {
                if s.role == "leader" {
                    return s.node_id;
                }
            }
        }
        assert!(Instant::now() < deadline, "no node leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops node `id` cleanly, checks that appends go on without it, and starts it again.
async fn restart(cluster: &mut Cluster, clients: &Clients, history: &History, id: u64) {
    clients.lock().unwrap().remove(&id);
    let node = cluster.nodes.get_mut(&id).unwrap();
    let status = node.terminate();
    assert!(
        status.success(),
        "node {id} exited with {status} on SIGTERM"
    );
    let before = history.acked();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        history.acked() > before,
        "no append was acknowledged while node {id} was down\n{}",
        log_tails(cluster.nodes.iter().map(|(id, n)| (*id, n)), 20)
    );
    let node = cluster.nodes.get_mut(&id).unwrap();
    node.restart();
    let c = client_of(node).await;
    clients.lock().unwrap().insert(id, c);
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[test]
fn a_rolling_restart_under_load_loses_no_acknowledged_append() {
    rt().block_on(async {
        let mut cluster = start_cluster(100, |_| vec![]);
        let mut initial = HashMap::new();
        for (id, n) in &cluster.nodes {
            initial.insert(*id, client_of(n).await);
        }
        let clients: Clients = Arc::new(Mutex::new(initial));
        let history = Arc::new(History::default());
        let writers = Writers::start(&clients, &history, 8, "roll");
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Followers first, one at a time.
        let first_leader = leader_id(&clients).await;
        let followers: Vec<u64> = (1..=3).filter(|&id| id != first_leader).collect();
        for &id in &followers {
            restart(&mut cluster, &clients, &history, id).await;
        }
        // Then leadership moves to a restarted node, and the old leader restarts last.
        let to = followers[0];
        let old = client_of(&cluster.nodes[&first_leader]).await;
        assert_eq!(old.transfer_leader(to).await.unwrap(), to);
        restart(&mut cluster, &clients, &history, first_leader).await;
        assert_ne!(leader_id(&clients).await, 0);

        writers.stop().await;
        let nodes: Vec<(u64, Client)> = {
            let c = clients.lock().unwrap();
            (1..=3).map(|id| (id, c[&id].clone())).collect()
        };
        let reference = converged(&nodes, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e}\n{}",
                    log_tails(cluster.nodes.iter().map(|(id, n)| (*id, n)), 30)
                )
            });
        let summary = history
            .check(&reference)
            .unwrap_or_else(|v| panic!("the history has violations: {v}"));
        eprintln!(
            "{} appends acknowledged through the rolling restart, {} events in the log",
            summary.acked,
            reference.len()
        );
        let nodes: Vec<(u64, &Server)> = cluster.nodes.iter().map(|(id, n)| (*id, n)).collect();
        assert_identical_logs(&nodes);
    });
}
