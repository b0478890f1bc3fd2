//! Catch-up subscriptions against the real server: no gap and no duplicate across the
//! catch-up/live switch under concurrent writers, filtered $all checkpoints, slow consumers.

use std::time::Duration;

use futures::StreamExt;
use strata_client::{
    Client, EventData, ExpectedRevision as Exp, Filter, SubscribeFrom, SubscriptionMessage,
};
use strata_tests::{rt, Server};

/// Writers append `per_writer` events each to `stream` (or their own streams when `None`).
fn spawn_writers(
    url: String,
    writers: u64,
    per_writer: u64,
    stream: Option<&'static str>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let c = Client::connect(url).await.unwrap();
                let name = stream.map_or(format!("w-{w}"), str::to_owned);
                for i in 0..per_writer {
                    let e = EventData::json("Tick", &serde_json::json!({"w": w, "i": i})).unwrap();
                    c.append(&name, Exp::Any, vec![e]).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
}

#[test]
fn stream_subscription_sees_every_event_once_in_order_across_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        // History before the subscription, then writers that keep going while it catches up.
        for i in 0..500u64 {
            c.append(
                "shared",
                Exp::Any,
                vec![EventData::json("Pre", &i).unwrap()],
            )
            .await
            .unwrap();
        }
        let writers = spawn_writers(server.url(), 4, 750, Some("shared"));
        let mut sub = c
            .subscribe("shared", SubscribeFrom::Start, None)
            .await
            .unwrap();
        let mut next = 0u64;
        let mut caught_up = false;
        while next < 3500 {
            match tokio::time::timeout(Duration::from_secs(30), sub.next())
                .await
                .expect("stalled")
                .unwrap()
                .unwrap()
            {
                SubscriptionMessage::Event(e) => {
                    assert_eq!(e.revision, next, "gap or duplicate");
                    next += 1;
                }
                SubscriptionMessage::CaughtUp { .. } => caught_up = true,
                SubscriptionMessage::Checkpoint { .. } => {
                    panic!("no checkpoints on stream subscriptions")
                }
            }
        }
        writers.await.unwrap();
        assert!(caught_up, "a caught-up notice was sent");
        // Live after the writers stopped.
        c.append(
            "shared",
            Exp::Exact(3499),
            vec![EventData::json("Live", &1).unwrap()],
        )
        .await
        .unwrap();
        match tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            SubscriptionMessage::Event(e) => assert_eq!(e.revision, 3500),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn all_subscription_from_a_position_under_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        let first = c
            .append("seed", Exp::Any, vec![EventData::json("Seed", &0).unwrap()])
            .await
            .unwrap();
        let writers = spawn_writers(server.url(), 4, 600, None);
        // After the seed event: it must not be delivered.
        let mut sub = c
            .subscribe("$all", SubscribeFrom::AfterPosition(first.position), None)
            .await
            .unwrap();
        let mut last_pos = first.position;
        let mut per_writer = std::collections::HashMap::<String, u64>::new();
        let mut n = 0;
        while n < 2400 {
            if let SubscriptionMessage::Event(e) =
                tokio::time::timeout(Duration::from_secs(30), sub.next())
                    .await
                    .expect("stalled")
                    .unwrap()
                    .unwrap()
            {
                assert!(
                    e.position > last_pos,
                    "positions must increase: {} after {last_pos}",
                    e.position
                );
                last_pos = e.position;
                let v: serde_json::Value = e.json().unwrap();
                let seen = per_writer.entry(e.stream.clone()).or_default();
                assert_eq!(
                    v["i"].as_u64().unwrap(),
                    *seen,
                    "gap or duplicate in {}",
                    e.stream
                );
                *seen += 1;
                n += 1;
            }
        }
        writers.await.unwrap();
        assert_eq!(per_writer.len(), 4);
    });
}

