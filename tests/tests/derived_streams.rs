//! Derived streams (`$ce-<category>`, `$et-<event type>`) through Strata's own API and client,
//! against the real server: reads both ways from any revision, catch-up subscriptions into
//! live, entries of deleted events, restarts and an index rebuilt from the log.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use strata_client::{
    Client, Error, EventData, ExpectedRevision as Exp, ReadFrom, ReadOptions, RecordedEvent,
    SubscribeFrom, SubscriptionMessage,
};
use strata_tests::{rt, Server};

async fn read(c: &Client, stream: &str, opts: ReadOptions) -> Vec<RecordedEvent> {
    let events = if stream == "$all" {
        c.read_all(opts).await
    } else {
        c.read_stream(stream, opts).await
    };
    events.unwrap().try_collect().await.unwrap()
}

/// (listed revision, own stream, own revision, resolvable) of each entry.
fn entries(events: &[RecordedEvent]) -> Vec<(u64, String, u64, bool)> {
    events
        .iter()
        .map(|e| {
            let l = e.listed_in.as_ref().expect("listed_in is set");
            (l.revision, e.stream.clone(), e.revision, !l.unresolved)
        })
        .collect()
}

async fn next(sub: &mut strata_client::Subscription) -> SubscriptionMessage {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("subscription message within 10 s")
        .expect("subscription open")
        .unwrap()
}

async fn seed(c: &Client) {
    for (stream, ty) in [
        ("order-1", "Placed"),
        ("order-2", "Placed"),
        ("user-1", "Registered"),
        ("order-1", "Shipped"),
        ("order-2", "Shipped"),
    ] {
        c.append(
            stream,
            Exp::Any,
            vec![EventData::json_bytes(ty, b"{}".to_vec())],
        )
        .await
        .unwrap();
    }
}

#[test]
fn category_and_type_streams_are_read_and_subscribed_with_stable_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        dir.path(),
        &["--durability", "no-sync", "--derived-streams"],
    );
    let expected = vec![
        (0, "order-1".to_owned(), 0, true),
        (1, "order-2".to_owned(), 0, true),
        (2, "order-1".to_owned(), 1, true),
        (3, "order-2".to_owned(), 1, true),
    ];
    rt().block_on(async {
        let c = server.client().await;
        seed(&c).await;
        let forwards = read(&c, "$ce-order", ReadOptions::default()).await;
        assert_eq!(entries(&forwards), expected);
        assert_eq!(forwards[2].event_type, "Shipped");
        // $streams: every stream's first event, in the order the streams were created.
        assert_eq!(
            entries(&read(&c, "$streams", ReadOptions::default()).await),
            vec![
                (0, "order-1".to_owned(), 0, true),
                (1, "order-2".to_owned(), 0, true),
                (2, "user-1".to_owned(), 0, true),
            ]
        );
        let mut back = entries(&read(&c, "$ce-order", ReadOptions::default().backwards()).await);
        back.reverse();
        assert_eq!(back, expected);
        let from_two = read(
            &c,
            "$ce-order",
            ReadOptions::default()
                .from(ReadFrom::Revision(2))
                .max_count(1),
        )
        .await;
        assert_eq!(entries(&from_two), expected[2..3].to_vec());
        let placed = entries(&read(&c, "$et-Placed", ReadOptions::default()).await);
        assert_eq!(
            placed,
            vec![
                (0, "order-1".to_owned(), 0, true),
                (1, "order-2".to_owned(), 0, true)
            ]
        );
        assert!(matches!(
            c.read_stream("$ce-nothing", ReadOptions::default()).await,
            Err(Error::StreamNotFound { .. })
        ));
        // Derived streams are not written to.
        let err = c
            .append(
                "$ce-order",
                Exp::Any,
                vec![EventData::json_bytes("X", b"{}".to_vec())],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("$ce-order"),
            "{err}"
        );

        // A catch-up subscription after revision 0 of $et-Placed: history, caught up, live.
        let mut sub = c
            .subscribe("$et-Placed", SubscribeFrom::AfterRevision(0), None)
            .await
            .unwrap();
        match next(&mut sub).await {
            SubscriptionMessage::Event(e) => {
                assert_eq!(e.listed_in.unwrap().revision, 1);
                assert_eq!(e.stream, "order-2");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            next(&mut sub).await,
            SubscriptionMessage::CaughtUp { position: 2 }
        ));
        c.append(
            "order-3",
            Exp::NoStream,
            vec![EventData::json_bytes("Placed", b"{}".to_vec())],
        )
        .await
        .unwrap();
        match next(&mut sub).await {
            SubscriptionMessage::Event(e) => {
                assert_eq!(e.listed_in.unwrap().revision, 2);
                assert_eq!(e.stream, "order-3");
            }
            other => panic!("{other:?}"),
        }

        // Deleting order-1 leaves its entries in place, unresolved: revisions do not move.
        c.delete_stream("order-1", Exp::Any).await.unwrap();
        let after = read(&c, "$ce-order", ReadOptions::default()).await;
        let resolvable: Vec<bool> = entries(&after).iter().map(|e| e.3).collect();
        assert_eq!(resolvable, vec![false, true, false, true, true]);
        assert!(after[0].data.is_empty() && after[0].event_type.is_empty());
        assert_eq!(
            (after[0].stream.as_str(), after[0].revision),
            ("order-1", 0)
        );
    });

    // The same revisions after a restart, and after the index is rebuilt from the log.
    let snapshot = |server: &Server| {
        rt().block_on(async {
            let c = server.client().await;
            entries(&read(&c, "$ce-order", ReadOptions::default()).await)
        })
    };
    let before = snapshot(&server);
    server.terminate();
    server.restart();
    assert_eq!(snapshot(&server), before);
    server.terminate();
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let server = Server::start(
        dir.path(),
        &["--durability", "no-sync", "--derived-streams"],
    );
    assert_eq!(snapshot(&server), before);
}

