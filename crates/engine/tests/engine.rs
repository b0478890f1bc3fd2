//! Behaviour of the engine through its public API.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, ev, open, rt};
use strata_engine::{
    AllFrom, CurrentRevision, Direction, Engine, Error, EventData, EventFilter,
    ExpectedRevision as Exp, FilterOn, StreamFrom, StreamMetadata,
};
use tempfile::tempdir;
use uuid::Uuid;

#[test]
fn append_and_read_back() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        let r = e
            .append("order-1", Exp::NoStream, vec![ev(1), ev(2)])
            .await
            .unwrap();
        assert_eq!(r.revision, 1);
        assert!(!r.idempotent_replay);
        let r2 = e
            .append("order-1", Exp::Exact(1), vec![ev(3)])
            .await
            .unwrap();
        assert_eq!(r2.revision, 2);
        assert!(r2.position > r.position);
    });
    let s = e
        .read_stream("order-1", StreamFrom::Start, Direction::Forwards, 10)
        .unwrap();
    assert_eq!(
        s.events.iter().map(|x| x.revision).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(s.events[1].event_id, Uuid::from_u128(2));
    assert_eq!(&s.events[2].data[..], b"{\"n\":3}");
    assert_eq!(s.next_revision, None);
    let page = e
        .read_stream("order-1", StreamFrom::Start, Direction::Forwards, 2)
        .unwrap();
    assert_eq!(page.next_revision, Some(2));
    let back = e
        .read_stream("order-1", StreamFrom::End, Direction::Backwards, 2)
        .unwrap();
    assert_eq!(
        back.events.iter().map(|x| x.revision).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert_eq!(back.next_revision, Some(0));
    let all = e
        .read_all(AllFrom::Start, Direction::Forwards, 100, None)
        .unwrap();
    assert_eq!(all.events.len(), 3);
    assert!(all.is_end);
    assert!(all.events.windows(2).all(|w| w[0].position < w[1].position));
}

#[test]
fn expected_revision_kinds() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        let err = e.append("s", Exp::StreamExists, vec![ev(1)]).await.unwrap_err();
        assert!(matches!(err, Error::WrongExpectedRevision { actual: CurrentRevision::NoStream, .. }), "{err}");
        let err = e.append("s", Exp::Exact(0), vec![ev(1)]).await.unwrap_err();
        assert!(err.to_string().contains("expected revision 0, but the stream does not exist"), "{err}");
        e.append("s", Exp::Any, vec![ev(1)]).await.unwrap();
        let err = e.append("s", Exp::NoStream, vec![ev(2)]).await.unwrap_err();
        assert!(matches!(err, Error::WrongExpectedRevision { actual: CurrentRevision::Revision(0), .. }));
        let err = e.append("s", Exp::Exact(5), vec![ev(2)]).await.unwrap_err();
        assert_eq!(err.to_string(), "wrong expected revision for stream 's': expected revision 5, but the stream is at revision 0");
        e.append("s", Exp::StreamExists, vec![ev(2)]).await.unwrap();
        e.append("s", Exp::Exact(1), vec![ev(3)]).await.unwrap();
    });
    assert_eq!(
        e.read_stream("s", StreamFrom::Start, Direction::Forwards, 10)
            .unwrap()
            .events
            .len(),
        3
    );
}

#[test]
fn not_found_is_distinct() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    let err = e
        .read_stream("nope", StreamFrom::Start, Direction::Forwards, 10)
        .unwrap_err();
    assert!(matches!(err, Error::StreamNotFound { .. }));
    assert_eq!(err.to_string(), "stream 'nope' not found");
}

