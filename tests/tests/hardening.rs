//! Regression tests for the hardening issue: what careless or hostile clients and operators
//! did to a running (or stopped) server, each checked against the real binary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use strata_client::{
    Client, Error, EventData, ExpectedRevision as Exp, GroupMessage, GroupSettings, GroupStart,
    NackAction, ReadOptions,
};
use strata_kurrentdb_proto::event_store::client::{self as kc, streams as ks};
use strata_tests::{rt, strata_bin, Server};
use uuid::Uuid;

fn from_start() -> GroupSettings {
    GroupSettings {
        start_from: Some(GroupStart::Start),
        ..Default::default()
    }
}

async fn read_all_of(c: &Client, stream: &str) -> Vec<strata_client::RecordedEvent> {
    c.read_stream(stream, ReadOptions::default())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// One KurrentDB v1 `Append` of `events` (type, data) to `stream` with `any` expected.
async fn kurrent_append(
    url: &str,
    stream: &str,
    events: &[(&str, &[u8])],
) -> Result<ks::AppendResp, tonic::Status> {
    let mut client = ks::streams_client::StreamsClient::connect(url.to_owned())
        .await
        .unwrap();
    let mut reqs = vec![ks::AppendReq {
        content: Some(ks::append_req::Content::Options(ks::append_req::Options {
            stream_identifier: Some(kc::StreamIdentifier {
                stream_name: stream.as_bytes().to_vec().into(),
            }),
            expected_stream_revision: Some(ks::append_req::options::ExpectedStreamRevision::Any(
                kc::Empty {},
            )),
        })),
    }];
    for (ty, data) in events {
        reqs.push(ks::AppendReq {
            content: Some(ks::append_req::Content::ProposedMessage(
                ks::append_req::ProposedMessage {
                    id: Some(kc::Uuid {
                        value: Some(kc::uuid::Value::String(Uuid::new_v4().to_string())),
                    }),
                    metadata: [
                        ("type".to_owned(), ty.to_string()),
                        ("content-type".to_owned(), "application/json".to_owned()),
                    ]
                    .into(),
                    custom_metadata: Default::default(),
                    data: data.to_vec().into(),
                },
            )),
        });
    }
    client
        .append(futures::stream::iter(reqs))
        .await
        .map(|r| r.into_inner())
}

#[test]
fn consumer_group_streams_are_out_of_reach_of_clients_and_read_raw() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--durability", "no-sync"]);
    let url = server.url();
    rt().block_on(async {
        let c = server.client().await;
        for g in ["g1", "g2", "g3"] {
            c.create_group("orders", g, from_start()).await.unwrap();
        }
        // Retention on the config stream through the KurrentDB API used to be accepted and
        // then erased groups at the next restart.
        let err = kurrent_append(
            &url,
            "$$$persistentSubscriptionConfig",
            &[("$metadata", br#"{"$maxCount": 1}"#)],
        )
        .await
        .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("consumer groups"), "{err:?}");
        for stream in [
            "$persistentSubscriptionConfig",
            "$persistentsubscription-orders::g1-checkpoint",
        ] {
            let err = kurrent_append(&url, stream, &[("Evil", b"{}")])
                .await
                .expect_err("refused");
            assert_eq!(
                err.code(),
                tonic::Code::InvalidArgument,
                "{stream}: {err:?}"
            );
        }
    });
    assert!(server.terminate().success());
    // Even retention that got into the log (an older server accepted it) hides nothing from
    // the server, which reads its own streams raw.
    {
        let engine = strata_engine::Engine::open(strata_engine::Config::new(dir.path())).unwrap();
        let meta = strata_engine::StreamMetadata {
            max_count: Some(1),
            ..Default::default()
        };
        rt().block_on(engine.set_system_stream_metadata(
            "$persistentSubscriptionConfig",
            strata_engine::ExpectedRevision::Any,
            meta,
        ))
        .unwrap();
        engine.close().unwrap();
    }
    server.restart();
    rt().block_on(async {
        let c = server.client().await;
        let mut names: Vec<String> = c
            .list_groups(Some("orders"))
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.group)
            .collect();
        names.sort();
        assert_eq!(names, ["g1", "g2", "g3"]);
    });
}

