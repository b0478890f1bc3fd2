//! The server process: SIGTERM shuts down cleanly; SIGKILL under load loses no acknowledged
//! append; a second server on the same data directory is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use strata_client::{
    Client, Error, EventData, ExpectedRevision as Exp, ReadOptions, SubscribeFrom,
};
use strata_tests::{payload_for, rt, strata_bin, Server};
use uuid::Uuid;

#[test]
fn sigterm_ends_subscriptions_flushes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let rt = rt();
    let mut sub = rt.block_on(async {
        let c = server.client().await;
        for i in 0..100u64 {
            c.append("s", Exp::Any, vec![EventData::json("E", &i).unwrap()])
                .await
                .unwrap();
        }
        let mut sub = c
            .subscribe("$all", SubscribeFrom::Start, None)
            .await
            .unwrap();
        for _ in 0..101 {
            sub.next().await.unwrap().unwrap();
        }
        sub
    });
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", server.logs());
    assert!(server.logs().contains("store closed cleanly"));
    rt.block_on(async {
        let end = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap();
        assert!(
            matches!(end, Some(Err(Error::Unavailable(_))) | None),
            "{end:?}"
        );
    });
    // The restart finds a clean store: nothing to re-index, nothing cut.
    server.restart();
    let logs = server.logs();
    assert!(
        logs.contains("\"reindexed_events\":0") && logs.contains("\"truncated_bytes\":0"),
        "{logs}"
    );
    rt.block_on(async {
        let c = server.client().await;
        let events: Vec<_> = c
            .read_stream("s", ReadOptions::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(events.len(), 100);
    });
}

/// Acknowledged (revision, event ID) pairs per stream.
type Acks = HashMap<String, Vec<(u64, Uuid)>>;

