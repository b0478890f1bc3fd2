use std::path::Path;

use strata_engine::replica::{test_body, EntryPayload};
use strata_engine::{AllFrom, Direction};
use tempfile::TempDir;

use super::*;

fn open(dir: &Path) -> Engine {
    let mut c = strata_engine::Config::new(dir);
    c.replicated = true;
    c.durability = strata_engine::Durability::NoSync;
    c.segment_size = 64 * 1024;
    c.index_cache_bytes = 1 << 20;
    Engine::open(c).unwrap()
}

fn id(term: u64, index: u64) -> EntryId {
    EntryId {
        term,
        node: 1,
        index,
    }
}

/// A data entry writing three events to a stream named after its ID.
fn entry(term: u64, index: u64) -> LogEntry {
    LogEntry {
        id: id(term, index),
        payload: EntryPayload::Data(test_body(&format!("s-{term}-{index}"), 0, 3)),
    }
}

/// Entries `from..to` of term `term`, appended and committed up to `commit`.
fn fill(e: &Engine, term: u64, from: u64, to: u64, commit: Option<u64>) {
    let entries: Vec<_> = (from..to).map(|i| entry(term, i)).collect();
    e.append_entries(&entries).unwrap();
    if let Some(c) = commit {
        e.commit_entries(c).unwrap();
    }
}

fn events(e: &Engine) -> Vec<(String, u64, u64)> {
    e.read_all(AllFrom::Start, Direction::Forwards, 100_000, None)
        .unwrap()
        .events
        .into_iter()
        .map(|e| (e.stream, e.revision, e.position))
        .collect()
}

/// Sends `leader`'s entries up to `last` to `follower` the way a transfer does, in parts of
/// at most `part` bytes, and installs them.
fn transfer(leader: &Engine, follower: &Engine, dir: &Path, last: u64, part: usize) {
    let mut staging = Staging::create(dir, last).unwrap();
    let mut next = first_needed(follower).unwrap();
    while next <= last {
        let entries = read_encoded(leader, next, last, part).unwrap();
        for b in &entries {
            staging.push(b).unwrap();
        }
        next += entries.len() as u64;
    }
    let received = staging.finish().unwrap();
    install(follower, &received, leader.entry_id(last).unwrap().unwrap()).unwrap();
    assert!(
        !staging_path(dir).exists(),
        "the staging file is removed once installed"
    );
}

#[test]
fn an_empty_node_receives_the_whole_committed_log() {
    let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let leader = open(a.path());
    fill(&leader, 1, 0, 200, Some(180));
    let follower = open(b.path());
    transfer(&leader, &follower, b.path(), 180, 2000);
    assert_eq!(follower.committed_entry().unwrap(), Some(id(1, 180)));
    assert_eq!(follower.last_entry().unwrap(), Some(id(1, 180)));
    assert!(follower.read_entries(0, 181).unwrap() == leader.read_entries(0, 181).unwrap());
    assert_eq!(events(&follower), events(&leader));
    // It survives a reopen as it is.
    drop(follower);
    let follower = open(b.path());
    assert_eq!(events(&follower), events(&leader));
}

#[test]
fn an_uncommitted_tail_that_conflicts_is_replaced() {
    let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let leader = open(a.path());
    fill(&leader, 1, 0, 50, None);
    fill(&leader, 3, 50, 120, Some(110));
    let follower = open(b.path());
    // The same first 50 entries, 41 of them committed...
    follower
        .append_entries(&leader.read_entries(0, 50).unwrap())
        .unwrap();
    follower.commit_entries(40).unwrap();
    // ...then entries of a term whose leader lost them.
    fill(&follower, 2, 50, 90, None);
    assert_eq!(first_needed(&follower).unwrap(), 41);
    transfer(&leader, &follower, b.path(), 110, 1 << 20);
    assert_eq!(follower.last_entry().unwrap(), Some(id(3, 110)));
    assert!(follower.read_entries(0, 111).unwrap() == leader.read_entries(0, 111).unwrap());
    assert_eq!(events(&follower), events(&leader));
}

#[test]
fn entries_already_held_are_only_committed() {
    let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let leader = open(a.path());
    fill(&leader, 1, 0, 30, Some(29));
    let follower = open(b.path());
    follower
        .append_entries(&leader.read_entries(0, 30).unwrap())
        .unwrap();
    follower.commit_entries(5).unwrap();
    let staging = Staging::create(b.path(), 20).unwrap();
    let received = staging.finish().unwrap();
    install(&follower, &received, id(1, 20)).unwrap();
    assert_eq!(follower.committed_entry().unwrap(), Some(id(1, 20)));
    assert_eq!(
        follower.last_entry().unwrap(),
        Some(id(1, 29)),
        "nothing truncated"
    );
}

#[test]
fn staging_refuses_gaps_entries_past_the_end_and_short_transfers() {
    let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let leader = open(a.path());
    fill(&leader, 1, 0, 10, Some(9));
    let all = read_encoded(&leader, 0, 9, usize::MAX).unwrap();
    assert_eq!(all.len(), 10);

    let mut s = Staging::create(b.path(), 9).unwrap();
    s.push(&all[0]).unwrap();
    let gap = s.push(&all[2]).unwrap_err().to_string();
    assert!(gap.contains("does not follow entry 0"), "{gap}");

    let mut s = Staging::create(b.path(), 5).unwrap();
    for e in &all[..6] {
        s.push(e).unwrap();
    }
    let past = s.push(&all[6]).unwrap_err().to_string();
    assert!(past.contains("past the snapshot's last entry 5"), "{past}");

    let mut s = Staging::create(b.path(), 9).unwrap();
    s.push(&all[0]).unwrap();
    let short = s.finish().unwrap_err().to_string();
    assert!(
        short.contains("ended at entry 0, before its last entry 9"),
        "{short}"
    );

    let mut s = Staging::create(b.path(), 9).unwrap();
    let garbage = s.push(&Bytes::from_static(b"not an entry")).unwrap_err();
    assert_eq!(garbage.kind(), io::ErrorKind::InvalidData);

    remove_leftover(b.path()).unwrap();
    assert!(!staging_path(b.path()).exists());
}

#[test]
fn reading_for_a_transfer_is_bounded_by_bytes_but_never_empty() {
    let a = TempDir::new().unwrap();
    let leader = open(a.path());
    fill(&leader, 1, 0, 40, Some(39));
    let one = read_encoded(&leader, 0, 39, 1).unwrap();
    assert_eq!(one.len(), 1);
    let some = read_encoded(&leader, 5, 39, 3 * one[0].len()).unwrap();
    assert_eq!(some.len(), 3);
    let rest = read_encoded(&leader, 30, 39, usize::MAX).unwrap();
    assert_eq!(rest.len(), 10);
    assert!(read_encoded(&leader, 41, 45, 10)
        .unwrap_err()
        .to_string()
        .contains("entry 41"));
}

#[test]
fn an_empty_node_refuses_entries_that_do_not_start_the_log() {
    let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let leader = open(a.path());
    fill(&leader, 1, 0, 10, Some(9));
    let follower = open(b.path());
    let mut staging = Staging::create(b.path(), 9).unwrap();
    for e in read_encoded(&leader, 5, 9, usize::MAX).unwrap() {
        staging.push(&e).unwrap();
    }
    let received = staging.finish().unwrap();
    let err = install(&follower, &received, id(1, 9))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds entries 5..=9, but this node needs 0..=9"),
        "{err}"
    );
    assert_eq!(follower.last_entry().unwrap(), None, "nothing was written");
}