#[test]
fn a_server_without_derived_streams_says_how_to_turn_them_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        seed(&c).await;
        let err = match c.read_stream("$ce-order", ReadOptions::default()).await {
            Err(e) => e,
            Ok(s) => s.try_collect::<Vec<_>>().await.unwrap_err(),
        };
        assert!(err.to_string().contains("--derived-streams"), "{err}");
        let err = c
            .subscribe("$et-Placed", SubscribeFrom::Start, None)
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("--derived-streams"), "{err}");
        let err = c
            .create_group("$ce-order", "g", strata_tests::group_from_start())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--derived-streams"), "{err}");
    });
}

/// The next event a group consumer gets.
async fn group_next(consumer: &mut strata_client::GroupConsumer, what: &str) -> RecordedEvent {
    match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
        Ok(Some(Ok(strata_client::GroupMessage::Event(e)))) => e.event,
        other => panic!("expected a group event ({what}), got {other:?}"),
    }
}

#[test]
fn a_consumer_group_on_a_category_acks_entries_and_resumes_after_restart() {
    use strata_client::NackAction;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        dir.path(),
        &["--durability", "no-sync", "--derived-streams"],
    );
    rt().block_on(async {
        let c = server.client().await;
        seed(&c).await;
        c.create_group("$ce-order", "g", strata_tests::group_from_start())
            .await
            .unwrap();
        let mut consumer = c.consume_group("$ce-order", "g", 10).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(group_next(&mut consumer, "history").await);
        }
        assert_eq!(
            entries(&got),
            vec![
                (0, "order-1".to_owned(), 0, true),
                (1, "order-2".to_owned(), 0, true),
                (2, "order-1".to_owned(), 1, true),
                (3, "order-2".to_owned(), 1, true),
            ]
        );
        // An ack by the event's own ID is not the entry's: the group rejects it.
        consumer.ack(&[got[0].id]).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
            Ok(Some(Ok(strata_client::GroupMessage::Rejected { event_ids, .. }))) => {
                assert_eq!(event_ids, vec![got[0].id.to_string()])
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        // Park entry 0, ack the others by their entry IDs, replay: entry 0 comes back.
        consumer
            .nack(&[got[0].ack_id()], NackAction::Park, "test")
            .await
            .unwrap();
        let rest: Vec<_> = got[1..].iter().map(RecordedEvent::ack_id).collect();
        consumer.ack(&rest).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while c.group_info("$ce-order", "g").await.unwrap().parked < 1 {
            assert!(std::time::Instant::now() < deadline, "never parked");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.replay_parked("$ce-order", "g", None).await.unwrap();
        let again = group_next(&mut consumer, "replayed").await;
        assert_eq!(entries(std::slice::from_ref(&again)), entries(&got[..1]));
        consumer.ack(&[again.ack_id()]).await.unwrap();
    });
    // After a restart the group resumes after what was settled: the next entry is new.
    server.terminate();
    server.restart();
    rt().block_on(async {
        let c = server.client().await;
        c.append(
            "order-9",
            Exp::Any,
            vec![EventData::json_bytes("Placed", b"{}".to_vec())],
        )
        .await
        .unwrap();
        let mut consumer = c.consume_group("$ce-order", "g", 10).await.unwrap();
        let e = match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
            Ok(Some(Ok(strata_client::GroupMessage::Event(e)))) => e.event,
            other => panic!(
                "after the restart: {other:?}\ninfo: {:?}\nlogs:\n{}",
                c.group_info("$ce-order", "g").await,
                server.logs()
            ),
        };
        assert_eq!(entries(&[e]), vec![(4, "order-9".to_owned(), 0, true)]);
    });
}