#[test]
fn sigkill_under_load_loses_no_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--segment-size", "256KiB"]);
    let acked: Arc<Mutex<Acks>> = Arc::default();
    let rt = rt();
    for round in 0..3 {
        let url = server.url();
        let acks = acked.clone();
        let writers = rt.spawn(async move {
            let mut tasks = Vec::new();
            for w in 0..16 {
                let url = url.clone();
                let acks = acks.clone();
                tasks.push(tokio::spawn(async move {
                    let c = Client::builder(url)
                        .append_retries(0)
                        .connect()
                        .await
                        .unwrap();
                    let stream = format!("load-{w}");
                    loop {
                        let id = Uuid::new_v4();
                        let e = EventData::json_bytes("Load", payload_for(&stream, id)).id(id);
                        match c.append(&stream, Exp::Any, vec![e]).await {
                            Ok(r) => acks
                                .lock()
                                .unwrap()
                                .entry(stream.clone())
                                .or_default()
                                .push((r.revision, id)),
                            Err(_) => return,
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
        // Kill only once this round has acknowledged real work, however slow the machine.
        let acked_now = || acked.lock().unwrap().values().map(Vec::len).sum::<usize>();
        let (before, deadline) = (acked_now(), Instant::now() + Duration::from_secs(60));
        while acked_now() < before + 100 {
            assert!(
                Instant::now() < deadline,
                "round {round}: writers made no progress"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100 + 300 * round));
        server.kill();
        rt.block_on(writers).unwrap();
        server.restart();
        rt.block_on(async {
            let c = server.client().await;
            let acked = acked.lock().unwrap().clone();
            assert!(
                acked.values().map(Vec::len).sum::<usize>() > 100,
                "too few appends acknowledged"
            );
            for (stream, acks) in acked {
                let events: Vec<_> = c
                    .read_stream(&stream, ReadOptions::default())
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                for (rev, id) in acks {
                    let e = events
                        .get(rev as usize)
                        .unwrap_or_else(|| panic!("round {round}: {stream}@{rev} lost"));
                    assert_eq!(e.id, id, "round {round}: {stream}@{rev} differs");
                    assert_eq!(&e.data[..], payload_for(&stream, id).as_bytes());
                }
            }
        });
    }
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start(dir.path(), &[]);
    let o = std::process::Command::new(strata_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("locked by another process"));
}

#[test]
fn health_answers_not_serving_while_recovery_runs() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    // A store whose index must be rebuilt from a million events at start-up.
    {
        let mut config = strata_engine::Config::new(dir.path());
        config.durability = strata_engine::Durability::NoSync;
        let engine = strata_engine::Engine::open(config).unwrap();
        rt().block_on(async {
            for batch in 0..1000u64 {
                let events = (0..1000)
                    .map(|i| strata_engine::EventData::json("E", format!("{{\"i\":{i}}}")))
                    .collect();
                engine
                    .append(
                        &format!("r-{batch}"),
                        strata_engine::ExpectedRevision::Any,
                        events,
                    )
                    .await
                    .unwrap();
            }
        });
        engine.close().unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let mut child = std::process::Command::new(strata_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server output").unwrap();
        if let Some(at) = line.find("health checks on ") {
            let rest = &line[at + 17..];
            break rest[..rest.find(' ').unwrap()].to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let url = format!("http://{addr}");
    // Meanwhile other calls are told the store is recovering (UNAVAILABLE, which clients
    // retry), never UNIMPLEMENTED, on a connection that goes on serving afterwards.
    let pinger = {
        let url = url.clone();
        std::thread::spawn(move || {
            rt().block_on(async move {
                use strata_proto::v1::{server_client::ServerClient, PingRequest};
                let channel = tonic::transport::Endpoint::from_shared(url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let mut client = ServerClient::new(channel);
                let mut outcomes: Vec<String> = Vec::new();
                // Bounded by time, not by a count of pings: on a loaded CI machine the
                // rebuild can outlast any fixed number of fast refusals.
                let deadline = Instant::now() + Duration::from_secs(180);
                while Instant::now() < deadline {
                    let outcome = match client.ping(PingRequest {}).await {
                        Ok(_) => "ok".to_owned(),
                        Err(s) => format!("{:?}: {}", s.code(), s.message()),
                    };
                    let done = outcome == "ok";
                    if outcomes.last() != Some(&outcome) {
                        outcomes.push(outcome);
                    }
                    if done {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                outcomes
            })
        })
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let out = std::process::Command::new(strata_bin())
            .args(["health", "--server", &url, "--timeout", "5"])
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == "SERVING" {
            assert_eq!(out.status.code(), Some(0));
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // The pinger stops at its first success (or its deadline): only then may the server go.
    let outcomes = pinger.join().unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert_eq!(
        seen.first().map(String::as_str),
        Some("NOT_SERVING"),
        "statuses seen: {seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("SERVING"), "{seen:?}");
    assert_eq!(
        outcomes.last().map(String::as_str),
        Some("ok"),
        "{outcomes:?}"
    );
    assert!(
        outcomes[0].starts_with("Unavailable") && outcomes[0].contains("recovering"),
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|o| !o.contains("Unimplemented")),
        "{outcomes:?}"
    );
}

async fn read_big(c: &Client) -> Vec<strata_client::RecordedEvent> {
    c.read_stream("big", ReadOptions::default())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// A write the disk refuses (here: the file-size limit, EFBIG) turns the store read-only:
/// appends fail with a clear reason, health reports NOT_SERVING, reads go on, and a restart
/// (with room to write) recovers every acknowledged append.
#[test]
fn a_failed_write_turns_the_store_read_only_and_health_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with_file_limit(dir.path(), &[], 2 * 1024 * 1024);
    let acked = rt().block_on(async {
        let c = Client::builder(server.url())
            .append_retries(0)
            .connect()
            .await
            .unwrap();
        let mut acked = Vec::new();
        let err = loop {
            assert!(acked.len() < 100, "the file-size limit never stopped a write");
            let id = Uuid::new_v4();
            let e = EventData::json_bytes("Big", format!("\"{}\"", "x".repeat(100_000))).id(id);
            match c.append("big", Exp::Any, vec![e]).await {
                Ok(r) => acked.push((r.revision, id)),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(&err, strata_client::Error::Unavailable(m) if m.contains("read-only") || m.contains("failed")),
            "{err:?}"
        );
        // Later appends are refused too, with the reason.
        let again = c
            .append("other", Exp::Any, vec![EventData::json("Small", &1).unwrap()])
            .await
            .unwrap_err();
        assert!(matches!(again, strata_client::Error::Unavailable(_)), "{again:?}");
        let info = c.server_info().await.unwrap();
        assert!(info.read_only_reason.is_some(), "{info:?}");
        // Reads still work and see exactly what was acknowledged.
        let events = read_big(&c).await;
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids, acked.iter().map(|(_, id)| *id).collect::<Vec<_>>());
        acked
    });
    // Health turns NOT_SERVING (set by a watcher as the store turns read-only).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = server.cli(&["health"]);
        let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if status == "NOT_SERVING" {
            assert_ne!(out.status.code(), Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "health still says {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.logs().contains("read-only"), "{}", server.logs());
    server.kill();
    // Reopened without the limit: the failed write's torn bytes are cut, nothing acked is lost.
    server.restart();
    rt().block_on(async {
        let c = server.client().await;
        let events = read_big(&c).await;
        assert_eq!(events.len(), acked.len());
        c.append(
            "big",
            Exp::Exact(acked.len() as u64 - 1),
            vec![EventData::json("After", &1).unwrap()],
        )
        .await
        .unwrap();
    });
    assert_eq!(server.cli(&["health"]).status.code(), Some(0));
}

/// SIGTERM the moment the server says it listens (or even earlier) still shuts it down
/// cleanly: the handlers are installed before recovery starts.
#[test]
fn sigterm_right_after_start_is_a_clean_shutdown() {
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::start(dir.path(), &[]);
        let status = server.terminate();
        assert!(status.success(), "{status:?}: {}", server.logs());
        assert!(server.logs().contains("store closed cleanly"));
    }
}
