//! Persistent subscriptions against the real server: competing consumers, strategies, nack
//! actions, timeouts, parking and replay, crashes of the server and of a consumer, and bad
//! input.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_client::{
    Client, ConsumerStrategy, Error, EventData, ExpectedRevision as Exp, Filter, GroupConsumer,
    GroupEvent, GroupMessage, GroupSettings, GroupStart, NackAction, ReadFrom, ReadOptions,
};
use strata_tests::{rt, strata_bin, Server};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

fn from_start() -> GroupSettings {
    GroupSettings {
        start_from: Some(GroupStart::Start),
        ..Default::default()
    }
}

async fn append_n(c: &Client, stream: &str, n: u64) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let e = EventData::json("Ordered", &serde_json::json!({ "i": i })).unwrap();
        ids.push(e.id);
        c.append(stream, Exp::Any, vec![e]).await.unwrap();
    }
    ids
}

/// The next event, skipping nothing else; panics on errors, rejections and silence.
async fn next_event(c: &mut GroupConsumer) -> GroupEvent {
    match tokio::time::timeout(WAIT, c.next()).await {
        Ok(Some(Ok(GroupMessage::Event(e)))) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Takes and acks events until the consumers sharing `total` have taken `expected` between
/// them (a silence of [`WAIT`] also ends it, and the caller's count check then fails). The
/// consumer is handed back so that it stays connected while the caller checks the group.
async fn take_shared(
    mut consumer: GroupConsumer,
    total: Arc<AtomicUsize>,
    expected: usize,
) -> (GroupConsumer, Vec<GroupEvent>) {
    let mut mine = Vec::new();
    let mut idle = Duration::ZERO;
    let tick = Duration::from_millis(50);
    while total.load(Ordering::SeqCst) < expected && idle < WAIT {
        match tokio::time::timeout(tick, consumer.next()).await {
            Ok(Some(Ok(GroupMessage::Event(e)))) => {
                consumer.ack(&[e.event.id]).await.unwrap();
                total.fetch_add(1, Ordering::SeqCst);
                mine.push(e);
                idle = Duration::ZERO;
            }
            Ok(Some(Ok(other))) => panic!("unexpected message {other:?}"),
            Ok(Some(Err(e))) => panic!("consumer failed: {e}"),
            Ok(None) => break,
            Err(_) => idle += tick,
        }
    }
    (consumer, mine)
}

/// Polls the group until `done` holds for its info (within [`WAIT`]).
async fn wait_for_group(
    c: &Client,
    stream: &str,
    group: &str,
    what: &str,
    done: impl Fn(&strata_client::GroupInfo) -> bool,
) -> strata_client::GroupInfo {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = c.group_info(stream, group).await.unwrap();
        if done(&info) {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "group {stream}::{group} never reached: {what}; last info {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that nothing arrives within `d`.
async fn quiet(c: &mut GroupConsumer, d: Duration) {
    if let Ok(m) = tokio::time::timeout(d, c.next()).await {
        panic!("expected nothing, got {m:?}");
    }
}

#[test]
fn competing_consumers_get_every_event_and_round_robin_spreads_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        c.create_group("orders", "billing", from_start())
            .await
            .unwrap();
        let mut consumers = Vec::new();
        for _ in 0..3 {
            consumers.push(c.consume_group("orders", "billing", 10).await.unwrap());
        }
        // 30 events, no acks: round robin hands exactly 10 to each.
        let mut expected: HashSet<Uuid> = append_n(&c, "orders", 30).await.into_iter().collect();
        let mut got = HashSet::new();
        for consumer in &mut consumers {
            let mut mine = Vec::new();
            for _ in 0..10 {
                mine.push(next_event(consumer).await.event.id);
            }
            quiet(consumer, Duration::from_millis(200)).await;
            consumer.ack(&mine).await.unwrap();
            got.extend(mine);
        }
        // 270 more, acked as they come, by all three at once.
        expected.extend(append_n(&c, "orders", 270).await);
        let total = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for consumer in consumers {
            tasks.push(tokio::spawn(take_shared(consumer, total.clone(), 270)));
        }
        let mut per_consumer = Vec::new();
        let mut consumers = Vec::new();
        for t in tasks {
            let (consumer, mine) = t.await.unwrap();
            per_consumer.push(mine.len());
            got.extend(mine.iter().map(|e| e.event.id));
            consumers.push(consumer);
        }
        assert_eq!(got, expected, "every event reaches some consumer");
        assert!(
            per_consumer.iter().all(|n| *n >= 30),
            "round robin spreads the load: {per_consumer:?}"
        );
        let info = wait_for_group(&c, "orders", "billing", "all acked", |i| {
            i.in_flight == 0 && i.settled_up_to == 300
        })
        .await;
        for consumer in &mut consumers {
            quiet(consumer, Duration::from_millis(200)).await;
        }
        assert_eq!(info.in_flight, 0);
        assert_eq!(info.lag, 0);
        assert_eq!(info.settled_up_to, 300);
    });
}

#[test]
fn dispatch_to_single_fills_the_first_consumer_first() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        let settings = GroupSettings {
            strategy: Some(ConsumerStrategy::DispatchToSingle),
            ..from_start()
        };
        c.create_group("jobs", "g", settings).await.unwrap();
        let mut first = c.consume_group("jobs", "g", 5).await.unwrap();
        let mut second = c.consume_group("jobs", "g", 5).await.unwrap();
        append_n(&c, "jobs", 7).await;
        for r in 0..5 {
            assert_eq!(next_event(&mut first).await.event.revision, r);
        }
        for r in 5..7 {
            assert_eq!(next_event(&mut second).await.event.revision, r);
        }
    });
}