/// (stream, revision) of each event.
fn places(events: &[RecordedEvent]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| (e.stream.clone(), e.revision))
        .collect()
}

#[test]
fn index_filters_read_and_subscribe_all_by_category_and_event_type() {
    use strata_client::Filter;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--durability", "no-sync", "--derived-streams"],
    );
    let orders = vec![
        ("order-1".to_owned(), 0),
        ("order-2".to_owned(), 0),
        ("order-1".to_owned(), 1),
        ("order-2".to_owned(), 1),
    ];
    rt().block_on(async {
        let c = server.client().await;
        seed(&c).await;
        let all = |f: Filter| {
            let c = c.clone();
            async move { read(&c, "$all", ReadOptions::default().filter(f)).await }
        };
        let by_index = all(Filter::indexed(["order"], Vec::<String>::new())).await;
        assert_eq!(places(&by_index), orders);
        // Plain $all events, not entries of a derived stream.
        assert!(by_index.iter().all(|e| e.listed_in.is_none()));
        // A stream-name prefix that is a category answers the same.
        assert_eq!(
            places(&all(Filter::stream_prefix(["order-"])).await),
            orders
        );
        let typed = all(Filter::indexed(Vec::<String>::new(), ["Registered"])).await;
        assert_eq!(places(&typed), vec![("user-1".to_owned(), 0)]);
        let both = all(Filter::indexed(["user"], ["Shipped"])).await;
        assert_eq!(
            places(&both),
            vec![
                ("user-1".to_owned(), 0),
                ("order-1".to_owned(), 1),
                ("order-2".to_owned(), 1)
            ]
        );
        // Backwards, and from a position.
        let back = read(
            &c,
            "$all",
            ReadOptions::default()
                .filter(Filter::indexed(["order"], Vec::<String>::new()))
                .backwards(),
        )
        .await;
        let mut want = orders.clone();
        want.reverse();
        assert_eq!(places(&back), want);

        // A subscription catches up, then gets live events of the category only.
        let mut sub = c
            .subscribe(
                "$all",
                SubscribeFrom::Start,
                Some(Filter::indexed(["order"], Vec::<String>::new())),
            )
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 4 {
            match next(&mut sub).await {
                SubscriptionMessage::Event(e) => got.push(e),
                SubscriptionMessage::Checkpoint { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(places(&got), orders);
        loop {
            match next(&mut sub).await {
                SubscriptionMessage::CaughtUp { .. } => break,
                SubscriptionMessage::Checkpoint { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        for stream in ["user-2", "order-3"] {
            c.append(
                stream,
                Exp::Any,
                vec![EventData::json_bytes("Placed", b"{}".to_vec())],
            )
            .await
            .unwrap();
        }
        let live = loop {
            match next(&mut sub).await {
                SubscriptionMessage::Event(e) => break e,
                SubscriptionMessage::Checkpoint { .. } => {}
                other => panic!("{other:?}"),
            }
        };
        assert_eq!((live.stream.as_str(), live.revision), ("order-3", 0));
    });
    // The CLI's --category and --event-type.
    let out = server.cli(&[
        "read",
        "$all",
        "--category",
        "order",
        "--event-type",
        "Registered",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let streams: Vec<&str> = text.lines().map(|l| l.split('@').next().unwrap()).collect();
    assert_eq!(
        streams,
        ["order-1", "order-2", "user-1", "order-1", "order-2", "order-3"]
    );
    // A filter naming an index needs a server that keeps them.
    drop(server);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    let out = server.cli(&["read", "$all", "--category", "order"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--derived-streams"),
        "{out:?}"
    );
}