/// Takes one event from a group and parks it; returns its data.
async fn park_one(c: &Client, stream: &str, group: &str) -> String {
    let mut consumer = c.consume_group(stream, group, 10).await.unwrap();
    let Some(Ok(GroupMessage::Event(e))) = consumer.next().await else {
        panic!("no event for {stream}/{group}")
    };
    consumer
        .nack(&[e.event.id], NackAction::Park, "test")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.group_info(stream, group).await.unwrap().parked < 1 {
        assert!(Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    String::from_utf8(e.event.data.to_vec()).unwrap()
}

#[test]
fn group_names_that_look_alike_never_share_system_streams() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        c.append(
            "a::b",
            Exp::Any,
            vec![EventData::json("E", "first").unwrap()],
        )
        .await
        .unwrap();
        c.append("a", Exp::Any, vec![EventData::json("E", "second").unwrap()])
            .await
            .unwrap();
        c.create_group("a::b", "c", from_start()).await.unwrap();
        c.create_group("a", "b::c", from_start()).await.unwrap();
        assert_eq!(park_one(&c, "a::b", "c").await, "\"first\"");
        assert_eq!(park_one(&c, "a", "b::c").await, "\"second\"");
    });
    assert!(server.terminate().success());
    server.restart();
    rt().block_on(async {
        let c = server.client().await;
        for (stream, group, want) in [("a", "b::c", "\"second\""), ("a::b", "c", "\"first\"")] {
            assert_eq!(c.group_info(stream, group).await.unwrap().parked, 1);
            assert_eq!(c.replay_parked(stream, group, None).await.unwrap(), 1);
            let mut consumer = c.consume_group(stream, group, 10).await.unwrap();
            let Some(Ok(GroupMessage::Event(e))) = consumer.next().await else {
                panic!("no replayed event for {stream}/{group}")
            };
            assert_eq!(
                String::from_utf8_lossy(&e.event.data),
                want,
                "{stream}/{group}"
            );
            consumer.ack(&[e.event.id]).await.unwrap();
        }
    });
}

#[test]
fn deleting_lock_and_index_never_lets_a_second_server_open_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start(dir.path(), &[]);
    let _ = std::fs::remove_file(dir.path().join("LOCK"));
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let (code, stderr) = Server::refused(dir.path(), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("locked by another process"), "{stderr}");
}

#[test]
fn the_same_event_ids_in_two_streams_are_two_sets_of_events_and_nil_ids_are_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        let events: Vec<EventData> = (0..3).map(|i| EventData::json("E", &i).unwrap()).collect();
        let a = c
            .append("first", Exp::NoStream, events.clone())
            .await
            .unwrap();
        let b = c
            .append("second", Exp::NoStream, events.clone())
            .await
            .unwrap();
        assert!(!b.idempotent_replay);
        assert_ne!(a.position, b.position);
        // A retry in its own stream is still recognised.
        let again = c.append("second", Exp::Any, events.clone()).await.unwrap();
        assert!(again.idempotent_replay);
        assert_eq!(read_all_of(&c, "second").await.len(), 3);

        // The nil UUID is not an identity: two such events are two events.
        for i in 0..2 {
            let mut e = EventData::json("E", &i).unwrap();
            e.id = Uuid::nil();
            let r = c.append("nil", Exp::Any, vec![e]).await.unwrap();
            assert!(!r.idempotent_replay);
        }
        let stored = read_all_of(&c, "nil").await;
        assert_eq!(stored.len(), 2);
        assert!(stored.iter().all(|e| !e.id.is_nil()));

        // NUL in an event type is refused, naming the field.
        let err = c
            .append("t", Exp::Any, vec![EventData::json("A\0B", &1).unwrap()])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    });
}

