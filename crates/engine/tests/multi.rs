//! Multi-stream appends: all or nothing, checks decided atomically with the write, retries
//! recognised, and a torn multi-stream append cut as a whole at recovery.

mod common;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::sync::Arc;

use common::{ev, open, rt};
use strata_engine::{
    AllFrom, CurrentRevision, Direction, Engine, Error, ExpectedRevision as Exp, MultiAppend,
    StreamFrom,
};
use tempfile::tempdir;
use uuid::Uuid;

fn revisions(e: &Engine, stream: &str) -> Vec<(u64, Uuid)> {
    match e.read_stream(stream, StreamFrom::Start, Direction::Forwards, 1000) {
        Ok(s) => s.events.iter().map(|x| (x.revision, x.event_id)).collect(),
        Err(Error::StreamNotFound { .. }) => Vec::new(),
        Err(err) => panic!("{err}"),
    }
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

#[test]
fn a_multi_stream_append_writes_every_stream_in_one_run() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        e.append("b", Exp::Any, vec![ev(100)]).await.unwrap();
        let mut m = MultiAppend::new().write("a", Exp::NoStream, [ev(1)]).write(
            "b",
            Exp::Exact(0),
            [ev(2)],
        );
        m.events.push((0, ev(3)));
        let r = e.append_multi(m).await.unwrap();
        assert!(!r.idempotent_replay);
        assert_eq!(
            r.streams
                .iter()
                .map(|s| (s.stream.as_str(), s.revision))
                .collect::<Vec<_>>(),
            vec![("a", 1), ("b", 1)]
        );
        assert_eq!(r.position, r.streams[0].position);
    });
    assert_eq!(revisions(&e, "a"), vec![(0, id(1)), (1, id(3))]);
    assert_eq!(revisions(&e, "b"), vec![(0, id(100)), (1, id(2))]);
    let all = e
        .read_all(AllFrom::Start, Direction::Forwards, 100, None)
        .unwrap();
    let order: Vec<Uuid> = all.events.iter().map(|x| x.event_id).collect();
    assert_eq!(
        order,
        vec![id(100), id(1), id(2), id(3)],
        "log order is the request's order"
    );
}

#[test]
fn one_failed_expectation_writes_nothing_anywhere() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        e.append("b", Exp::Any, vec![ev(100)]).await.unwrap();
        let err = e
            .append_multi(MultiAppend::new().write("a", Exp::NoStream, [ev(1)]).write(
                "b",
                Exp::NoStream,
                [ev(2)],
            ))
            .await
            .unwrap_err();
        match err {
            Error::WrongExpectedRevision { stream, actual, .. } => {
                assert_eq!(stream, "b");
                assert_eq!(actual, CurrentRevision::Revision(0));
            }
            other => panic!("{other}"),
        }
    });
    assert!(revisions(&e, "a").is_empty());
    assert_eq!(revisions(&e, "b").len(), 1);
}

#[test]
fn checks_are_decided_with_the_write_and_all_failures_are_reported() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        e.append("seen", Exp::Any, vec![ev(100), ev(101)])
            .await
            .unwrap();
        // Passing checks, one on a written stream (its state before the append).
        e.append_multi(
            MultiAppend::new()
                .write("seen", Exp::Any, [ev(1)])
                .check("seen", Exp::Exact(1))
                .check("unseen", Exp::NoStream),
        )
        .await
        .unwrap();
        let err = e
            .append_multi(
                MultiAppend::new()
                    .write("x", Exp::Any, [ev(2)])
                    .check("seen", Exp::NoStream)
                    .check("unseen", Exp::NoStream)
                    .check("unseen", Exp::StreamExists),
            )
            .await
            .unwrap_err();
        let Error::ChecksFailed { violations } = &err else {
            panic!("{err}")
        };
        let got: Vec<(usize, &str, CurrentRevision)> = violations
            .iter()
            .map(|v| (v.check, v.stream.as_str(), v.actual))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "seen", CurrentRevision::Revision(2)),
                (2, "unseen", CurrentRevision::NoStream)
            ]
        );
        assert!(
            err.to_string().contains("check 0 on stream 'seen'"),
            "{err}"
        );
    });
    assert!(revisions(&e, "x").is_empty());
}

#[test]
fn a_retry_is_recognised_and_a_partial_overlap_refused() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        let m = MultiAppend::new()
            .write("a", Exp::NoStream, [ev(1), ev(2)])
            .write("b", Exp::NoStream, [ev(3)])
            .check("c", Exp::NoStream);
        let first = e.append_multi(m.clone()).await.unwrap();
        // The checked stream moves; the retry still returns the original result.
        e.append("c", Exp::Any, vec![ev(9)]).await.unwrap();
        let again = e.append_multi(m).await.unwrap();
        assert!(again.idempotent_replay);
        assert_eq!(again.streams, first.streams);
        assert_eq!(again.position, first.position);
        assert_eq!(revisions(&e, "a").len(), 2);

        let partial = MultiAppend::new()
            .write("a", Exp::Any, [ev(1), ev(2)])
            .write("d", Exp::Any, [ev(4)]);
        let err = e.append_multi(partial).await.unwrap_err();
        assert!(
            matches!(&err, Error::IdempotencyConflict { stream, .. } if stream == "d"),
            "{err}"
        );
    });
    assert!(revisions(&e, "d").is_empty());
}