#[test]
fn concurrent_writers_to_one_stream_never_lose_an_update() {
    let dir = tempdir().unwrap();
    let e = Arc::new(open(&dir));
    let wins = rt().block_on(async {
        let mut tasks = Vec::new();
        for w in 0..16u128 {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                let mut wins = 0;
                for i in 0..50u128 {
                    let cur = e
                        .read_stream("hot", StreamFrom::End, Direction::Backwards, 1)
                        .map(|s| Exp::Exact(s.last_revision))
                        .unwrap_or(Exp::NoStream);
                    if e.append("hot", cur, vec![ev(w * 1000 + i + 1)])
                        .await
                        .is_ok()
                    {
                        wins += 1;
                    }
                }
                wins
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    let s = e
        .read_stream("hot", StreamFrom::Start, Direction::Forwards, 10_000)
        .unwrap();
    assert_eq!(
        s.events.len(),
        wins as usize,
        "each successful append is exactly one revision"
    );
    assert!(s
        .events
        .iter()
        .enumerate()
        .all(|(i, x)| x.revision == i as u64));
}

/// A stream read racing a commit must never see an index entry whose record lies beyond the
/// log end it reads (that once surfaced as a spurious "corrupt log" error), and an event seen
/// in `$all` must already be readable from its stream.
#[test]
fn stream_reads_racing_commits_always_find_their_records() {
    let dir = tempdir().unwrap();
    let e = Arc::new(open(&dir));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (e, done) = (e.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    match e.read_stream("racy", StreamFrom::End, Direction::Backwards, 3) {
                        Ok(s) => assert_eq!(s.events[0].revision, s.last_revision),
                        Err(Error::StreamNotFound { .. }) => {}
                        Err(other) => panic!("read racing a commit failed: {other}"),
                    }
                    let all = e
                        .read_all(AllFrom::End, Direction::Backwards, 1, None)
                        .unwrap();
                    if let Some(last) = all.events.first() {
                        let s = e
                            .read_stream(
                                &last.stream,
                                StreamFrom::Revision(last.revision),
                                Direction::Forwards,
                                1,
                            )
                            .unwrap_or_else(|err| panic!("$all showed {last:?}; stream: {err}"));
                        assert_eq!(s.events[0].event_id, last.event_id);
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    rt().block_on(async {
        for i in 0..10_000u128 {
            e.append("racy", Exp::Any, vec![ev(i + 1)]).await.unwrap();
        }
    });
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader panicked") > 0);
    }
}

#[test]
fn idempotent_retries_exact_and_any() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        let first = e
            .append("acc", Exp::NoStream, vec![ev(1), ev(2)])
            .await
            .unwrap();
        let again = e
            .append("acc", Exp::NoStream, vec![ev(1), ev(2)])
            .await
            .unwrap();
        assert!(again.idempotent_replay);
        assert_eq!(
            (again.revision, again.position),
            (first.revision, first.position)
        );
        // A prefix of an earlier append, retried at its original expected revision.
        let prefix = e.append("acc", Exp::NoStream, vec![ev(1)]).await.unwrap();
        assert_eq!(prefix.revision, 0);
        // Partial overlap: first ID written, second never was.
        let err = e
            .append("acc", Exp::NoStream, vec![ev(1), ev(9)])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err}");
        // Different IDs at an old expected revision: a plain conflict.
        let err = e
            .append("acc", Exp::NoStream, vec![ev(7)])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::WrongExpectedRevision { .. }), "{err}");

        let a = e
            .append("any", Exp::Any, vec![ev(10), ev(11)])
            .await
            .unwrap();
        let b = e
            .append("any", Exp::Any, vec![ev(10), ev(11)])
            .await
            .unwrap();
        assert!(b.idempotent_replay);
        assert_eq!(a.position, b.position);
        let err = e
            .append("any", Exp::Any, vec![ev(11), ev(12)])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err}");
        // Idempotency is scoped to the stream (as in KurrentDB): the same ID in another
        // stream is a new event there, and its own retry is recognised there.
        let other = e.append("other", Exp::Any, vec![ev(10)]).await.unwrap();
        assert!(!other.idempotent_replay);
        assert_eq!(other.revision, 0);
        let again = e.append("other", Exp::Any, vec![ev(10)]).await.unwrap();
        assert!(again.idempotent_replay);
        assert_eq!(again.position, other.position);
    });
    assert_eq!(
        e.read_stream("acc", StreamFrom::Start, Direction::Forwards, 10)
            .unwrap()
            .events
            .len(),
        2
    );
    assert_eq!(
        e.read_stream("any", StreamFrom::Start, Direction::Forwards, 10)
            .unwrap()
            .events
            .len(),
        2
    );
    // The window survives a reopen.
    drop(e);
    let e = open(&dir);
    rt().block_on(async {
        let c = e
            .append("any", Exp::Any, vec![ev(10), ev(11)])
            .await
            .unwrap();
        assert!(c.idempotent_replay);
    });
}