/// A stopped store spread over several 4 KiB segments; returns its segment files in order.
fn store_in_segments(dir: &Path) -> Vec<PathBuf> {
    let mut server = Server::start(dir, &["--segment-size", "4KiB"]);
    rt().block_on(async {
        let c = server.client().await;
        for i in 0..120 {
            c.append(
                &format!("s-{}", i % 3),
                Exp::Any,
                vec![EventData::json("E", &"x".repeat(100)).unwrap()],
            )
            .await
            .unwrap();
        }
    });
    assert!(server.terminate().success());
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "{segs:?}");
    segs
}

fn verify(dir: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(strata_bin())
        .args(["verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_segment_is_named_at_open_and_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let segs = store_in_segments(dir.path());
    let stash = dir.path().join("stash");
    for victim in [&segs[0], &segs[1], segs.last().unwrap()] {
        let name = victim.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::rename(victim, &stash).unwrap();
        let (code, stderr) = Server::refused(dir.path(), &[]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&name) && stderr.contains("missing"),
            "{stderr}"
        );
        let (code, stderr) = verify(dir.path());
        assert_eq!(code, Some(8), "{stderr}");
        assert!(stderr.contains(&name), "{stderr}");
        std::fs::rename(&stash, victim).unwrap();
    }
    assert_eq!(verify(dir.path()).0, Some(0));
}

#[test]
fn a_lost_acknowledged_tail_refuses_to_start_unless_the_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let revisions = rt().block_on(async {
        let c = server.client().await;
        let mut last = 0;
        for i in 0..50 {
            last = c
                .append("acked", Exp::Any, vec![EventData::json("E", &i).unwrap()])
                .await
                .unwrap()
                .revision;
        }
        last
    });
    assert_eq!(revisions, 49);
    assert!(server.terminate().success());
    let seg = dir
        .path()
        .join("log")
        .join(strata_engine::format::segment_file_name(0));
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 500)
        .unwrap();
    let (code, stderr) = Server::refused(dir.path(), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("acknowledged data is missing") && stderr.contains("--accept-data-loss"),
        "{stderr}"
    );
    // Still refused on a second try: nothing was changed by the refusal.
    assert_eq!(Server::refused(dir.path(), &[]).0, Some(1));
    let server = Server::start(dir.path(), &["--accept-data-loss"]);
    assert!(
        server.logs().contains("loss was accepted"),
        "{}",
        server.logs()
    );
    rt().block_on(async {
        let c = server.client().await;
        let left = read_all_of(&c, "acked").await.len();
        assert!(left < 50 && left > 0, "{left}");
    });
}

