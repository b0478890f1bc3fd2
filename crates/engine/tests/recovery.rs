//! Recovery: torn tails, corruption, a lost index, failing writes and fsyncs.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use common::{config, ev, open, rt};
use strata_engine::format::{segment_file_name, SEGMENT_HEADER_LEN};
use strata_engine::io::{FaultyFs, OsFs};
use strata_engine::{
    AllFrom, Direction, Engine, Error, ExpectedRevision as Exp, RecordedEvent, StreamFrom,
};
use tempfile::{tempdir, TempDir};

/// The segment files of a store, in order.
fn segments(dir: &TempDir) -> Vec<PathBuf> {
    let mut names: Vec<_> = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    names.sort();
    names
}

fn last_segment(dir: &TempDir) -> PathBuf {
    segments(dir).pop().unwrap()
}

fn all(e: &Engine) -> Vec<RecordedEvent> {
    e.read_all(AllFrom::Start, Direction::Forwards, usize::MAX, None)
        .unwrap()
        .events
}

/// Writes `n` single-event appends and one 3-event append; returns the events.
fn populate(dir: &TempDir, n: u128) -> Vec<RecordedEvent> {
    let e = open(dir);
    rt().block_on(async {
        for i in 0..n {
            e.append(&format!("s-{}", i % 3), Exp::Any, vec![ev(i + 1)])
                .await
                .unwrap();
        }
        e.append("multi", Exp::Any, vec![ev(1001), ev(1002), ev(1003)])
            .await
            .unwrap();
    });
    all(&e)
}

#[test]
fn torn_tail_is_cut_back_to_the_last_complete_append() {
    let dir = tempdir().unwrap();
    let before = populate(&dir, 20);
    // A torn write is never in the index (it was never acknowledged); without an index
    // recording it there is no evidence of loss, only a torn tail.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let seg = last_segment(&dir);
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut in the middle of the last record of the 3-event append: the whole append goes.
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    let e = open(&dir);
    assert!(e.recovery_report().truncated_bytes > 0);
    let after = all(&e);
    assert_eq!(
        after,
        before[..before.len() - 3],
        "the torn append is gone, everything before stays"
    );
    assert!(matches!(
        e.read_stream("multi", StreamFrom::Start, Direction::Forwards, 10),
        Err(Error::StreamNotFound { .. })
    ));
    rt().block_on(async {
        e.append("multi", Exp::NoStream, vec![ev(2000)])
            .await
            .unwrap()
    });
}

#[test]
fn garbage_after_the_tail_is_cut() {
    let dir = tempdir().unwrap();
    let before = populate(&dir, 10);
    let seg = last_segment(&dir);
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0xAB; 777]).unwrap();
    drop(f);
    let e = open(&dir);
    assert_eq!(e.recovery_report().truncated_bytes, 777);
    assert_eq!(all(&e), before);
}

#[test]
fn flipped_byte_in_the_middle_refuses_to_open_naming_file_and_offset() {
    let dir = tempdir().unwrap();
    let before = populate(&dir, 10);
    // Lose the index so the whole log is re-read on open.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let seg = last_segment(&dir);
    let victim = &before[4];
    let offset = SEGMENT_HEADER_LEN + victim.position + 30;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0xFF], offset).unwrap();
    drop(f);
    let err = Engine::open(config(&dir))
        .err()
        .expect("corrupt log must not open");
    let msg = err.to_string();
    assert!(matches!(err, Error::Corruption { .. }), "{msg}");
    assert!(msg.contains(&segment_file_name(0)), "{msg}");
    assert!(
        msg.contains(&format!(
            "byte offset {}",
            SEGMENT_HEADER_LEN + victim.position
        )),
        "{msg}"
    );
    assert!(msg.contains("CRC"), "{msg}");
    // And the file was not modified by the failed open.
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        SEGMENT_HEADER_LEN + before.last().unwrap().position + {
            let l = before.last().unwrap();
            (12 + 48 + l.stream.len() + l.event_type.len() + l.data.len() + l.metadata.len()) as u64
        }
    );
}

