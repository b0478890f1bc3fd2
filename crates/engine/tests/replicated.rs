//! A cluster node's log (engine side of replication): entries appended, synced, truncated
//! and committed as a consensus layer would, checked against a simple model; the writer
//! proposing batches through a one-node proposer; torn entries, the truncation guard, and
//! the refusal to mix single-node and cluster logs.

mod common;

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use proptest::prelude::*;
use strata_engine::replica::{test_body, EntryId, EntryPayload, LogEntry, Proposer, Refusal};
use strata_engine::{AllFrom, Direction, Engine, Error, ExpectedRevision as Exp, StreamFrom};

fn config(dir: &tempfile::TempDir) -> strata_engine::Config {
    let mut c = common::config(dir);
    c.replicated = true;
    c.segment_size = 4096;
    c
}

fn open(dir: &tempfile::TempDir) -> Engine {
    Engine::open(config(dir)).expect("open")
}

fn id(term: u64, index: u64) -> EntryId {
    EntryId {
        term,
        node: term % 3 + 1,
        index,
    }
}

/// The stream a data entry of the model writes (one per entry ID, so truncated entries and
/// their replacements never share a stream).
fn stream_of(e: EntryId) -> String {
    format!("s-{}-{}", e.index, e.term)
}

fn data(e: EntryId, events: usize) -> LogEntry {
    LogEntry {
        id: e,
        payload: EntryPayload::Data(test_body(&stream_of(e), 0, events)),
    }
}

fn all_events(engine: &Engine) -> Vec<(String, u64)> {
    let s = engine
        .read_all(AllFrom::Start, Direction::Forwards, 100_000, None)
        .unwrap();
    s.events
        .into_iter()
        .map(|e| (e.stream, e.revision))
        .collect()
}

/// The events the committed data entries of `model` hold, in log order.
fn expected_events(model: &[LogEntry], committed: Option<u64>) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in model {
        if committed.is_none_or(|c| e.id.index > c) {
            break;
        }
        if let EntryPayload::Data(body) = &e.payload {
            // test_body writes 48 fixed + stream + "Tested" + 2 data bytes per event.
            let each = 12 + 48 + stream_of(e.id).len() + 6 + 2;
            for r in 0..(body.len() / each) as u64 {
                out.push((stream_of(e.id), r));
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Op {
    /// Entries: `Some(n)` a data entry of n events, `None` a blank or membership entry.
    Append(Vec<Option<usize>>),
    /// Truncate after the entry this far back from the last (0: nothing removed).
    Truncate(u64),
    /// Commit this far back from the last entry.
    Commit(u64),
    SaveCommitted,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => proptest::collection::vec(proptest::option::weighted(0.8, 1usize..5), 1..4)
            .prop_map(Op::Append),
        2 => (0u64..4).prop_map(Op::Truncate),
        3 => (0u64..3).prop_map(Op::Commit),
        1 => Just(Op::SaveCommitted),
        1 => Just(Op::Reopen),
    ]
}

fn check(engine: &Engine, model: &[LogEntry], committed: Option<u64>) {
    assert_eq!(engine.last_entry().unwrap(), model.last().map(|e| e.id));
    assert_eq!(
        engine.committed_entry().unwrap(),
        committed.map(|c| model[c as usize].id)
    );
    let read = engine.read_entries(0, model.len() as u64 + 3).unwrap();
    assert_eq!(read, model);
    assert_eq!(all_events(engine), expected_events(model, committed));
    for e in model {
        let visible = committed.is_some_and(|c| e.id.index <= c);
        if let EntryPayload::Data(_) = e.payload {
            let r = engine.read_stream(
                &stream_of(e.id),
                StreamFrom::Start,
                Direction::Forwards,
                100,
            );
            assert_eq!(r.is_ok(), visible, "{:?}: {r:?}", e.id);
        }
    }
    if let Some(last) = model.last() {
        let want = model
            .iter()
            .rev()
            .find(|e| matches!(e.payload, EntryPayload::Membership(_)))
            .cloned();
        assert_eq!(engine.last_membership(last.id.index).unwrap(), want);
    }
    engine.verify().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn entries_follow_the_model(ops in proptest::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = open(&dir);
        let mut model: Vec<LogEntry> = Vec::new();
        let mut committed: Option<u64> = None;
        let mut term = 1;
        for op in ops {
            match op {
                Op::Append(kinds) => {
                    let mut batch = Vec::new();
                    for k in kinds {
                        let e = id(term, model.len() as u64 + batch.len() as u64);
                        batch.push(match k {
                            Some(n) => data(e, n),
                            None if e.index.is_multiple_of(2) => LogEntry { id: e, payload: EntryPayload::Blank },
                            None => LogEntry { id: e, payload: EntryPayload::Membership(Bytes::from(format!("{{\"at\":{}}}", e.index))) },
                        });
                    }
                    engine.append_entries(&batch).unwrap();
                    engine.sync_entries().unwrap();
                    model.extend(batch);
                }
                Op::Truncate(back) => {
                    let keep = (model.len() as u64).saturating_sub(back);
                    let lowest = committed.map_or(0, |c| c + 1);
                    if keep < lowest {
                        continue;
                    }
                    let after = keep.checked_sub(1);
                    engine.truncate_entries_after(after).unwrap();
                    model.truncate(keep as usize);
                    // A new leader takes over.
                    term += 1;
                }
                Op::Commit(back) => {
                    let Some(target) = (model.len() as u64).checked_sub(1 + back) else { continue };
                    engine.commit_entries(target).unwrap();
                    committed = committed.max(Some(target));
                }
                Op::SaveCommitted => {
                    engine.save_committed(committed.map(|c| model[c as usize].id)).unwrap();
                }
                Op::Reopen => {
                    drop(engine);
                    engine = open(&dir);
                }
            }
            check(&engine, &model, committed);
        }
    }
}

#[test]
fn committed_entries_are_never_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(&dir);
    engine
        .append_entries(&[data(id(1, 0), 2), data(id(1, 1), 2), data(id(1, 2), 1)])
        .unwrap();
    engine.commit_entries(1).unwrap();
    engine.truncate_entries_after(Some(1)).unwrap();
    let err = engine.truncate_entries_after(Some(0)).unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err}");
    assert!(err.to_string().contains("committed"), "{err}");
    // The store refuses further log changes until reopened; the committed data is intact.
    assert!(engine.append_entries(&[data(id(2, 2), 1)]).is_err());
    assert_eq!(all_events(&engine).len(), 4);
}