#[test]
fn deleting_the_newest_segment_under_a_running_server_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let acked: Vec<Uuid> = rt().block_on(async {
        let c = Client::builder(server.url())
            .append_retries(0)
            .connect()
            .await
            .unwrap();
        let mut acked = Vec::new();
        for i in 0..50 {
            let e = EventData::json("E", &i).unwrap();
            let id = e.id;
            c.append("s", Exp::Any, vec![e]).await.unwrap();
            acked.push(id);
        }
        let seg = dir
            .path()
            .join("log")
            .join(strata_engine::format::segment_file_name(0));
        std::fs::remove_file(&seg).unwrap();
        // The next write notices before acknowledging (or the periodic check did already):
        // writes stop, and the file is put back from the open file.
        let err = c
            .append("s", Exp::Any, vec![EventData::json("E", &"late").unwrap()])
            .await
            .unwrap_err();
        match err {
            Error::Unavailable(m) => assert!(m.contains("deleted"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(seg.exists(), "the segment was put back");
        acked
    });
    server.kill();
    server.restart();
    rt().block_on(async {
        let c = server.client().await;
        let stored: Vec<Uuid> = read_all_of(&c, "s").await.iter().map(|e| e.id).collect();
        assert!(
            stored.len() >= acked.len(),
            "{} < {}",
            stored.len(),
            acked.len()
        );
        assert_eq!(&stored[..acked.len()], &acked[..]);
    });
}

#[test]
fn sigterm_exits_within_the_grace_period_whatever_is_running() {
    use strata_proto::v1::{server_client::ServerClient, FloodRequest};
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--durability", "no-sync"]);
    let runtime = rt();
    // A stream whose client stopped reading: its response can never finish.
    let _stalled = runtime.block_on(async {
        let mut client = ServerClient::connect(server.url()).await.unwrap();
        let mut flood = client
            .flood(FloodRequest {
                count: u32::MAX,
                size: 64 * 1024,
            })
            .await
            .unwrap()
            .into_inner();
        flood.message().await.unwrap().unwrap();
        (client, flood)
    });
    let started = Instant::now();
    let status = server.terminate();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(25), "took {took:?}");
    assert!(
        server.logs().contains("closing their connections"),
        "{}",
        server.logs()
    );
    assert!(status.code().is_some(), "{status:?}");
    // The lock went with the process: a replacement starts at once.
    server.restart();
}

#[test]
fn silent_connections_are_closed_and_the_connection_cap_holds() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--handshake-timeout", "1s", "--max-connections", "20"],
    );
    // 30 peers that connect and say nothing: 20 are held until the handshake deadline, the
    // rest are closed at once.
    let mut silent: Vec<std::net::TcpStream> = (0..30)
        .map(|_| std::net::TcpStream::connect(server.addr).unwrap())
        .collect();
    let started = Instant::now();
    let mut closed_at = Vec::new();
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 64];
        // EOF or a reset: the server closed it.
        let _ = s.read(&mut b);
        closed_at.push(started.elapsed());
    }
    assert!(
        closed_at.iter().all(|t| *t < Duration::from_secs(8)),
        "{closed_at:?}"
    );
    assert!(
        server.logs().contains("connection limit"),
        "{}",
        server.logs()
    );
    // Real clients are served again.
    rt().block_on(async {
        let c = server.client().await;
        c.append("after", Exp::Any, vec![EventData::json("E", &1).unwrap()])
            .await
            .unwrap();
    });
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn running_out_of_file_descriptors_is_logged_not_spun_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_fd_limit(dir.path(), &["--handshake-timeout", "2s"], 64);
    let silent: Vec<std::net::TcpStream> = (0..100)
        .filter_map(|_| std::net::TcpStream::connect(server.addr).ok())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.logs().contains("out of file descriptors") {
        assert!(Instant::now() < deadline, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    // While the limit is hit, the accept loop backs off instead of spinning a core.
    let before = cpu_ticks(server.pid());
    std::thread::sleep(Duration::from_millis(1000));
    let used = cpu_ticks(server.pid()) - before;
    assert!(used < 50, "{used} ticks of CPU in 1 s");
    drop(silent);
    // Once the silent peers are gone the server serves again.
    rt().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = async {
                let c = Client::connect(server.url()).await.ok()?;
                c.append("after", Exp::Any, vec![EventData::json("E", &1).unwrap()])
                    .await
                    .ok()
            }
            .await;
            if ok.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "{}", server.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn messages_of_a_consumer_that_leaves_are_redelivered_in_event_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        for i in 0..20 {
            c.append("jobs", Exp::Any, vec![EventData::json("E", &i).unwrap()])
                .await
                .unwrap();
        }
        c.create_group("jobs", "g", from_start()).await.unwrap();
        let mut first = c.consume_group("jobs", "g", 20).await.unwrap();
        for _ in 0..20 {
            let Some(Ok(GroupMessage::Event(_))) = first.next().await else {
                panic!("expected an event")
            };
        }
        let mut second = c.consume_group("jobs", "g", 20).await.unwrap();
        drop(first);
        let mut revisions = Vec::new();
        while revisions.len() < 20 {
            let Some(Ok(GroupMessage::Event(e))) = second.next().await else {
                panic!("expected a redelivery")
            };
            revisions.push(e.event.revision);
        }
        assert_eq!(revisions, (0..20).collect::<Vec<u64>>());
    });
}