#[test]
fn validation_errors_write_nothing() {
    let dir = tempdir().unwrap();
    let mut c = config(&dir);
    c.max_append_size = 4096;
    let e = Engine::open(c).unwrap();
    let long = "x".repeat(1001);
    rt().block_on(async {
        let cases: Vec<(&str, Vec<EventData>, &str)> = vec![
            ("", vec![ev(1)], "stream name: must not be empty"),
            (&long, vec![ev(1)], "over the limit of 1000"),
            ("$system", vec![ev(1)], "reserved"),
            ("$$meta", vec![ev(1)], "reserved"),
            ("s", vec![], "at least one event"),
            ("s", vec![EventData::json("", "{}")], "empty event type"),
            (
                "s",
                vec![EventData::binary("Big", vec![0u8; 5000])],
                "over the maximum append size of 4096",
            ),
            ("s", vec![ev(1), ev(1)], "appears twice"),
            ("bad\nname", vec![ev(1)], "control characters"),
        ];
        for (stream, events, want) in cases {
            let err = e.append(stream, Exp::Any, events).await.unwrap_err();
            assert!(
                err.to_string().contains(want),
                "{stream:?}: got '{err}', wanted '{want}'"
            );
        }
    });
    assert_eq!(e.log_end(), 0, "nothing was written");
}

#[test]
fn soft_delete_then_recreate_continues_revisions() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        e.append("cart", Exp::NoStream, vec![ev(1), ev(2)])
            .await
            .unwrap();
        let err = e.delete_stream("cart", Exp::Exact(0)).await.unwrap_err();
        assert!(matches!(err, Error::WrongExpectedRevision { .. }));
        e.delete_stream("cart", Exp::Exact(1)).await.unwrap();
    });
    assert!(matches!(
        e.read_stream("cart", StreamFrom::Start, Direction::Forwards, 10),
        Err(Error::StreamNotFound { .. })
    ));
    // Soft delete hides everything, with KurrentDB's `$tb`; the next append brings the stream
    // back from its own first revision, in the same atomic unit.
    assert_eq!(
        e.get_stream_metadata("cart").unwrap().1.truncate_before,
        Some(i64::MAX as u64)
    );
    rt().block_on(async {
        let r = e.append("cart", Exp::NoStream, vec![ev(3)]).await.unwrap();
        assert_eq!(r.revision, 2);
    });
    assert_eq!(
        e.get_stream_metadata("cart").unwrap().1.truncate_before,
        Some(2)
    );
    let s = e
        .read_stream("cart", StreamFrom::Start, Direction::Forwards, 10)
        .unwrap();
    assert_eq!(
        s.events.iter().map(|x| x.revision).collect::<Vec<_>>(),
        vec![2]
    );
    drop(e);
    let e = open(&dir);
    let s = e
        .read_stream("cart", StreamFrom::Start, Direction::Forwards, 10)
        .unwrap();
    assert_eq!(
        s.events.iter().map(|x| x.revision).collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(
        e.get_stream_metadata("cart").unwrap().1.truncate_before,
        Some(2)
    );
    // The same through a multi-stream append.
    rt().block_on(async {
        e.delete_stream("cart", Exp::Any).await.unwrap();
        let r = e
            .append_multi(
                strata_engine::MultiAppend::new()
                    .write("cart", Exp::NoStream, [ev(4)])
                    .write("other", Exp::Any, [ev(5)]),
            )
            .await
            .unwrap();
        assert_eq!(r.streams[0].revision, 3);
    });
    let s = e
        .read_stream("cart", StreamFrom::Start, Direction::Forwards, 10)
        .unwrap();
    assert_eq!(
        s.events.iter().map(|x| x.revision).collect::<Vec<_>>(),
        vec![3]
    );
}

