//! Regression tests for the hardening issue, on the store: what careless or hostile operators
//! and clients did to its files and its event IDs, each checked against the real binary.

use std::path::{Path, PathBuf};

use strata_client::{Client, Error, EventData, ExpectedRevision as Exp};
use strata_tests::{read_events, rt, strata_bin, Server};
use uuid::Uuid;

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
        assert_eq!(read_events(&c, "second").await.len(), 3);

        // The nil UUID is not an identity: two such events are two events.
        for i in 0..2 {
            let mut e = EventData::json("E", &i).unwrap();
            e.id = Uuid::nil();
            let r = c.append("nil", Exp::Any, vec![e]).await.unwrap();
            assert!(!r.idempotent_replay);
        }
        let stored = read_events(&c, "nil").await;
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
        let left = read_events(&c, "acked").await.len();
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
        let stored: Vec<Uuid> = read_events(&c, "s").await.iter().map(|e| e.id).collect();
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
            assert_eq!(read_events(&c, &format!("s-{s}")).await.len(), 5);
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