#[test]
fn pinned_keeps_each_stream_on_one_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        let settings = GroupSettings {
            strategy: Some(ConsumerStrategy::Pinned),
            filter: Some(Filter::stream_prefix(["pin-"])),
            start_from: Some(GroupStart::Start),
            ..Default::default()
        };
        c.create_group("$all", "pinned", settings).await.unwrap();
        let total = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let consumer = c.consume_group("$all", "pinned", 20).await.unwrap();
            let total = total.clone();
            tasks.push(tokio::spawn(async move {
                let (consumer, got) = take_shared(consumer, total, 160).await;
                let streams: Vec<String> = got.into_iter().map(|e| e.event.stream).collect();
                (consumer, streams)
            }));
        }
        for round in 0..20 {
            for s in 0..8 {
                let e = EventData::json("Tick", &round).unwrap();
                c.append(&format!("pin-{s}"), Exp::Any, vec![e])
                    .await
                    .unwrap();
            }
            c.append(
                "other",
                Exp::Any,
                vec![EventData::json("Noise", &round).unwrap()],
            )
            .await
            .unwrap();
        }
        let mut owner: HashMap<String, HashSet<u64>> = HashMap::new();
        let mut total = 0;
        for t in tasks {
            let (mut consumer, streams) = t.await.unwrap();
            quiet(&mut consumer, Duration::from_millis(200)).await;
            total += streams.len();
            for s in streams {
                owner.entry(s).or_default().insert(consumer.id());
            }
        }
        assert_eq!(total, 160, "every pin-* event once, nothing else");
        assert_eq!(owner.len(), 8);
        for (stream, consumers) in &owner {
            assert_eq!(consumers.len(), 1, "{stream} went to {consumers:?}");
        }
        let used: HashSet<u64> = owner.values().flatten().copied().collect();
        assert!(
            used.len() >= 2,
            "streams are spread over consumers: {used:?}"
        );
    });
}