#[test]
fn tombstone_is_forever() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        e.append("gone", Exp::Any, vec![ev(1)]).await.unwrap();
        e.tombstone_stream("gone", Exp::Any).await.unwrap();
        let err = e.append("gone", Exp::Any, vec![ev(2)]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "stream 'gone' is deleted (tombstoned): it can no longer be read or written"
        );
        assert!(matches!(
            e.delete_stream("gone", Exp::Any).await,
            Err(Error::StreamDeleted { .. })
        ));
        assert!(matches!(
            e.tombstone_stream("gone", Exp::Any).await,
            Err(Error::StreamDeleted { .. })
        ));
        // Metadata may still be written, as in KurrentDB; the tombstone record does not count
        // as a metadata revision, and the stream stays deleted.
        let m = e
            .set_stream_metadata("gone", Exp::NoStream, StreamMetadata::default())
            .await
            .unwrap();
        assert_eq!(m.revision, 0);
        let err = e
            .set_stream_metadata("gone", Exp::NoStream, StreamMetadata::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::WrongExpectedRevision {
                    actual: CurrentRevision::Revision(0),
                    ..
                }
            ),
            "{err}"
        );
        let m = e
            .set_stream_metadata("gone", Exp::Exact(0), StreamMetadata::default())
            .await
            .unwrap();
        assert_eq!(m.revision, 1);
        assert!(matches!(
            e.get_stream_metadata("gone"),
            Err(Error::StreamDeleted { .. })
        ));
    });
    assert!(matches!(
        e.read_stream("gone", StreamFrom::Start, Direction::Forwards, 1),
        Err(Error::StreamDeleted { .. })
    ));
    drop(e);
    let e = open(&dir);
    assert!(matches!(
        e.read_stream("gone", StreamFrom::Start, Direction::Forwards, 1),
        Err(Error::StreamDeleted { .. })
    ));
}

#[test]
fn metadata_rules_apply_to_stream_reads() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        e.append("m", Exp::Any, (1..=10).map(ev).collect())
            .await
            .unwrap();
        let meta = StreamMetadata {
            max_count: Some(3),
            ..Default::default()
        };
        e.set_stream_metadata("m", Exp::NoStream, meta)
            .await
            .unwrap();
    });
    let s = e
        .read_stream("m", StreamFrom::Start, Direction::Forwards, 100)
        .unwrap();
    assert_eq!(
        s.events.iter().map(|x| x.revision).collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    let (rev, meta) = e.get_stream_metadata("m").unwrap();
    assert_eq!((rev, meta.max_count), (Some(0), Some(3)));
    rt().block_on(async {
        let mut meta = StreamMetadata {
            truncate_before: Some(9),
            ..Default::default()
        };
        meta.custom.insert("owner".into(), "team-a".into());
        let err = e
            .set_stream_metadata("m", Exp::NoStream, meta.clone())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("'$$m'"), "{err}");
        e.set_stream_metadata("m", Exp::Exact(0), meta)
            .await
            .unwrap();
    });
    let s = e
        .read_stream("m", StreamFrom::Start, Direction::Forwards, 100)
        .unwrap();
    assert_eq!(
        s.events.iter().map(|x| x.revision).collect::<Vec<_>>(),
        vec![9]
    );
    // $all is the raw log.
    let all = e
        .read_all(AllFrom::Start, Direction::Forwards, 100, None)
        .unwrap();
    assert_eq!(all.events.len(), 12);
    drop(e);
    let e = open(&dir);
    let (_, meta) = e.get_stream_metadata("m").unwrap();
    assert_eq!(meta.custom["owner"], "team-a");
    assert_eq!(
        e.read_stream("m", StreamFrom::Start, Direction::Forwards, 100)
            .unwrap()
            .events
            .len(),
        1
    );
}

#[test]
fn max_age_hides_old_events() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        e.append("aged", Exp::Any, vec![ev(1)]).await.unwrap();
        e.set_stream_metadata(
            "aged",
            Exp::Any,
            StreamMetadata {
                max_age: Some(Duration::from_secs(3)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    });
    assert_eq!(
        e.read_stream("aged", StreamFrom::Start, Direction::Forwards, 10)
            .unwrap()
            .events
            .len(),
        1
    );
    std::thread::sleep(Duration::from_millis(3100));
    assert_eq!(
        e.read_stream("aged", StreamFrom::Start, Direction::Forwards, 10)
            .unwrap()
            .events
            .len(),
        0
    );
}

