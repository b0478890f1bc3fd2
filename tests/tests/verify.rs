//! Damage in the part of the log that opening does not re-read (before the index checkpoint
//! and outside the idempotency window) is still found: in the background by default, or
//! before serving with `--verify-log startup`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use strata_client::{Client, Error, EventData, ExpectedRevision as Exp, ReadOptions};
use strata_engine::{Config, Durability, Engine, ExpectedRevision, StreamFrom};
use strata_tests::{rt, strata_bin, Server};

/// A store whose first stream (`early`) lies behind 101,000 later events, cleanly closed
/// (index checkpoint at the end). Returns the log position of `early`'s event 5.
fn build_store(dir: &Path) -> u64 {
    let mut config = Config::new(dir);
    config.durability = Durability::NoSync;
    let engine = Engine::open(config).unwrap();
    let position = rt().block_on(async {
        let early = (0..10)
            .map(|i| strata_engine::EventData::json("Early", format!("{{\"i\":{i}}}")))
            .collect();
        engine
            .append("early", ExpectedRevision::Any, early)
            .await
            .unwrap();
        for batch in 0..101u64 {
            let events = (0..1000)
                .map(|i| strata_engine::EventData::json("Bulk", format!("{{\"i\":{i}}}")))
                .collect();
            engine
                .append(&format!("bulk-{batch}"), ExpectedRevision::Any, events)
                .await
                .unwrap();
        }
        engine
            .read_stream(
                "early",
                StreamFrom::Revision(5),
                strata_engine::Direction::Forwards,
                1,
            )
            .unwrap()
            .events[0]
            .position
    });
    engine.close().unwrap();
    position
}

fn segment(dir: &Path) -> PathBuf {
    dir.join("log")
        .join(strata_engine::format::segment_file_name(0))
}

/// Flips one byte inside the record at `position`.
fn damage(dir: &Path, position: u64) -> u64 {
    let offset = strata_engine::format::SEGMENT_HEADER_LEN + position + 20;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment(dir))
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
    f.sync_all().unwrap();
    offset
}

fn wait_for_log(server: &Server, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.logs().contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} in the log:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn background_check_finds_old_damage_and_turns_the_store_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let position = build_store(dir.path());

    // Intact: the background check passes and says so.
    let mut server = Server::start(dir.path(), &[]);
    wait_for_log(&server, "log verified");
    assert!(server.terminate().success());

    damage(dir.path(), position);
    let server = Server::start(dir.path(), &[]);
    // Opening does not look that far back, so the server starts; the check then finds it.
    wait_for_log(&server, "log verification failed");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = String::from_utf8_lossy(&server.cli(&["health"]).stdout)
            .trim()
            .to_owned();
        if status == "NOT_SERVING" {
            break;
        }
        assert!(Instant::now() < deadline, "health still says {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    rt().block_on(async {
        let c = Client::builder(server.url())
            .append_retries(0)
            .connect()
            .await
            .unwrap();
        let err = c
            .append("new", Exp::Any, vec![EventData::json("E", &1).unwrap()])
            .await
            .unwrap_err();
        match &err {
            Error::Unavailable(m) => {
                let seg = strata_engine::format::segment_file_name(0);
                assert!(m.contains("damage") && m.contains(&seg), "{m}");
            }
            other => panic!("expected UNAVAILABLE, got {other:?}"),
        }
        // Undamaged streams still read; the damaged record is reported, not skipped.
        let bulk: Vec<_> = c
            .read_stream("bulk-7", ReadOptions::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(bulk.len(), 1000);
        let early: Result<Vec<_>, _> = match c.read_stream("early", ReadOptions::default()).await {
            Ok(s) => s.try_collect().await,
            Err(e) => Err(e),
        };
        let err = early.expect_err("the damaged record must not be returned");
        assert!(format!("{err:?}").contains("corrupt"), "{err:?}");
    });
}

#[test]
fn startup_check_refuses_to_serve_a_damaged_log() {
    let dir = tempfile::tempdir().unwrap();
    let position = build_store(dir.path());
    // Intact: checked before serving ("listening on" comes after it).
    let mut server = Server::start(dir.path(), &["--verify-log", "startup"]);
    assert!(server.logs().contains("log verified"), "{}", server.logs());
    let status = server.terminate();
    assert!(status.success(), "{status:?}: {}", server.logs());

    let offset = damage(dir.path(), position);
    let out = Command::new(strata_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--verify-log",
            "startup",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let seg = strata_engine::format::segment_file_name(0);
    assert!(
        stderr.contains(&seg) && stderr.contains("corrupt log"),
        "names the file: {stderr}"
    );
    // The damaged record starts at or before the flipped byte.
    let named: u64 = stderr
        .split("at byte offset ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte offset in {stderr}"));
    assert!(named <= offset, "offset {named} vs damage at {offset}");
}