#[test]
fn nack_retry_counts_up_then_parks_and_replay_redelivers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        let settings = GroupSettings {
            max_retry_count: Some(2),
            ..from_start()
        };
        c.create_group("payments", "g", settings).await.unwrap();
        let mut consumer = c.consume_group("payments", "g", 10).await.unwrap();
        let ids = append_n(&c, "payments", 2).await;
        // The second event is fine.
        let mut poison = None;
        for _ in 0..2 {
            let e = next_event(&mut consumer).await;
            if e.event.id == ids[1] {
                consumer.ack(&[e.event.id]).await.unwrap();
            } else {
                poison = Some(e);
            }
        }
        let mut e = poison.expect("the first event");
        for expected_retry in 0..=2 {
            assert_eq!(e.retry_count, expected_retry);
            consumer
                .nack(
                    &[e.event.id],
                    NackAction::Retry {
                        delay: Duration::ZERO,
                    },
                    "bad amount",
                )
                .await
                .unwrap();
            if expected_retry < 2 {
                e = next_event(&mut consumer).await;
                assert_eq!(e.event.id, ids[0]);
            }
        }
        // Retries exhausted: parked, with the reason, and not delivered again.
        let info = wait_for_group(&c, "payments", "g", "one parked", |i| i.parked == 1).await;
        quiet(&mut consumer, Duration::from_millis(300)).await;
        assert_eq!(
            info.settled_up_to, 2,
            "a parked message does not hold the checkpoint"
        );
        let parked: Vec<_> = futures::TryStreamExt::try_collect(
            c.read_stream(
                "$persistentsubscription-payments::g-parked",
                ReadOptions::default(),
            )
            .await
            .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(parked.len(), 1);
        let pointer: serde_json::Value = parked[0].json().unwrap();
        assert_eq!(pointer["event_id"], ids[0].to_string());
        assert!(
            pointer["reason"]
                .as_str()
                .unwrap()
                .contains("maximum retry count (2)")
                && pointer["reason"].as_str().unwrap().contains("bad amount"),
            "{pointer}"
        );

        assert_eq!(c.replay_parked("payments", "g", None).await.unwrap(), 1);
        let e = next_event(&mut consumer).await;
        assert_eq!(e.event.id, ids[0]);
        assert_eq!(e.retry_count, 0);
        consumer.ack(&[e.event.id]).await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let info = c.group_info("payments", "g").await.unwrap();
            if info.parked == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replayed message left parked"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(c.replay_parked("payments", "g", None).await.unwrap(), 0);
    });
}

#[test]
fn a_message_not_acked_in_time_is_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        let settings = GroupSettings {
            message_timeout: Some(Duration::from_secs(2)),
            ..from_start()
        };
        c.create_group("slow", "g", settings).await.unwrap();
        let mut consumer = c.consume_group("slow", "g", 10).await.unwrap();
        let ids = append_n(&c, "slow", 1).await;
        let first = next_event(&mut consumer).await;
        assert_eq!((first.event.id, first.retry_count), (ids[0], 0));
        let again = next_event(&mut consumer).await;
        assert_eq!((again.event.id, again.retry_count), (ids[0], 1));
        consumer.ack(&[ids[0]]).await.unwrap();
        // Longer than the timeout plus the group's 100 ms timer: an ack that did not count
        // would bring a third delivery.
        quiet(&mut consumer, Duration::from_millis(2500)).await;
    });
}