#[test]
fn corruption_behind_the_checkpoint_is_reported_on_read() {
    let dir = tempdir().unwrap();
    let before = populate(&dir, 10);
    let seg = last_segment(&dir);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    f.write_all_at(&[0xEE; 4], SEGMENT_HEADER_LEN + before[2].position + 40)
        .unwrap();
    drop(f);
    // Open verifies every record after the index checkpoint and those it reads back to refill
    // the idempotency window; with no window, this record is first read by the query below.
    let mut c = config(&dir);
    c.idempotency_window = 0;
    let e = Engine::open(c).unwrap();
    let err = e
        .read_all(AllFrom::Start, Direction::Forwards, 100, None)
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "byte offset {}",
            SEGMENT_HEADER_LEN + before[2].position
        )),
        "{err}"
    );
    // A full verification finds it too.
    let err = e.verify().unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "byte offset {}",
            SEGMENT_HEADER_LEN + before[2].position
        )),
        "{err}"
    );
}

#[test]
fn verify_checks_every_record() {
    let dir = tempdir().unwrap();
    let before = populate(&dir, 30);
    let e = open(&dir);
    let report = e.verify().unwrap();
    assert_eq!(report.records, before.len() as u64);
    assert_eq!(report.bytes, e.log_end());
}

#[test]
fn deleted_index_is_rebuilt_identically() {
    let dir = tempdir().unwrap();
    let mut c = config(&dir);
    c.segment_size = 2048;
    let e = Engine::open(c.clone()).unwrap();
    rt().block_on(async {
        for i in 0..200u128 {
            e.append(&format!("s-{}", i % 5), Exp::Any, vec![ev(i + 1)])
                .await
                .unwrap();
        }
        e.delete_stream("s-1", Exp::Any).await.unwrap();
        e.tombstone_stream("s-2", Exp::Any).await.unwrap();
        e.set_stream_metadata(
            "s-3",
            Exp::Any,
            strata_engine::StreamMetadata {
                max_count: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    });
    let snapshot = |e: &Engine| {
        let mut out = Vec::new();
        for s in ["s-0", "s-1", "s-2", "s-3", "s-4", "$$s-3"] {
            out.push(format!(
                "{s}: {:?}",
                e.read_stream(s, StreamFrom::Start, Direction::Forwards, 1000)
                    .map(|r| r.events)
            ));
        }
        let mut streams = e.list_streams();
        streams.sort_by(|a, b| a.name.cmp(&b.name));
        out.push(format!("{streams:?}"));
        out
    };
    let original = snapshot(&e);
    drop(e);
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let e = Engine::open(c).unwrap();
    assert_eq!(e.recovery_report().index_checkpoint, 0);
    assert_eq!(e.recovery_report().reindexed_events, 203);
    assert_eq!(snapshot(&e), original);
    rt().block_on(async {
        e.append("s-0", Exp::Exact(39), vec![ev(5000)])
            .await
            .unwrap()
    });
}

#[test]
fn failed_fsync_makes_the_store_read_only_until_reopened() {
    let dir = tempdir().unwrap();
    let faulty = FaultyFs::new(Arc::new(OsFs));
    let mut c = config(&dir);
    c.durability = strata_engine::Durability::Fsync;
    c.fs = Arc::new(faulty.clone());
    let e = Engine::open(c).unwrap();
    rt().block_on(async {
        e.append("s", Exp::Any, vec![ev(1)]).await.unwrap();
        faulty.fail_sync_after(1);
        let err = e.append("s", Exp::Any, vec![ev(2)]).await.unwrap_err();
        assert!(matches!(err, Error::ReadOnly { .. }), "{err}");
        assert!(err.to_string().contains("fdatasync"), "{err}");
        let err = e.append("s", Exp::Any, vec![ev(3)]).await.unwrap_err();
        assert!(
            matches!(err, Error::ReadOnly { .. }),
            "later writes are refused too: {err}"
        );
    });
    assert!(e.stats().read_only.is_some());
    // Reads go on and see only acknowledged data.
    assert_eq!(
        e.read_stream("s", StreamFrom::Start, Direction::Forwards, 10)
            .unwrap()
            .events
            .len(),
        1
    );
    drop(e);
    let e = open(&dir);
    assert!(e.stats().read_only.is_none());
    rt().block_on(async { e.append("s", Exp::Any, vec![ev(4)]).await.unwrap() });
}

#[test]
fn torn_write_from_a_failing_disk_is_recovered() {
    // Both write paths: plain writes (no-sync) and the durable write production uses.
    for durability in [
        strata_engine::Durability::NoSync,
        strata_engine::Durability::Fsync,
    ] {
        torn_write_is_recovered(durability);
    }
}

fn torn_write_is_recovered(durability: strata_engine::Durability) {
    let dir = tempdir().unwrap();
    let faulty = FaultyFs::new(Arc::new(OsFs));
    let mut c = config(&dir);
    c.durability = durability;
    c.fs = Arc::new(faulty.clone());
    let e = Engine::open(c).unwrap();
    rt().block_on(async {
        e.append("s", Exp::Any, vec![ev(1), ev(2)]).await.unwrap();
        // The next write leaves 70 bytes of its batch on disk, then fails.
        faulty.fail_write_after(1, 70);
        let err = e
            .append("s", Exp::Any, vec![ev(3), ev(4)])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ReadOnly { .. }), "{err}");
    });
    drop(e);
    let e = open(&dir);
    assert!(e.recovery_report().truncated_bytes == 70);
    let s = e
        .read_stream("s", StreamFrom::Start, Direction::Forwards, 10)
        .unwrap();
    assert_eq!(s.events.len(), 2);
}

