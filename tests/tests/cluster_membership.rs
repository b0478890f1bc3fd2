//! Membership changes on real `strata serve` processes (127.0.0.91–94), while writers append
//! without pause: a fourth node, started on its own, joins as a learner (a read-only replica:
//! it refuses appends, serves reads), catches up, and is promoted to voter; then an old voter is
//! removed and killed. Afterwards the history checker finds every acknowledged append on the
//! remaining nodes exactly once, and their logs are identical byte for byte.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_client::{Client, ClusterStatus, ExpectedRevision};
use strata_tests::cluster::{
    assert_identical_logs, client_of, converged, event, free_port, log_tails, start_cluster,
    Clients, Writers,
};
use strata_tests::history::History;
use strata_tests::{rt, Server};

async fn status(c: &Client) -> ClusterStatus {
    c.server_info().await.unwrap().cluster.unwrap()
}

/// The client of the node that leads now.
async fn leader(clients: &Clients) -> (u64, Client) {
    for _ in 0..100 {
        let all: Vec<(u64, Client)> = clients
            .lock()
            .unwrap()
            .iter()
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        for (id, c) in all {
            if let Ok(i) = c.server_info().await {
                if i.cluster.is_some_and(|s| s.role == "leader") {
                    return (id, c);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no node leads");
}

#[test]
fn a_node_joins_as_learner_is_promoted_and_an_old_voter_leaves_under_load() {
    rt().block_on(async {
        let mut cluster = start_cluster(90, |_| vec![]);
        // Node 4 starts on its own: its --peers names only itself, and it is not initialised.
        let ip4 = "127.0.0.94";
        let peer4 = format!("{ip4}:{}", free_port(ip4));
        let dir4 = tempfile::tempdir().unwrap();
        let args4 = [
            "--node-id",
            "4",
            "--cluster-listen",
            &peer4,
            "--peers",
            &format!("4={peer4}"),
        ];
        let mut node4 = Server::start_on(dir4.path(), &format!("{ip4}:0"), &args4);

        let mut initial = HashMap::new();
        for (id, n) in &cluster.nodes {
            initial.insert(*id, client_of(n).await);
        }
        let clients: Clients = Arc::new(Mutex::new(initial));
        let history = Arc::new(History::default());
        let writers = Writers::start(&clients, &history, 8, "m");
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Node 4 joins as a learner: the call returns once it has caught up.
        let (lid, lc) = leader(&clients).await;
        let after = lc.add_member(4, &peer4, false).await.unwrap();
        let m4 = after
            .members
            .iter()
            .find(|m| m.node_id == 4)
            .expect("node 4 is a member");
        assert!(!m4.voter, "{after:?}");
        let c4 = client_of(&node4).await;
        assert_eq!(status(&c4).await.role, "learner");
        // A learner refuses appends (naming the leader) and serves reads.
        let err = c4
            .append("m-learner", ExpectedRevision::Any, vec![event(99, 0)])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not the leader"), "{err}");
        // (It applies what it holds once it hears the commit point: right after.)
        let mut read = Vec::new();
        for _ in 0..50 {
            read = strata_tests::cluster::all_events(&c4).await.unwrap();
            if !read.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!read.is_empty(), "the learner serves no events");
        clients.lock().unwrap().insert(4, c4.clone());

        // Promoted, it votes; an old voter (not the leader) is removed, then killed.
        let (_, lc) = leader(&clients).await;
        let promoted = lc.promote_member(4).await.unwrap();
        assert!(
            promoted.members.iter().any(|m| m.node_id == 4 && m.voter),
            "{promoted:?}"
        );
        let gone = (1..=3).find(|&id| id != lid).unwrap();
        let (_, lc) = leader(&clients).await;
        let after = lc.remove_member(gone).await.unwrap();
        let voters: Vec<u64> = after
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.node_id)
            .collect();
        assert_eq!(voters.len(), 3, "{after:?}");
        assert!(!voters.contains(&gone) && voters.contains(&4), "{after:?}");
        clients.lock().unwrap().remove(&gone);
        cluster.nodes.get_mut(&gone).unwrap().kill();
        let acked = history.acked();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            history.acked() > acked,
            "no append acknowledged after node {gone} left"
        );
        // Removing again is refused: it is no member.
        let (_, lc) = leader(&clients).await;
        let err = lc.remove_member(gone).await.unwrap_err();
        assert!(err.to_string().contains("is not a member"), "{err}");

        writers.stop().await;
        let nodes: Vec<(u64, Client)> = {
            let c = clients.lock().unwrap();
            let mut v: Vec<(u64, Client)> = c.iter().map(|(id, c)| (*id, c.clone())).collect();
            v.sort_by_key(|n| n.0);
            v
        };
        let reference = converged(&nodes, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e}\n{}",
                    log_tails(
                        cluster
                            .nodes
                            .iter()
                            .map(|(id, n)| (*id, n))
                            .chain([(4, &node4)]),
                        30
                    )
                )
            });
        let summary = history
            .check(&reference)
            .unwrap_or_else(|v| panic!("the history has violations: {v}"));
        eprintln!(
            "{} appends acknowledged, {} events in the log",
            summary.acked,
            reference.len()
        );
        let mut remaining: Vec<(u64, &Server)> = cluster
            .nodes
            .iter()
            .filter(|(id, _)| **id != gone)
            .map(|(id, n)| (*id, n))
            .collect();
        remaining.push((4, &node4));
        assert_identical_logs(&remaining);
        node4.kill();
    });
}
