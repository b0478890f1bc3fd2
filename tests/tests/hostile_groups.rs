//! Regression tests for the hardening issue, on consumer groups, filters and the KurrentDB
//! API: what hostile clients did through them, each checked against the real binary.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use strata_client::{
    Client, Error, EventData, ExpectedRevision as Exp, GroupMessage, GroupSettings, GroupStart,
    NackAction, ReadOptions,
};
use strata_kurrentdb_proto::event_store::client::{self as kc, streams as ks};
use strata_tests::{group_from_start as from_start, rt, Server};
use uuid::Uuid;

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
        let before = server.cpu_ticks();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let used = server.cpu_ticks() - before;
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
fn a_kurrentdb_nack_with_an_unknown_action_ends_the_consumer_with_invalid_argument() {
    use strata_kurrentdb_proto::event_store::client::persistent_subscriptions as kp;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        c.append("jobs", Exp::Any, vec![EventData::json("E", &1).unwrap()])
            .await
            .unwrap();
        c.create_group("jobs", "g", from_start()).await.unwrap();
        let mut client =
            kp::persistent_subscriptions_client::PersistentSubscriptionsClient::connect(
                server.url(),
            )
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(kp::ReadReq {
            content: Some(kp::read_req::Content::Options(kp::read_req::Options {
                stream_option: Some(kp::read_req::options::StreamOption::StreamIdentifier(
                    kc::StreamIdentifier {
                        stream_name: b"jobs".to_vec().into(),
                    },
                )),
                group_name: "g".into(),
                buffer_size: 10,
                uuid_option: None,
            })),
        })
        .await
        .unwrap();
        let mut responses = client
            .read(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        // Confirmation, then the event.
        responses.message().await.unwrap().unwrap();
        let event = responses.message().await.unwrap().unwrap();
        let Some(kp::read_resp::Content::Event(e)) = event.content else {
            panic!("{event:?}")
        };
        let id = e.event.unwrap().id.unwrap();
        tx.send(kp::ReadReq {
            content: Some(kp::read_req::Content::Nack(kp::read_req::Nack {
                id: Default::default(),
                ids: vec![id],
                action: 9,
                reason: "?".into(),
            })),
        })
        .await
        .unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match responses.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("ended without an error"),
                    Err(s) => break s,
                }
            }
        });
        let status = ended
            .await
            .expect("the call must end with an error, not go on");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("nack action 9"), "{status:?}");
    });
}

/// Twenty groups on a stream of 200 events of 256 KiB, none consumed: each would buffer the
/// whole stream (50 MiB) ahead of its consumers, 1 GiB together. The buffers of all groups
/// share one bound (`--group-buffer-memory`), so the server holds about that bound instead.
#[test]
fn the_buffers_of_all_groups_together_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--group-buffer-memory", "16MiB"]);
    rt().block_on(async {
        let client = server.client().await;
        for chunk in 0..100 {
            let events = (0..2)
                .map(|i| EventData::binary("big", vec![(chunk * 2 + i) as u8; 256 * 1024]))
                .collect();
            client.append("large", Exp::Any, events).await.unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let start = server.rss_kib();
    rt().block_on(async {
        let client = server.client().await;
        for g in 0..20 {
            client
                .create_group("large", &format!("g{g}"), from_start())
                .await
                .unwrap();
        }
        // Every group has read what the bound lets it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let groups = client.list_groups(Some("large")).await.unwrap();
            if groups.iter().all(|g| g.buffered > 0) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let grown = server.rss_kib().saturating_sub(start);
    assert!(
        grown < 96 * 1024,
        "twenty idle groups grew the server by {grown} KiB with --group-buffer-memory 16MiB"
    );
    // And they still deliver everything, in order, once consumed.
    rt().block_on(async {
        let client = server.client().await;
        let mut consumer = client.consume_group("large", "g0", 10).await.unwrap();
        for expected in 0..200u64 {
            let next = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await;
            let Ok(Some(Ok(GroupMessage::Event(m)))) = next else {
                panic!("no event {expected} from the group: {next:?}")
            };
            assert_eq!(m.event.revision, expected);
            consumer.ack(&[m.event.id]).await.unwrap();
        }
    });
}