#[test]
fn index_ahead_of_the_log_refuses_to_open_unless_the_loss_is_accepted() {
    let dir = tempdir().unwrap();
    let before = populate(&dir, 10);
    // Acknowledged (and indexed) data cut from the end of the log: cut by whole records.
    let seg = last_segment(&dir);
    let keep = SEGMENT_HEADER_LEN + before[5].position;
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(keep)
        .unwrap();
    let err = Engine::open(config(&dir)).err().expect("refused");
    assert!(matches!(err, Error::DataLoss { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("the log ends at") && msg.contains(&segment_file_name(0)),
        "{msg}"
    );
    let mut c = config(&dir);
    c.accept_data_loss = true;
    let e = Engine::open(c).unwrap();
    assert!(e.recovery_report().index_reset);
    assert_eq!(all(&e), before[..5]);
    let s = e
        .read_stream("s-0", StreamFrom::Start, Direction::Forwards, 100)
        .unwrap();
    assert_eq!(s.events.len(), 2);
}

#[test]
fn torn_header_of_a_new_segment_is_repaired() {
    let dir = tempdir().unwrap();
    let before = populate(&dir, 5);
    // A crash mid-rollover: the next segment exists with a partial header.
    let seg = last_segment(&dir);
    let real_end = std::fs::metadata(&seg).unwrap().len() - SEGMENT_HEADER_LEN;
    std::fs::write(
        dir.path().join("log").join(segment_file_name(real_end)),
        [b'S', b'T', b'R'],
    )
    .unwrap();
    let e = open(&dir);
    assert_eq!(all(&e), before);
    rt().block_on(async { e.append("after", Exp::Any, vec![ev(77)]).await.unwrap() });
    assert_eq!(all(&e).len(), before.len() + 1);
}

#[test]
fn a_segment_that_does_not_continue_the_previous_one_is_corruption() {
    let dir = tempdir().unwrap();
    populate(&dir, 5);
    let seg = last_segment(&dir);
    let real_end = std::fs::metadata(&seg).unwrap().len() - SEGMENT_HEADER_LEN;
    let bogus = dir
        .path()
        .join("log")
        .join(segment_file_name(real_end + 100));
    let mut header = vec![0u8; SEGMENT_HEADER_LEN as usize];
    std::fs::File::open(&seg)
        .unwrap()
        .read_exact_at(&mut header, 0)
        .unwrap();
    std::fs::write(&bogus, &header).unwrap();
    let err = Engine::open(config(&dir)).err().unwrap().to_string();
    assert!(err.contains(&segment_file_name(real_end + 100)), "{err}");
}

/// A store spread over several small segments; returns the segment files in order.
fn populate_segments(dir: &TempDir) -> Vec<PathBuf> {
    let mut c = config(dir);
    c.segment_size = 4096;
    let e = Engine::open(c).unwrap();
    rt().block_on(async {
        for i in 0..300u128 {
            e.append(&format!("s-{}", i % 4), Exp::Any, vec![ev(i + 1)])
                .await
                .unwrap();
        }
    });
    drop(e);
    let names = segments(dir);
    assert!(names.len() >= 3, "{names:?}");
    names
}

fn open_err(dir: &TempDir) -> String {
    let err = Engine::open(config(dir)).err().expect("refused");
    assert!(matches!(err, Error::DataLoss { .. }), "{err}");
    err.to_string()
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_missing_segment_anywhere_is_found_and_named() {
    let dir = tempdir().unwrap();
    let segs = populate_segments(&dir);
    let stash = dir.path().join("stash");
    for victim in [&segs[0], &segs[1], segs.last().unwrap()] {
        std::fs::rename(victim, &stash).unwrap();
        let msg = open_err(&dir);
        assert!(msg.contains(&file_name(victim)), "{msg}");
        std::fs::rename(&stash, victim).unwrap();
    }
    // Put back, the store opens and everything is there.
    let e = open(&dir);
    assert_eq!(all(&e).len(), 300);
}

#[test]
fn a_missing_newest_segment_is_served_only_when_the_loss_is_accepted() {
    let dir = tempdir().unwrap();
    let segs = populate_segments(&dir);
    let newest = segs.last().unwrap();
    std::fs::remove_file(newest).unwrap();
    let msg = open_err(&dir);
    assert!(
        msg.contains(&file_name(newest)) && msg.contains("missing"),
        "{msg}"
    );
    let mut c = config(&dir);
    c.accept_data_loss = true;
    let e = Engine::open(c).unwrap();
    assert!(e.recovery_report().index_reset);
    let left = all(&e).len();
    assert!(left > 0 && left < 300, "{left}");
    drop(e);
    // The loss was accepted once; the store now opens as it is.
    let e = open(&dir);
    assert_eq!(all(&e).len(), left);
}

#[test]
fn a_segment_deleted_under_a_running_store_is_restored_and_nothing_acknowledged_is_lost() {
    let dir = tempdir().unwrap();
    let e = open(&dir);
    let acked = rt().block_on(async {
        let mut acked = 0;
        for i in 0..50u128 {
            e.append("s", Exp::Any, vec![ev(i + 1)]).await.unwrap();
            acked += 1;
        }
        acked
    });
    let seg = last_segment(&dir);
    std::fs::remove_file(&seg).unwrap();
    // The next write notices before it is acknowledged.
    let err = rt()
        .block_on(e.append("s", Exp::Any, vec![ev(999)]))
        .unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err}");
    assert!(err.to_string().contains("deleted"), "{err}");
    assert!(
        seg.exists(),
        "the segment was copied back from the open file"
    );
    drop(e);
    let e = open(&dir);
    let events = e
        .read_stream("s", StreamFrom::Start, Direction::Forwards, 100)
        .unwrap()
        .events;
    assert!(events.len() >= acked, "{} of {acked}", events.len());
    for (i, ev) in events.iter().take(acked).enumerate() {
        assert_eq!(ev.event_id, uuid::Uuid::from_u128(i as u128 + 1));
    }
}
