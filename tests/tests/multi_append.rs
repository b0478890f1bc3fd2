//! Multi-stream atomic appends through Strata's own API, client and CLI, and their atomicity
//! across SIGKILL of the real server under load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use strata_client::{
    Client, Error, EventData, ExpectedRevision as Exp, MultiAppend, ReadFrom, ReadOptions,
};
use strata_tests::{rt, Server};
use uuid::Uuid;

async fn ids(c: &Client, stream: &str) -> Vec<Uuid> {
    match c.read_stream(stream, ReadOptions::default()).await {
        Ok(s) => s.map_ok(|e| e.id).try_collect().await.unwrap(),
        Err(Error::StreamNotFound { .. }) => Vec::new(),
        Err(e) => panic!("{e}"),
    }
}

fn ev(t: &str) -> EventData {
    EventData::json_bytes(t, b"{}".to_vec())
}

#[test]
fn the_client_appends_to_several_streams_at_once_and_reports_failed_checks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        let m = MultiAppend::new()
            .write("order-1", Exp::NoStream, vec![ev("Placed")])
            .write(
                "stock-A",
                Exp::NoStream,
                vec![ev("Reserved"), ev("Counted")],
            )
            .check("customer-1", Exp::NoStream);
        let r = c.append_multi(m.clone()).await.unwrap();
        assert_eq!(
            r.streams
                .iter()
                .map(|s| (s.stream.as_str(), s.revision))
                .collect::<Vec<_>>(),
            vec![("order-1", 0), ("stock-A", 1)]
        );
        let again = c.append_multi(m).await.unwrap();
        assert!(again.idempotent_replay);
        assert_eq!(again.position, r.position);

        let err = c
            .append_multi(
                MultiAppend::new()
                    .write("order-2", Exp::NoStream, vec![ev("Placed")])
                    .check("stock-A", Exp::Exact(0))
                    .check("customer-1", Exp::StreamExists),
            )
            .await
            .unwrap_err();
        let Error::ChecksFailed { violations } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            violations
                .iter()
                .map(|v| (v.check, v.stream.as_str(), v.actual))
                .collect::<Vec<_>>(),
            vec![(0, "stock-A", Some(1)), (1, "customer-1", None)]
        );
        assert!(ids(&c, "order-2").await.is_empty());
    });

    // The CLI takes the same append as a JSON document.
    let doc = dir.path().join("append.json");
    std::fs::write(
        &doc,
        r#"{"appends": [{"stream": "order-3", "expected": "no-stream", "events": [{"type": "Placed", "data": {"sku": "A"}}]},
                        {"stream": "stock-A", "expected": 1, "events": [{"type": "Reserved"}]}],
            "checks": [{"stream": "customer-1", "expected": "no-stream"}]}"#,
    )
    .unwrap();
    let out = server.cli(&["append-multi", "--file", doc.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["streams"][1]["revision"], 2);
    // Run again: the events get new IDs, so this is no retry, and order-3 (the first stream
    // whose expectation fails) is named, with the conflict exit code.
    let out = server.cli(&["append-multi", "--file", doc.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("'order-3'"),
        "{out:?}"
    );
}

type Transfers = Arc<Mutex<Vec<(String, String, Uuid, Uuid)>>>;

/// Writers move "money" between accounts with multi-stream appends (one event on each side,
/// exact expected revisions) while the server is SIGKILLed. After each restart every
/// acknowledged transfer is there with both its events, and no transfer is there by half.
#[test]
fn a_multi_stream_append_is_all_or_nothing_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--segment-size", "256KiB"]);
    let acked: Transfers = Arc::default();
    let tried: Transfers = Arc::default();
    let rt = rt();
    for round in 0..3u64 {
        let url = server.url();
        let (acks, attempts) = (acked.clone(), tried.clone());
        let writers = rt.spawn(async move {
            let mut tasks = Vec::new();
            for w in 0..12u64 {
                let (url, acks, attempts) = (url.clone(), acks.clone(), attempts.clone());
                tasks.push(tokio::spawn(async move {
                    let c = Client::builder(url)
                        .append_retries(0)
                        .connect()
                        .await
                        .unwrap();
                    let mut seed = round * 1000 + w + 1;
                    loop {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        let from = format!("acct-{}", (seed >> 33) % 6);
                        let to = format!("acct-{}", ((seed >> 33) % 6 + 1 + (seed >> 45) % 5) % 6);
                        let (debit, credit) = (Uuid::new_v4(), Uuid::new_v4());
                        attempts
                            .lock()
                            .unwrap()
                            .push((from.clone(), to.clone(), debit, credit));
                        let m = MultiAppend::new()
                            .write(&from, Exp::Any, vec![ev("Debited").id(debit)])
                            .write(&to, Exp::Any, vec![ev("Credited").id(credit)]);
                        match c.append_multi(m).await {
                            Ok(_) => acks.lock().unwrap().push((from, to, debit, credit)),
                            Err(_) => return,
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
        let acked_now = || acked.lock().unwrap().len();
        let (before, deadline) = (acked_now(), Instant::now() + Duration::from_secs(60));
        while acked_now() < before + 200 {
            assert!(Instant::now() < deadline, "round {round}: no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(50 + 150 * round));
        server.kill();
        rt.block_on(writers).unwrap();
        server.restart();
        rt.block_on(async {
            let c = server.client().await;
            let mut present: HashMap<Uuid, String> = HashMap::new();
            for a in 0..6 {
                let stream = format!("acct-{a}");
                for id in ids(&c, &stream).await {
                    assert!(present.insert(id, stream.clone()).is_none(), "{id} twice");
                }
            }
            for (from, to, debit, credit) in acked.lock().unwrap().iter() {
                assert_eq!(present.get(debit), Some(from), "acked debit lost");
                assert_eq!(present.get(credit), Some(to), "acked credit lost");
            }
            let mut whole = 0;
            for (_, _, debit, credit) in tried.lock().unwrap().iter() {
                let (d, k) = (present.contains_key(debit), present.contains_key(credit));
                assert_eq!(d, k, "a transfer is there by half: debit {d}, credit {k}");
                whole += usize::from(d);
            }
            assert_eq!(
                whole * 2,
                present.len(),
                "events that belong to no transfer"
            );
            // The log reads back whole, and takes new appends.
            let all: Vec<_> = c
                .read_all(ReadOptions {
                    from: ReadFrom::Start,
                    ..Default::default()
                })
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            assert!(all.len() >= present.len());
        });
    }
}
