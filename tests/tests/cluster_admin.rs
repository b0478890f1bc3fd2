//! Operating a cluster of real `strata serve` processes (127.0.0.81–83): `strata cluster
//! status` on every node (role, term, leader, commit point, members and their liveness; on the
//! leader, how far each member is behind), and `strata cluster transfer-leader` handing
//! leadership to a chosen voter, after which appends go through the new leader; the cluster
//! metrics follow. A single node answers that it is not a cluster node.

use std::time::{Duration, Instant};

use strata_client::{Client, ClusterStatus, EventData, ExpectedRevision};
use strata_tests::cluster::start_cluster;
use strata_tests::metrics::{metrics_addr, scrape, value};
use strata_tests::{rt, Server};

async fn status(n: &Server) -> ClusterStatus {
    let c = Client::connect(n.url()).await.unwrap();
    c.server_info()
        .await
        .unwrap()
        .cluster
        .expect("a cluster node reports its cluster")
}

/// Waits until every node names the same leader, sees every member alive, and the leader
/// reports every member caught up; returns the leader's status.
async fn settled(nodes: &[&Server]) -> ClusterStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = Vec::new();
        for n in nodes {
            all.push(status(n).await);
        }
        let leader = all[0].leader_id;
        let agreed = leader.is_some()
            && all.iter().all(|s| {
                s.leader_id == leader && s.members.len() == 3 && s.members.iter().all(|m| m.alive)
            });
        if let Some(l) = all.iter().find(|s| agreed && Some(s.node_id) == leader) {
            let caught_up = l.members.iter().all(|m| {
                m.replication
                    .as_ref()
                    .is_some_and(|r| r.lag_entries == 0 && r.lag_bytes == 0)
            });
            if caught_up {
                return l.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not settle within 20 s: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn cluster_status_reports_roles_and_lag_and_transfer_leader_moves_leadership() {
    rt().block_on(async {
        let cluster = start_cluster(80, |id| {
            vec!["--metrics-listen".into(), format!("127.0.0.{}:0", 80 + id)]
        });
        let nodes: Vec<&Server> = cluster.nodes.values().collect();
        let leader = settled(&nodes).await;
        assert_eq!(leader.role, "leader");
        let lid = leader.node_id;
        let l = &cluster.nodes[&lid];
        let client = Client::connect(l.url()).await.unwrap();
        for i in 0..20 {
            let e = EventData::json("Counted", &serde_json::json!({ "i": i })).unwrap();
            client
                .append("counter-1", ExpectedRevision::Any, vec![e])
                .await
                .unwrap();
        }
        let leader = settled(&nodes).await;
        assert_eq!(leader.node_id, lid, "leadership moved without a transfer");
        assert!(leader.committed_index >= 20, "{leader:?}");
        assert_eq!(leader.committed_index, leader.last_log_index);
        assert!(leader.members.iter().all(|m| m.voter));
        let me = leader.members.iter().find(|m| m.node_id == lid).unwrap();
        assert_eq!(me.client_endpoint.as_deref(), Some(&*l.addr.to_string()));

        // The metrics say the same.
        let (_, body) = scrape(&metrics_addr(l), "/metrics");
        assert_eq!(value(&body, "strata_cluster_is_leader "), 1.0);
        assert_eq!(value(&body, "strata_cluster_term "), leader.term as f64);
        assert!(value(&body, "strata_cluster_committed_index ") >= 20.0);
        for id in cluster.nodes.keys() {
            let lag = format!("strata_cluster_member_lag_entries{{node=\"{id}\"}} ");
            assert_eq!(value(&body, &lag), 0.0, "{body}");
            let alive = format!("strata_cluster_member_alive{{node=\"{id}\"}} ");
            assert_eq!(value(&body, &alive), 1.0, "{body}");
        }

        // A follower knows the leader, and no replication state.
        let fid = *cluster.nodes.keys().find(|&&id| id != lid).unwrap();
        let f = &cluster.nodes[&fid];
        let fs = status(f).await;
        assert_eq!((fs.role.as_str(), fs.leader_id), ("follower", Some(lid)));
        assert!(fs.members.iter().all(|m| m.replication.is_none()));

        // The CLI, readable and as JSON.
        let out = f.cli(&["cluster", "status"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(
            text.starts_with(&format!("node {fid}: follower, term ")),
            "{text}"
        );
        let out = l.cli(&["cluster", "status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["role"], "leader");
        assert_eq!(v["members"].as_array().unwrap().len(), 3);
        assert_eq!(v["members"][0]["lag_entries"], 0);

        // Transfer: refused by a follower (naming the leader) and for a non-voter; done by
        // the leader, after which the chosen node leads and takes appends.
        let out = f.cli(&["cluster", "transfer-leader", "--to", &fid.to_string()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("is not the leader") && err.contains(&format!("node {lid}")),
            "{err}"
        );
        let out = l.cli(&["cluster", "transfer-leader", "--to", "9"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "{err}");
        assert!(err.contains("node 9 is not a voter"), "{err}");
        let out = l.cli(&["cluster", "transfer-leader", "--to", &fid.to_string()]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("node {fid} leads")
        );
        let now = status(f).await;
        assert_eq!((now.role.as_str(), now.leader_id), ("leader", Some(fid)));
        assert!(now.term > leader.term);
        let (_, body) = scrape(&metrics_addr(l), "/metrics");
        assert!(
            value(&body, "strata_cluster_leader_changes_total ") >= 1.0,
            "{body}"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while value(
            &scrape(&metrics_addr(l), "/metrics").1,
            "strata_cluster_is_leader ",
        ) != 0.0
        {
            assert!(
                Instant::now() < deadline,
                "the old leader's metrics still say it leads"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let moved = Client::connect(f.url()).await.unwrap();
        let e = EventData::json("Counted", &serde_json::json!({ "i": 20 })).unwrap();
        let r = moved
            .append("counter-1", ExpectedRevision::Exact(19), vec![e])
            .await
            .unwrap();
        assert_eq!(r.revision, 20);

        // A single node is not a cluster node.
        let dir = tempfile::tempdir().unwrap();
        let single = Server::start(dir.path(), &[]);
        let out = single.cli(&["cluster", "status"]);
        assert_eq!(out.status.code(), Some(7));
        assert!(String::from_utf8_lossy(&out.stderr).contains("is a single node"));
    });
}