#[test]
fn entries_must_follow_on_and_bodies_must_be_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(&dir);
    engine.append_entries(&[data(id(1, 5), 1)]).unwrap();
    let err = engine.append_entries(&[data(id(1, 7), 1)]).unwrap_err();
    assert!(err.to_string().contains("cannot follow entry 5"), "{err}");
    let mut body = test_body("x-1", 0, 2).to_vec();
    body.truncate(body.len() - 3);
    let err = engine
        .append_entries(&[LogEntry {
            id: id(1, 6),
            payload: EntryPayload::Data(Bytes::from(body)),
        }])
        .unwrap_err();
    assert!(
        err.to_string().contains("not a valid writer batch"),
        "{err}"
    );
    // A batch without its commit record is refused too.
    let two = test_body("x-1", 0, 2);
    let first_len = two.len() / 2;
    let err = engine
        .append_entries(&[LogEntry {
            id: id(1, 6),
            payload: EntryPayload::Data(two.slice(..first_len)),
        }])
        .unwrap_err();
    assert!(err.to_string().contains("commit record"), "{err}");
    assert_eq!(engine.last_entry().unwrap(), Some(id(1, 5)));
}

#[test]
fn a_torn_last_entry_is_cut_and_the_commit_point_never_passes_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(&dir);
        engine
            .append_entries(&[data(id(1, 0), 3), data(id(1, 1), 3)])
            .unwrap();
        engine.commit_entries(0).unwrap();
        // The cluster said entry 7 is committed; this node has only two.
        engine.save_committed(Some(id(1, 7))).unwrap();
    }
    // Tear entry 1: cut its last 10 bytes.
    let seg = dir.path().join("log").join("00000000000000000000.seg");
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    let engine = open(&dir);
    assert!(engine.recovery_report().truncated_bytes > 0);
    assert_eq!(engine.last_entry().unwrap(), Some(id(1, 0)));
    assert_eq!(engine.committed_entry().unwrap(), Some(id(1, 0)));
    assert_eq!(all_events(&engine).len(), 3);
    // The slot is free for the leader's entry 1.
    engine.append_entries(&[data(id(2, 1), 1)]).unwrap();
    engine.commit_entries(1).unwrap();
    assert_eq!(all_events(&engine).len(), 4);
}

#[test]
fn saved_commit_point_makes_entries_visible_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(&dir);
        engine
            .append_entries(&[data(id(1, 0), 1), data(id(1, 1), 2), data(id(1, 2), 4)])
            .unwrap();
        engine.sync_entries().unwrap();
        engine.save_committed(Some(id(1, 1))).unwrap();
    }
    let engine = open(&dir);
    assert_eq!(engine.committed_entry().unwrap(), Some(id(1, 1)));
    assert_eq!(all_events(&engine).len(), 3);
    assert_eq!(engine.last_entry().unwrap(), Some(id(1, 2)));
    assert_eq!(engine.read_vote().unwrap(), None);
    engine.save_vote(b"term 4 for node 2").unwrap();
    drop(engine);
    let engine = open(&dir);
    assert_eq!(engine.read_vote().unwrap().unwrap(), b"term 4 for node 2");
}

#[test]
fn single_node_and_cluster_logs_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(&dir);
        engine.append_entries(&[data(id(1, 0), 1)]).unwrap();
        engine.commit_entries(0).unwrap();
    }
    let err = Engine::open(common::config(&dir)).err().expect("refused");
    assert!(err.to_string().contains("cluster node"), "{err}");

    let single = tempfile::tempdir().unwrap();
    {
        let engine = common::open(&single);
        let rt = common::rt();
        rt.block_on(engine.append("a-1", Exp::Any, vec![common::ev(1)]))
            .unwrap();
    }
    let err = Engine::open(config(&single)).err().expect("refused");
    assert!(
        err.to_string().contains("written by a single node"),
        "{err}"
    );
    let engine = common::open(&single);
    assert!(engine.append_entries(&[]).is_err());
    assert!(!engine.is_replicated());
}

