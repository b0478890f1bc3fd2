//! Strata's own client given all three nodes of a cluster (127.0.0.121–123): it talks to the
//! leader, and follows leadership when the leader is killed and when leadership is transferred
//! away, retrying appends with their event IDs; every append is in the stream exactly once.
//! The CLI takes the same comma-separated list.

use std::time::Duration;

use strata_client::{Client, EventData, ExpectedRevision};
use strata_tests::cluster::start_cluster;
use strata_tests::{read_events, rt};
use uuid::Uuid;

fn event(n: u64) -> EventData {
    EventData::json("Counted", &serde_json::json!({ "n": n }))
        .unwrap()
        .id(Uuid::from_u64_pair(7, n))
}

async fn role(c: &Client) -> (u64, String) {
    let s = c.server_info().await.unwrap().cluster.unwrap();
    (s.node_id, s.role)
}

#[test]
fn the_client_follows_the_leader_across_a_kill_and_a_transfer() {
    rt().block_on(async {
        let mut cluster = start_cluster(120, |_| vec![]);
        let urls: Vec<String> = cluster.nodes.values().map(|n| n.url()).collect();
        let client = Client::builder(urls.join(","))
            .append_retries(8)
            .connect()
            .await
            .unwrap();
        // It talks to the leader (once one is elected: the first appends may wait for it).
        for n in 0..20 {
            client
                .append("counter", ExpectedRevision::Any, vec![event(n)])
                .await
                .unwrap();
        }
        let (first, r) = role(&client).await;
        assert_eq!(r, "leader");

        // The leader dies: the next appends go to the new one.
        cluster.nodes.get_mut(&first).unwrap().kill();
        for n in 20..40 {
            client
                .append("counter", ExpectedRevision::Any, vec![event(n)])
                .await
                .unwrap_or_else(|e| panic!("append {n} after the leader was killed: {e}"));
        }
        let (second, r) = role(&client).await;
        assert_eq!(r, "leader");
        assert_ne!(second, first);

        // Leadership moves away: the deposed leader refuses, and the client follows.
        let to = *cluster
            .nodes
            .keys()
            .find(|&&id| id != first && id != second)
            .unwrap();
        cluster.nodes.get_mut(&first).unwrap().restart();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(client.transfer_leader(to).await.unwrap(), to);
        for n in 40..60 {
            client
                .append("counter", ExpectedRevision::Any, vec![event(n)])
                .await
                .unwrap_or_else(|e| panic!("append {n} after the transfer: {e}"));
        }
        assert_eq!(role(&client).await, (to, "leader".to_owned()));

        let got = read_events(&client, "counter").await;
        let ids: Vec<Uuid> = got.iter().map(|e| e.id).collect();
        let want: Vec<Uuid> = (0..60).map(|n| Uuid::from_u64_pair(7, n)).collect();
        assert_eq!(ids, want, "every append once, in order");

        // The CLI takes the same list.
        let out = std::process::Command::new(strata_tests::strata_bin())
            .args([
                "append",
                "counter",
                "--type",
                "Counted",
                "--server",
                &urls.join(","),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    });
}