#[test]
fn read_all_filters_and_paging() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        for i in 0..50u128 {
            let stream = if i % 5 == 0 {
                format!("order-{i}")
            } else {
                format!("user-{i}")
            };
            let ty = if i % 2 == 0 { "Even" } else { "Odd" };
            e.append(
                &stream,
                Exp::Any,
                vec![EventData::json(ty, "{}").with_id(Uuid::from_u128(i + 1))],
            )
            .await
            .unwrap();
        }
    });
    let f = EventFilter::prefixes(FilterOn::StreamName, ["order-"]).unwrap();
    let r = e
        .read_all(AllFrom::Start, Direction::Forwards, 100, Some(&f))
        .unwrap();
    assert_eq!(r.events.len(), 10);
    let f = EventFilter::regex(FilterOn::EventType, "^Ev").unwrap();
    let r = e
        .read_all(AllFrom::Start, Direction::Forwards, 100, Some(&f))
        .unwrap();
    assert_eq!(r.events.len(), 25);
    // A scan bound returns a checkpoint even when nothing matched.
    let f = EventFilter::prefixes(FilterOn::StreamName, ["nothing-"]).unwrap();
    let r = e
        .read_all_scan(AllFrom::Start, Direction::Forwards, 10, Some(&f), 20)
        .unwrap();
    assert!(r.events.is_empty() && !r.is_end && r.next_position > 0);
    // Paging forwards and backwards sees every event once.
    let mut fwd = Vec::new();
    let mut from = AllFrom::Start;
    loop {
        let p = e.read_all(from, Direction::Forwards, 7, None).unwrap();
        fwd.extend(p.events.iter().map(|x| x.position));
        if p.is_end {
            break;
        }
        from = AllFrom::Position(p.next_position);
    }
    let mut bwd = Vec::new();
    let mut from = AllFrom::End;
    loop {
        let p = e.read_all(from, Direction::Backwards, 7, None).unwrap();
        bwd.extend(p.events.iter().map(|x| x.position));
        if p.is_end {
            break;
        }
        from = AllFrom::Position(p.next_position);
    }
    bwd.reverse();
    assert_eq!(fwd.len(), 50);
    assert_eq!(fwd, bwd);
    // Reading from inside a record is refused, not mistaken for corruption.
    let err = e
        .read_all(AllFrom::Position(fwd[1] + 3), Direction::Forwards, 1, None)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidPosition { .. }), "{err}");
    let r = e
        .read_all(AllFrom::Position(fwd[3]), Direction::Forwards, 1, None)
        .unwrap();
    assert_eq!(r.events[0].position, fwd[3]);
}