#[test]
fn filtered_all_subscription_sends_checkpoints_and_only_matches() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        for i in 0..3000u64 {
            let stream = if i % 1000 == 999 { "rare-1" } else { "noise" };
            c.append(stream, Exp::Any, vec![EventData::json("E", &i).unwrap()])
                .await
                .unwrap();
        }
        let filter = Filter::stream_prefix(["rare-"]).checkpoint_interval(100);
        let mut sub = c
            .subscribe("$all", SubscribeFrom::Start, Some(filter))
            .await
            .unwrap();
        let (mut events, mut checkpoints) = (0, 0);
        loop {
            match tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                SubscriptionMessage::Event(e) => {
                    assert_eq!(e.stream, "rare-1");
                    events += 1;
                }
                SubscriptionMessage::Checkpoint { .. } => checkpoints += 1,
                SubscriptionMessage::CaughtUp { .. } => break,
            }
        }
        assert_eq!(events, 3);
        assert!(
            checkpoints >= 5,
            "only {checkpoints} checkpoints over 3000 records"
        );
    });
}

#[test]
fn subscription_from_end_gets_only_new_events_and_ends_on_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        c.append("s", Exp::Any, vec![EventData::json("Old", &1).unwrap()])
            .await
            .unwrap();
        let mut sub = c.subscribe("s", SubscribeFrom::End, None).await.unwrap();
        assert!(matches!(
            sub.next().await.unwrap().unwrap(),
            SubscriptionMessage::CaughtUp { position: 1 }
        ));
        c.append("s", Exp::Any, vec![EventData::json("New", &2).unwrap()])
            .await
            .unwrap();
        match sub.next().await.unwrap().unwrap() {
            SubscriptionMessage::Event(e) => {
                assert_eq!((e.revision, e.event_type.as_str()), (1, "New"))
            }
            other => panic!("{other:?}"),
        }
        c.tombstone_stream("s", Exp::Any).await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(end, Err(strata_client::Error::StreamDeleted { .. })),
            "{end:?}"
        );
    });
}

#[test]
fn slow_subscriber_gets_everything_without_growing_server_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        let mut sub = c
            .subscribe("$all", SubscribeFrom::Start, None)
            .await
            .unwrap();
        assert!(matches!(
            sub.next().await.unwrap().unwrap(),
            SubscriptionMessage::CaughtUp { .. }
        ));
        let baseline = server.rss_kib();
        // 40 MB of events while the subscriber does not read at all.
        let payload = "x".repeat(4000);
        for i in 0..100u64 {
            let events = (0..100)
                .map(|j| {
                    EventData::json("Big", &serde_json::json!({"i": i * 100 + j, "p": payload}))
                        .unwrap()
                })
                .collect();
            c.append("firehose", Exp::Any, events).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after_writes = server.rss_kib();
        // Now drain slowly at first, then fully: everything arrives, in order.
        let mut n = 0u64;
        while n < 10_000 {
            if let SubscriptionMessage::Event(e) =
                tokio::time::timeout(Duration::from_secs(30), sub.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap()
            {
                assert_eq!(e.revision, n);
                n += 1;
                if n < 50 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        let grew_mib = after_writes.saturating_sub(baseline) / 1024;
        assert!(
            grew_mib < 32,
            "server RSS grew {grew_mib} MiB while 40 MB waited for a stalled subscriber"
        );
    });
}

#[test]
fn resume_from_a_checkpoint_position_is_inclusive_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        let a = c.append("a", Exp::Any, vec![EventData::json("A", &1).unwrap()]).await.unwrap();
        let b = c.append("b", Exp::Any, vec![EventData::json("B", &2).unwrap()]).await.unwrap();
        let mut sub = c.subscribe("$all", SubscribeFrom::FromPosition(b.position), None).await.unwrap();
        match sub.next().await.unwrap().unwrap() {
            SubscriptionMessage::Event(e) => assert_eq!(e.position, b.position, "inclusive"),
            other => panic!("{other:?}"),
        }
        let err = c.subscribe("$all", SubscribeFrom::FromPosition(a.position + 5), None).await.err().unwrap();
        assert!(matches!(&err, strata_client::Error::InvalidArgument { field, .. } if field == "position"), "{err:?}");
    });
}