#[test]
fn hostile_regex_filters_fail_fast_and_their_groups_stay_deletable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    let evil = r"(a*)*\1b";
    rt().block_on(async {
        let c = server.client().await;
        let name = "a".repeat(120);
        for _ in 0..20 {
            let events = (0..100)
                .map(|i| EventData::json("E", &i).unwrap())
                .collect();
            c.append(&name, Exp::Any, events).await.unwrap();
        }
        // A read: an error naming the pattern's budget, in moments, not minutes.
        let started = Instant::now();
        let read = async {
            let s = c
                .read_all(ReadOptions {
                    filter: Some(strata_client::Filter::stream_regex(evil)),
                    ..Default::default()
                })
                .await?;
            s.try_collect::<Vec<_>>().await
        }
        .await;
        let err = read.expect_err("the filter must be refused");
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        assert!(format!("{err:?}").contains("backtracking"), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );

        // An oversized pattern is refused before it is compiled.
        let err = match c
            .read_all(ReadOptions {
                filter: Some(strata_client::Filter::stream_regex("a".repeat(1 << 20))),
                ..Default::default()
            })
            .await
        {
            Ok(s) => s.try_collect::<Vec<_>>().await.unwrap_err(),
            Err(e) => e,
        };
        assert!(format!("{err:?}").contains("over the limit"), "{err:?}");

        // A consumer group with that filter neither burns a core nor resists deletion.
        let settings = GroupSettings {
            start_from: Some(GroupStart::Start),
            filter: Some(strata_client::Filter::stream_regex(evil)),
            ..Default::default()
        };
        c.create_group("$all", "evil", settings).await.unwrap();
        let before = server_cpu(&server);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let used = server_cpu(&server) - before;
        assert!(used < 100, "{used} ticks of CPU in 2 s");
        let started = Instant::now();
        c.delete_group("$all", "evil").await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        // The KurrentDB clients' default filter still works.
        let s = c
            .read_all(ReadOptions {
                filter: Some(strata_client::Filter::event_type_regex(r"^(?!\$).*")),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(s.try_collect::<Vec<_>>().await.unwrap().len(), 2000);
    });
}

fn server_cpu(server: &Server) -> u64 {
    cpu_ticks(server.pid())
}

#[test]
fn the_number_of_groups_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--durability", "no-sync", "--max-groups", "3"],
    );
    rt().block_on(async {
        let c = server.client().await;
        for g in ["a", "b", "c"] {
            c.create_group("s", g, from_start()).await.unwrap();
        }
        let err = c.create_group("s", "d", from_start()).await.unwrap_err();
        match err {
            Error::Server { code, message } => {
                assert_eq!(code, tonic::Code::ResourceExhausted);
                assert!(message.contains("--max-groups"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Deleting one makes room.
        c.delete_group("s", "a").await.unwrap();
        c.create_group("s", "d", from_start()).await.unwrap();
    });
}

#[test]
fn a_damaged_record_does_not_hide_the_groups_from_list_groups() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    // Event 5 of `data` lies behind 101,000 later events: opening does not re-read it.
    let position = {
        let mut config = strata_engine::Config::new(dir.path());
        config.durability = strata_engine::Durability::NoSync;
        let engine = strata_engine::Engine::open(config).unwrap();
        let position = rt().block_on(async {
            let mut position = 0;
            for i in 0..20 {
                let r = engine
                    .append(
                        "data",
                        strata_engine::ExpectedRevision::Any,
                        vec![strata_engine::EventData::json("E", format!("{i}"))],
                    )
                    .await
                    .unwrap();
                if i == 5 {
                    position = r.position;
                }
            }
            for batch in 0..101 {
                let events = (0..1000)
                    .map(|i| strata_engine::EventData::json("Bulk", format!("{i}")))
                    .collect();
                engine
                    .append(
                        &format!("bulk-{batch}"),
                        strata_engine::ExpectedRevision::Any,
                        events,
                    )
                    .await
                    .unwrap();
            }
            position
        });
        engine.close().unwrap();
        position
    };
    let mut server = Server::start(dir.path(), &["--verify-log", "off"]);
    rt().block_on(async {
        let c = server.client().await;
        c.create_group("$all", "all", from_start()).await.unwrap();
        c.create_group("data", "one", from_start()).await.unwrap();
    });
    assert!(server.terminate().success());
    // Flip a byte inside the record of event 5 (behind the index checkpoint, so opening does
    // not look at it).
    let seg = dir
        .path()
        .join("log")
        .join(strata_engine::format::segment_file_name(0));
    let offset = strata_engine::format::SEGMENT_HEADER_LEN + position + 20;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
    drop(f);
    server.restart();
    rt().block_on(async {
        let c = server.client().await;
        let mut names: Vec<String> = c
            .list_groups(None)
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.group)
            .collect();
        names.sort();
        assert_eq!(names, ["all", "one"]);
    });
}

#[test]
fn unknown_enum_values_on_the_kurrentdb_api_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let mut client = ks::streams_client::StreamsClient::connect(server.url())
            .await
            .unwrap();
        let request = ks::ReadReq {
            options: Some(ks::read_req::Options {
                stream_option: Some(ks::read_req::options::StreamOption::All(
                    ks::read_req::options::AllOptions {
                        all_option: Some(ks::read_req::options::all_options::AllOption::Start(
                            kc::Empty {},
                        )),
                    },
                )),
                read_direction: 7,
                resolve_links: false,
                count_option: Some(ks::read_req::options::CountOption::Count(10)),
                filter_option: None,
                uuid_option: None,
                control_option: None,
            }),
        };
        let status = match client.read(request).await {
            Err(s) => s,
            Ok(r) => r.into_inner().message().await.unwrap_err(),
        };
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("read_direction 7"), "{status:?}");
    });
}