#[test]
fn change_feed_wakes_waiters() {
    let dir = tempdir().unwrap();
    let e = Arc::new(open(&dir));
    rt().block_on(async {
        let mut rx = e.watch_log_end();
        let start = *rx.borrow();
        let e2 = e.clone();
        let waiter = tokio::spawn(async move { *rx.wait_for(|end| *end > start).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = e2.append("feed", Exp::Any, vec![ev(1)]).await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(end > r.position);
    });
}

#[test]
fn segment_rollover_keeps_positions_and_reads() {
    let dir = tempdir().unwrap();
    let mut c = config(&dir);
    c.segment_size = 4096;
    let e = Engine::open(c.clone()).unwrap();
    rt().block_on(async {
        for i in 0..300u128 {
            e.append(&format!("s-{}", i % 7), Exp::Any, vec![ev(i + 1)])
                .await
                .unwrap();
        }
    });
    let segments = e.stats().segment_count;
    assert!(segments >= 5, "only {segments} segments");
    let all = e
        .read_all(AllFrom::Start, Direction::Forwards, 1000, None)
        .unwrap();
    assert_eq!(all.events.len(), 300);
    let back = e
        .read_all(AllFrom::End, Direction::Backwards, 1000, None)
        .unwrap();
    assert_eq!(back.events.len(), 300);
    drop(e);
    let e = Engine::open(c).unwrap();
    assert_eq!(e.stats().segment_count, segments);
    let s = e
        .read_stream("s-3", StreamFrom::Start, Direction::Forwards, 1000)
        .unwrap();
    assert_eq!(s.events.len(), 43);
    rt().block_on(async {
        e.append("s-3", Exp::Exact(42), vec![ev(1000)])
            .await
            .unwrap()
    });
}

#[test]
fn second_open_of_a_directory_is_refused() {
    let dir = tempdir().unwrap();
    let _e = open(&dir);
    let err = Engine::open(config(&dir))
        .err()
        .expect("second open must fail");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
}

#[test]
fn list_streams_and_stats() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        e.append("a", Exp::Any, vec![ev(1)]).await.unwrap();
        e.append("b", Exp::Any, vec![ev(2)]).await.unwrap();
        e.delete_stream("b", Exp::Any).await.unwrap();
    });
    let mut names: Vec<_> = e
        .list_streams()
        .into_iter()
        .filter(|s| !s.name.starts_with('$'))
        .collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(names.len(), 2);
    assert!(!names[0].soft_deleted && names[1].soft_deleted);
    let st = e.stats();
    assert!(st.log_end > 0 && st.log_bytes > st.log_end);
    e.flush_index().unwrap();
    assert_eq!(e.stats().index_checkpoint, st.log_end);
}

#[test]
fn long_streams_read_correctly_across_index_chunks_and_flushes() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    let mut ids = Vec::new();
    rt().block_on(async {
        for i in 0..100u128 {
            let batch: Vec<_> = (0..7).map(|j| ev(i * 7 + j + 1)).collect();
            ids.extend(batch.iter().map(|x| x.event_id.unwrap()));
            e.append("long", Exp::Any, batch).await.unwrap();
            e.append("other", Exp::Any, vec![ev(10_000 + i)])
                .await
                .unwrap();
            if i % 13 == 0 {
                e.flush_index().unwrap();
            }
        }
    });
    let check = |e: &Engine| {
        for start in [0u64, 1, 255, 256, 257, 511, 600, 699] {
            let s = e
                .read_stream(
                    "long",
                    StreamFrom::Revision(start),
                    Direction::Forwards,
                    300,
                )
                .unwrap();
            let got: Vec<Uuid> = s.events.iter().map(|x| x.event_id).collect();
            let end = (start as usize + 300).min(700);
            assert_eq!(got, ids[start as usize..end], "forwards from {start}");
            let b = e
                .read_stream(
                    "long",
                    StreamFrom::Revision(start),
                    Direction::Backwards,
                    300,
                )
                .unwrap();
            let mut got: Vec<Uuid> = b.events.iter().map(|x| x.event_id).collect();
            got.reverse();
            let lo = (start as usize + 1).saturating_sub(300);
            assert_eq!(got, ids[lo..=start as usize], "backwards from {start}");
        }
    };
    check(&e);
    drop(e);
    let e = open(&dir);
    check(&e);
    drop(e);
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let e = open(&dir);
    check(&e);
    e.flush_index().unwrap();
    check(&e);
}

type Outcome = strata_engine::Result<strata_engine::AppendResult>;
type Answer = (u32, Outcome);
type Callback = Box<dyn FnOnce(Outcome) + Send>;

/// A channel for `append_with` results, as a server session uses, and a maker of callbacks
/// that answer on it tagged with a number.
fn answers() -> (
    impl Fn(u32) -> Callback,
    tokio::sync::mpsc::UnboundedReceiver<Answer>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Answer>();
    let answer = move |i: u32| {
        let tx = tx.clone();
        Box::new(move |r| {
            let _ = tx.send((i, r));
        }) as Callback
    };
    (answer, rx)
}