#[test]
fn park_and_skip_settle_and_stop_hands_messages_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        c.create_group("s", "g", from_start()).await.unwrap();
        let mut a = c.consume_group("s", "g", 2).await.unwrap();
        let ids = append_n(&c, "s", 4).await;
        let e0 = next_event(&mut a).await;
        let e1 = next_event(&mut a).await;
        a.nack(&[e0.event.id], NackAction::Park, "needs a human")
            .await
            .unwrap();
        a.nack(&[e1.event.id], NackAction::Skip, "").await.unwrap();
        let e2 = next_event(&mut a).await;
        let e3 = next_event(&mut a).await;
        assert_eq!(
            [e0.event.id, e1.event.id, e2.event.id, e3.event.id],
            [ids[0], ids[1], ids[2], ids[3]]
        );
        // Stop: this consumer's stream ends and its messages go to the next consumer.
        let mut b = c.consume_group("s", "g", 10).await.unwrap();
        a.nack(&[], NackAction::Stop, "shutting down")
            .await
            .unwrap();
        match tokio::time::timeout(WAIT, a.next()).await {
            Ok(None) => {}
            other => panic!("the stopped consumer's stream should end, got {other:?}"),
        }
        let mut redelivered = [next_event(&mut b).await, next_event(&mut b).await];
        redelivered.sort_by_key(|e| e.event.revision);
        assert_eq!(redelivered[0].event.id, ids[2]);
        assert_eq!(redelivered[1].event.id, ids[3]);
        b.ack(&[ids[2], ids[3]]).await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let info = c.group_info("s", "g").await.unwrap();
            if info.settled_up_to == 4 {
                assert_eq!(info.parked, 1);
                assert_eq!(info.consumers.len(), 1);
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{info:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn a_killed_consumer_process_hands_its_messages_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    let ids = rt().block_on(async {
        let c = server.client().await;
        c.create_group("work", "g", from_start()).await.unwrap();
        append_n(&c, "work", 5).await
    });
    // A real consumer process that takes five messages and never acks them.
    let mut child = Command::new(strata_bin())
        .args([
            "group",
            "consume",
            "work",
            "g",
            "--no-ack",
            "--capacity",
            "5",
        ])
        .args(["--server", &server.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..5 {
        let line = lines.next().expect("a delivery line").unwrap();
        assert!(line.contains("work"), "{line}");
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    rt().block_on(async {
        let c = server.client().await;
        let mut other = c.consume_group("work", "g", 10).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..5 {
            let e = next_event(&mut other).await;
            assert_eq!(e.retry_count, 1, "a redelivery counts as a retry");
            got.push(e.event.id);
        }
        got.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(got, want);
    });
}

#[test]
fn after_a_server_crash_the_group_resumes_from_its_checkpoint_and_nothing_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    const TOTAL: u64 = 600;
    let acked_before = rt().block_on(async {
        let c = server.client().await;
        let settings = GroupSettings {
            checkpoint_after_count: Some(25),
            checkpoint_after: Some(Duration::from_millis(100)),
            ..from_start()
        };
        c.create_group("ledger", "g", settings).await.unwrap();
        let writer = {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..TOTAL {
                    let e = EventData::json("Posted", &i).unwrap();
                    c.append("ledger", Exp::Any, vec![e]).await.unwrap();
                }
            })
        };
        writer.await.unwrap();
        let mut consumer = c.consume_group("ledger", "g", 20).await.unwrap();
        let mut acked = HashSet::new();
        // Ack about half, while the server keeps checkpointing; then kill it mid-stream.
        while acked.len() < 300 {
            let e = next_event(&mut consumer).await;
            consumer.ack(&[e.event.id]).await.unwrap();
            acked.insert(e.event.revision);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        acked
    });
    server.kill();
    server.restart();
    rt().block_on(async {
        let c = server.client().await;
        // The stored checkpoint: everything before it was acked before the crash.
        let last = c
            .read_stream(
                "$persistentsubscription-ledger::g-checkpoint",
                ReadOptions::default()
                    .backwards()
                    .from(ReadFrom::End)
                    .max_count(1),
            )
            .await
            .unwrap();
        let last: Vec<_> = futures::TryStreamExt::try_collect(last).await.unwrap();
        let checkpoint = last[0].json::<serde_json::Value>().unwrap()["next"]
            .as_u64()
            .unwrap();
        assert!(checkpoint > 0, "checkpoints were written before the crash");
        for r in 0..checkpoint {
            assert!(
                acked_before.contains(&r),
                "revision {r} is behind the checkpoint but was never acked"
            );
        }
        let info = c.group_info("ledger", "g").await.unwrap();
        assert_eq!(info.last_checkpoint, Some(checkpoint));
        let mut consumer = c.consume_group("ledger", "g", 20).await.unwrap();
        let first = next_event(&mut consumer).await;
        assert_eq!(
            first.event.revision, checkpoint,
            "resumes at its checkpoint"
        );
        consumer.ack(&[first.event.id]).await.unwrap();
        let mut all = acked_before.clone();
        all.insert(first.event.revision);
        while all.len() < TOTAL as usize {
            let e = next_event(&mut consumer).await;
            consumer.ack(&[e.event.id]).await.unwrap();
            all.insert(e.event.revision);
        }
        assert_eq!(all, (0..TOTAL).collect::<HashSet<_>>());
    });
}

#[test]
fn groups_survive_a_restart_and_updates_keep_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        append_n(&c, "acct", 3).await;
        // From the end: only what comes after creation.
        c.create_group("acct", "tail", GroupSettings::default())
            .await
            .unwrap();
        c.create_group("acct", "all", from_start()).await.unwrap();
        let mut consumer = c.consume_group("acct", "all", 10).await.unwrap();
        for _ in 0..3 {
            let e = next_event(&mut consumer).await;
            consumer.ack(&[e.event.id]).await.unwrap();
        }
        let new = c
            .update_group(
                "acct",
                "all",
                GroupSettings {
                    max_retry_count: Some(7),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(new.max_retry_count, Some(7));
        assert_eq!(
            new.read_batch_size,
            Some(20),
            "unset fields keep their values"
        );
        append_n(&c, "acct", 1).await;
        let e = next_event(&mut consumer).await;
        assert_eq!(e.event.revision, 3, "the update kept the position");
        consumer.ack(&[e.event.id]).await.unwrap();
        wait_for_group(&c, "acct", "all", "revision 3 acked", |i| {
            i.settled_up_to == 4
        })
        .await;
    });
    assert!(server.terminate().success());
    server.restart();
    rt().block_on(async {
        let c = server.client().await;
        let groups = c.list_groups(Some("acct")).await.unwrap();
        let names: Vec<_> = groups.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(names, ["all", "tail"]);
        assert_eq!(groups[0].settings.max_retry_count, Some(7));
        assert_eq!(
            groups[0].last_checkpoint,
            Some(4),
            "clean shutdown writes the checkpoint"
        );
        let mut tail = c.consume_group("acct", "tail", 10).await.unwrap();
        assert_eq!(next_event(&mut tail).await.event.revision, 3);
        // Deleting a group ends its consumers' streams with a clear error.
        c.delete_group("acct", "tail").await.unwrap();
        match tokio::time::timeout(WAIT, tail.next()).await {
            Ok(Some(Err(Error::GroupDeleted { stream, group }))) => {
                assert_eq!((stream.as_str(), group.as_str()), ("acct", "tail"))
            }
            other => panic!("expected GroupDeleted, got {other:?}"),
        }
        assert_eq!(c.list_groups(None).await.unwrap().len(), 1);
        // Re-created under the same name, it starts afresh.
        c.create_group("acct", "tail", from_start()).await.unwrap();
        let mut tail = c.consume_group("acct", "tail", 10).await.unwrap();
        assert_eq!(next_event(&mut tail).await.event.revision, 0);
    });
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        match c.group_info("nope", "g").await {
            Err(Error::GroupNotFound { stream, group }) => {
                assert_eq!((stream.as_str(), group.as_str()), ("nope", "g"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c.consume_group("nope", "g", 1).await,
            Err(Error::GroupNotFound { .. })
        ));
        assert!(matches!(
            c.delete_group("nope", "g").await,
            Err(Error::GroupNotFound { .. })
        ));
        c.create_group("s", "g", from_start()).await.unwrap();
        assert!(matches!(
            c.create_group("s", "g", from_start()).await,
            Err(Error::GroupExists { .. })
        ));
        let invalid = [
            GroupSettings {
                read_batch_size: Some(0),
                ..Default::default()
            },
            GroupSettings {
                filter: Some(Filter::stream_prefix(["x"])),
                ..Default::default()
            },
            GroupSettings {
                start_from: Some(GroupStart::Position(3)),
                ..Default::default()
            },
        ];
        for (i, s) in invalid.into_iter().enumerate() {
            match c.create_group("s", &format!("bad-{i}"), s).await {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert!(!field.is_empty() && !reason.is_empty())
                }
                other => panic!("settings {i}: {other:?}"),
            }
        }
        match c
            .create_group(
                "$all",
                "bad-position",
                GroupSettings {
                    start_from: Some(GroupStart::Position(1 << 40)),
                    ..Default::default()
                },
            )
            .await
        {
            Err(Error::InvalidArgument { field, reason }) => {
                assert_eq!(field, "start_from");
                assert!(reason.contains("beyond the end"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c.consume_group("s", "g", 0).await,
            Err(Error::InvalidArgument { .. })
        ));
        // Acking an ID that is not in flight is reported, and changes nothing.
        let mut consumer = c.consume_group("s", "g", 10).await.unwrap();
        let stranger = Uuid::new_v4();
        consumer.ack(&[stranger]).await.unwrap();
        match tokio::time::timeout(WAIT, consumer.next()).await {
            Ok(Some(Ok(GroupMessage::Rejected { event_ids, reason }))) => {
                assert_eq!(event_ids, [stranger.to_string()]);
                assert!(reason.contains("not in flight"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Max consumers.
        c.create_group(
            "s",
            "one",
            GroupSettings {
                max_consumers: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let _only = c.consume_group("s", "one", 1).await.unwrap();
        match c.consume_group("s", "one", 1).await {
            Err(Error::MaxConsumersReached { max, .. }) => assert_eq!(max, 1),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("a second consumer was accepted"),
        }
        // None of this wrote events to the stream.
        assert!(matches!(
            c.read_stream("s", ReadOptions::default()).await,
            Err(Error::StreamNotFound { .. })
        ));
    });
}

#[test]
fn pinned_by_correlation_keeps_each_correlation_id_on_one_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let c = server.client().await;
        let settings = GroupSettings {
            strategy: Some(ConsumerStrategy::PinnedByCorrelation),
            filter: Some(Filter::stream_prefix(["corr-"])),
            start_from: Some(GroupStart::Start),
            ..Default::default()
        };
        c.create_group("$all", "g", settings).await.unwrap();
        let total = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let consumer = c.consume_group("$all", "g", 20).await.unwrap();
            let total = total.clone();
            tasks.push(tokio::spawn(async move {
                let (consumer, events) = take_shared(consumer, total, 60).await;
                let got: Vec<String> = events
                    .iter()
                    .map(|e| {
                        let m: serde_json::Value =
                            serde_json::from_slice(&e.event.metadata).unwrap();
                        m["$correlationId"].as_str().unwrap().to_owned()
                    })
                    .collect();
                (consumer, got)
            }));
        }
        // Each event in its own stream; the correlation ID is what ties them together.
        for i in 0..60 {
            let e = EventData::json("Step", &i)
                .unwrap()
                .metadata(format!("{{\"$correlationId\":\"c{}\"}}", i % 6));
            c.append(&format!("corr-{i}"), Exp::Any, vec![e])
                .await
                .unwrap();
        }
        let mut owner: HashMap<String, HashSet<u64>> = HashMap::new();
        let mut total = 0;
        for t in tasks {
            let (mut consumer, got) = t.await.unwrap();
            quiet(&mut consumer, Duration::from_millis(200)).await;
            total += got.len();
            for k in got {
                owner.entry(k).or_default().insert(consumer.id());
            }
        }
        assert_eq!(total, 60);
        assert_eq!(owner.len(), 6);
        for (k, consumers) in &owner {
            assert_eq!(consumers.len(), 1, "{k} went to {consumers:?}");
        }
    });
}