#[test]
fn tombstoned_streams_refuse_multi_stream_appends() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    rt().block_on(async {
        e.append("gone", Exp::Any, vec![ev(1)]).await.unwrap();
        e.tombstone_stream("gone", Exp::Any).await.unwrap();
        for m in [
            MultiAppend::new()
                .write("a", Exp::Any, [ev(2)])
                .write("gone", Exp::Any, [ev(3)]),
            MultiAppend::new()
                .write("a", Exp::Any, [ev(2)])
                .check("gone", Exp::Any),
        ] {
            let err = e.append_multi(m).await.unwrap_err();
            assert!(matches!(err, Error::StreamDeleted { .. }), "{err}");
        }
    });
    assert!(revisions(&e, "a").is_empty());
}

#[test]
fn a_torn_multi_stream_append_is_cut_as_a_whole() {
    let dir = tempdir().unwrap();
    {
        let e = open(&dir);
        rt().block_on(async {
            e.append("a", Exp::Any, vec![ev(1)]).await.unwrap();
            e.append_multi(
                MultiAppend::new()
                    .write("a", Exp::Exact(0), [ev(2), ev(3)])
                    .write("b", Exp::NoStream, [ev(4), ev(5)]),
            )
            .await
            .unwrap();
        });
    }
    // A torn write was never acknowledged, so no index records it.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let seg = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .max()
        .unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Only the last record of the run (stream b's second event) is damaged.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let e = open(&dir);
    assert!(e.recovery_report().truncated_bytes > 0);
    assert_eq!(
        revisions(&e, "a"),
        vec![(0, id(1))],
        "stream a's part went too"
    );
    assert!(revisions(&e, "b").is_empty());
}

/// Transfers between accounts, each a multi-stream append with exact expectations read just
/// before: afterwards every successful transfer is there in full, contiguous in the log, and
/// each account's revisions count exactly the transfers that touched it.
#[test]
fn concurrent_transfers_are_all_or_nothing() {
    let dir = tempdir().unwrap();
    let e = Arc::new(open(&dir));
    let accounts = 4u64;
    let done = rt().block_on(async {
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = Vec::new();
                let mut seed = t * 7919 + 1;
                for k in 0..40u64 {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let from = (seed >> 33) % accounts;
                    let to = (from + 1 + (seed >> 40) % (accounts - 1)) % accounts;
                    let (fa, ta) = (format!("acct-{from}"), format!("acct-{to}"));
                    let exp = |s: &str| match e.stream_info(s).and_then(|i| i.last_revision) {
                        Some(r) => Exp::Exact(r),
                        None => Exp::NoStream,
                    };
                    let n = u128::from(t * 1000 + k) * 2 + 10_000;
                    let m = MultiAppend::new()
                        .write(fa.clone(), exp(&fa), [ev(n)])
                        .write(ta.clone(), exp(&ta), [ev(n + 1)]);
                    match e.append_multi(m).await {
                        Ok(r) => ok.push((fa, ta, n, r.position)),
                        Err(Error::WrongExpectedRevision { .. }) => {}
                        Err(err) => panic!("{err}"),
                    }
                }
                ok
            }));
        }
        let mut done = Vec::new();
        for t in tasks {
            done.extend(t.await.unwrap());
        }
        done
    });
    assert!(!done.is_empty());
    let mut per_stream: HashMap<String, usize> = HashMap::new();
    for (fa, ta, _, _) in &done {
        *per_stream.entry(fa.clone()).or_default() += 1;
        *per_stream.entry(ta.clone()).or_default() += 1;
    }
    for a in 0..accounts {
        let name = format!("acct-{a}");
        let revs = revisions(&e, &name);
        assert_eq!(
            revs.len(),
            per_stream.get(&name).copied().unwrap_or(0),
            "{name}"
        );
        assert!(revs.iter().enumerate().all(|(i, (r, _))| *r == i as u64));
    }
    let all = e
        .read_all(AllFrom::Start, Direction::Forwards, 100_000, None)
        .unwrap();
    let ids: Vec<Uuid> = all.events.iter().map(|x| x.event_id).collect();
    for (_, _, n, _) in &done {
        let i = ids.iter().position(|x| *x == id(*n)).expect("written");
        assert_eq!(
            ids[i + 1],
            id(n + 1),
            "a transfer's two events are adjacent in the log"
        );
    }
    assert_eq!(ids.len(), done.len() * 2, "failed transfers wrote nothing");
}