#[test]
fn append_with_runs_many_appends_from_one_task_and_reports_each_once() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        let (answer, mut rx) = answers();
        // 300 appends in flight from this one task, on 3 streams; the 4th stream's appends
        // all expect a new stream, so exactly one of them can succeed.
        for i in 0..300u32 {
            let stream = format!("s-{}", i % 3);
            let events = vec![ev(u128::from(i) + 1)];
            e.append_with(&stream, Exp::Any, events, answer(i)).await;
        }
        for i in 0..3u32 {
            let events = vec![ev(10_000 + u128::from(i))];
            e.append_with("once", Exp::NoStream, events, answer(1000 + i))
                .await;
        }
        drop(answer);
        let mut seen = std::collections::HashMap::new();
        while let Some((i, r)) = rx.recv().await {
            assert!(seen.insert(i, r).is_none(), "append {i} was answered twice");
        }
        assert_eq!(seen.len(), 303);
        for i in 0..300u32 {
            // Queued in order, so revisions follow the order of the calls.
            assert_eq!(
                seen[&i].as_ref().unwrap().revision,
                u64::from(i / 3),
                "append {i}"
            );
        }
        let once: Vec<_> = (1000..1003).map(|i| &seen[&i]).collect();
        assert!(once[0].is_ok());
        for r in &once[1..] {
            assert!(
                matches!(r, Err(Error::WrongExpectedRevision { .. })),
                "{r:?}"
            );
        }
    });
    let s = e
        .read_stream("s-1", StreamFrom::Start, Direction::Forwards, 1000)
        .unwrap();
    assert_eq!(s.events.len(), 100);
}

#[test]
fn append_with_reports_refused_input_at_once_and_leaves_the_log_alone() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        let (send, mut rx) = answers();
        e.append_with("", Exp::Any, vec![ev(1)], send(0)).await;
        e.append_with("$reserved", Exp::Any, vec![ev(2)], send(1))
            .await;
        e.append_with("ok", Exp::Any, vec![], send(2)).await;
        // Rejected before queueing: the callback has already run on this task.
        for i in 0..3 {
            let (got, r) = rx.try_recv().expect("answered before append_with returned");
            assert_eq!(got, i);
            let refused = match i {
                1 => matches!(r, Err(Error::ReservedStream { .. })),
                _ => matches!(r, Err(Error::InvalidArgument { .. })),
            };
            assert!(refused, "{i}: {r:?}");
        }
        e.refuse_writes("test: the disk is gone".into());
        e.append_with("ok", Exp::Any, vec![ev(3)], send(3)).await;
        let (_, r) = rx.recv().await.unwrap();
        match r {
            Err(Error::ReadOnly { reason }) => assert!(reason.contains("disk is gone"), "{reason}"),
            other => panic!("{other:?}"),
        }
    });
    assert_eq!(e.log_end(), 0);
}

#[test]
fn budgeted_reads_stop_at_the_byte_budget_and_continue_where_they_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        for i in 0..50u128 {
            let mut ev = ev(i + 1);
            ev.data = vec![b'x'; 10_000].into();
            e.append("big", Exp::Any, vec![ev]).await.unwrap();
        }
    });
    for direction in [Direction::Forwards, Direction::Backwards] {
        let mut from = if direction == Direction::Forwards {
            StreamFrom::Start
        } else {
            StreamFrom::End
        };
        let mut seen = Vec::new();
        loop {
            let s = e
                .read_stream_budget("big", from, direction, 1000, 35_000)
                .unwrap();
            assert!((1..=4).contains(&s.events.len()), "{}", s.events.len());
            seen.extend(s.events.iter().map(|ev| ev.revision));
            match s.next_revision {
                Some(n) => from = StreamFrom::Revision(n),
                None => break,
            }
        }
        let mut want: Vec<u64> = (0..50).collect();
        if direction == Direction::Backwards {
            want.reverse();
        }
        assert_eq!(seen, want, "{direction:?}");
    }
    let mut from = AllFrom::Start;
    let mut seen = 0;
    loop {
        let s = e
            .read_all_budget(from, Direction::Forwards, 1000, None, 1000, 35_000)
            .unwrap();
        assert!(s.events.len() <= 4);
        seen += s.events.len();
        if s.is_end {
            break;
        }
        from = AllFrom::Position(s.next_position);
    }
    assert_eq!(seen, 50);
}