/// Commits every proposal at once, as the only voter of term 1 would.
struct OneNode {
    engine: Mutex<Weak<Engine>>,
}

impl Proposer for OneNode {
    fn prepare(&self) -> Result<(), Refusal> {
        Ok(())
    }

    fn propose(&self, body: Bytes) -> Result<u64, Refusal> {
        let fail = |e: String| Refusal::NotAcknowledged(e);
        let engine = self
            .engine
            .lock()
            .unwrap()
            .upgrade()
            .ok_or_else(|| fail("closed".into()))?;
        let index = engine
            .last_entry()
            .map_err(|e| fail(e.to_string()))?
            .map_or(0, |l| l.index + 1);
        let entry = LogEntry {
            id: id(1, index),
            payload: EntryPayload::Data(body),
        };
        engine
            .append_entries(&[entry])
            .and_then(|()| engine.sync_entries())
            .and_then(|()| engine.commit_entries(index))
            .map_err(|e| fail(e.to_string()))?;
        Ok(engine.entry_body_start(index).unwrap().expect("held"))
    }
}

#[test]
fn appends_go_through_the_proposer() {
    let dir = tempfile::tempdir().unwrap();
    let rt = common::rt();
    let engine = Arc::new(open(&dir));
    // Without a proposer (no leader yet) appends are refused, saying why.
    let err = rt
        .block_on(engine.append("a-1", Exp::Any, vec![common::ev(1)]))
        .unwrap_err();
    assert!(matches!(err, Error::NotAcknowledged { .. }), "{err}");
    engine.set_proposer(Some(Arc::new(OneNode {
        engine: Mutex::new(Arc::downgrade(&engine)),
    })));
    let mut positions = Vec::new();
    for i in 0..50u128 {
        let r = rt
            .block_on(engine.append(&format!("a-{}", i % 5), Exp::Any, vec![common::ev(10 + i)]))
            .unwrap();
        positions.push(r.position);
    }
    let r = rt
        .block_on(engine.append("a-0", Exp::Exact(9), vec![common::ev(100)]))
        .unwrap();
    assert_eq!(r.revision, 10);
    let err = rt
        .block_on(engine.append("a-0", Exp::Exact(3), vec![common::ev(101)]))
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedRevision { .. }), "{err}");
    // A retry of a written event is answered from the window, at its original position.
    let replay = rt
        .block_on(engine.append("a-3", Exp::Any, vec![common::ev(13)]))
        .unwrap();
    assert!(replay.idempotent_replay);
    assert_eq!(replay.position, positions[3]);
    let all = engine
        .read_all(AllFrom::Start, Direction::Forwards, 1000, None)
        .unwrap();
    let read: Vec<u64> = all.events.iter().take(50).map(|e| e.position).collect();
    assert_eq!(
        read, positions,
        "acknowledged positions are where the events are"
    );
    let backwards = engine
        .read_all(AllFrom::End, Direction::Backwards, 1000, None)
        .unwrap();
    assert_eq!(backwards.events.len(), 51);
    engine.set_proposer(None);
    let engine = Arc::try_unwrap(engine).ok().expect("only handle");
    drop(engine);
    let engine = open(&dir);
    assert_eq!(engine.last_entry().unwrap().unwrap().index, 50);
    assert_eq!(engine.committed_entry().unwrap().unwrap().index, 50);
    let s = engine
        .read_stream("a-0", StreamFrom::Start, Direction::Forwards, 100)
        .unwrap();
    assert_eq!(s.events.len(), 11);
    engine.verify().unwrap();
}

#[test]
fn a_new_leader_recognises_retries_of_what_an_earlier_leader_committed() {
    let rt = common::rt();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Arc::new(open(&a_dir));
    a.set_proposer(Some(Arc::new(OneNode {
        engine: Mutex::new(Arc::downgrade(&a)),
    })));
    let first = rt
        .block_on(a.append("a-1", Exp::Any, vec![common::ev(7), common::ev(8)]))
        .unwrap();
    // Node b follows: it receives and commits a's entries.
    let b = Arc::new(open(&b_dir));
    let entries = a.read_entries(0, 10).unwrap();
    b.append_entries(&entries).unwrap();
    b.commit_entries(entries.len() as u64 - 1).unwrap();
    // Then b leads, and a client retries the append it never heard back about.
    b.set_proposer(Some(Arc::new(OneNode {
        engine: Mutex::new(Arc::downgrade(&b)),
    })));
    let retry = rt
        .block_on(b.append("a-1", Exp::Any, vec![common::ev(7), common::ev(8)]))
        .unwrap();
    assert!(retry.idempotent_replay, "{retry:?}");
    assert_eq!(
        (retry.revision, retry.position),
        (first.revision, first.position)
    );
    assert_eq!(all_events(&b).len(), 2);
    a.set_proposer(None);
    b.set_proposer(None);
}