#[test]
fn a_store_whose_index_cannot_be_written_opens_read_only_and_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        for i in 0..20 {
            c.append(
                &format!("s-{}", i % 4),
                Exp::Any,
                vec![EventData::json("E", &"x".repeat(3000)).unwrap()],
            )
            .await
            .unwrap();
        }
    });
    assert!(server.terminate().success());
    // As on a full disk: no file may grow past the index's current size.
    let limit = std::fs::metadata(dir.path().join("index").join("db"))
        .unwrap()
        .len();
    let mut full = Server::start_with_file_limit(dir.path(), &[], limit);
    assert!(full.logs().contains("cannot be written"), "{}", full.logs());
    rt().block_on(async {
        let c = Client::builder(full.url())
            .append_retries(0)
            .connect()
            .await
            .unwrap();
        for s in 0..4 {
            assert_eq!(read_all_of(&c, &format!("s-{s}")).await.len(), 5);
        }
        let err = c
            .append("s-0", Exp::Any, vec![EventData::json("E", &1).unwrap()])
            .await
            .unwrap_err();
        match err {
            Error::Unavailable(m) => assert!(m.contains("index"), "{m}"),
            other => panic!("{other:?}"),
        }
    });
    // Repeated flush failures are not logged over and over.
    assert!(full.logs().matches("index flush failed").count() <= 1);
    full.terminate();
    // With space again, the store opens writable with everything in it.
    let server = Server::start(dir.path(), &[]);
    rt().block_on(async {
        let c = server.client().await;
        let r = c
            .append("s-0", Exp::Any, vec![EventData::json("E", &1).unwrap()])
            .await
            .unwrap();
        assert_eq!(r.revision, 5);
    });
}
