//! Crash test: a child process appends under concurrency and reports each acknowledged
//! event; it is SIGKILLed at pseudo-random moments, many rounds. After every kill the store
//! reopens with every acknowledged event present, intact, once and in order, and takes new
//! appends. With the derived streams kept, every acknowledged event is also listed exactly once,
//! in log order, in its category and type streams, at the revision it had before the crash.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strata_engine::{Config, Direction, Engine, EventData, ExpectedRevision, StreamFrom};
use strata_tests::payload_for;
use uuid::Uuid;

fn kill_after(ms: u64, seed: &mut u64) -> u64 {
    // xorshift: deterministic kill times from a fixed seed.
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    ms + *seed % 400
}

#[test]
fn every_acknowledged_append_survives_sigkill() {
    crash_rounds(8, false);
}

#[test]
fn derived_streams_keep_every_acknowledged_event_at_its_revision_across_sigkill() {
    crash_rounds(5, true);
}

/// Each acknowledged event's revision in `$ce-crash` and `$et-Crashy` as last seen; checks the
/// derived streams list every acknowledged event once, in log order, at the same revisions.
fn check_derived(
    engine: &Engine,
    acked: &HashMap<String, HashMap<u64, Uuid>>,
    seen: &mut HashMap<(&'static str, Uuid), u64>,
    round: usize,
) {
    let ids: HashSet<Uuid> = acked.values().flat_map(|r| r.values().copied()).collect();
    for name in ["$ce-crash", "$et-Crashy"] {
        let slice = engine
            .read_derived(
                name,
                StreamFrom::Start,
                Direction::Forwards,
                usize::MAX,
                usize::MAX,
            )
            .unwrap_or_else(|e| panic!("round {round}: {name}: {e}"));
        let mut listed = HashSet::new();
        let mut last_position = None;
        for (i, d) in slice.events.iter().enumerate() {
            assert_eq!(d.revision, i as u64, "round {round}: {name} has a gap");
            assert!(
                last_position < Some(d.event.position),
                "round {round}: {name} is out of log order at {i}"
            );
            last_position = Some(d.event.position);
            assert!(
                listed.insert(d.event.event_id),
                "round {round}: {name} lists {} twice",
                d.event.event_id
            );
            if let Some(before) = seen.insert((name, d.event.event_id), d.revision) {
                assert_eq!(
                    before, d.revision,
                    "round {round}: {name} moved {}",
                    d.event.event_id
                );
            }
        }
        let missing = ids.iter().filter(|id| !listed.contains(id)).count();
        assert_eq!(
            missing, 0,
            "round {round}: {name} lacks acknowledged events"
        );
    }
}

fn crash_rounds(rounds: usize, derived: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x5eed_cafe_u64;
    let mut acked: HashMap<String, HashMap<u64, Uuid>> = HashMap::new();
    let mut seen = HashMap::new();
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .args([dir.path().to_str().unwrap(), "6", "4", "65536"])
            .args(derived.then_some("derived"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn crash-writer");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the child to have opened the store, then let it write for a while.
        let ready = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child ready");
        assert_eq!(ready, "READY");
        // The kill timer starts at the first acknowledgement, so a slow machine still kills
        // mid-load rather than before anything was written.
        let first_ack = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a first acknowledgement");
        let deadline = Instant::now() + Duration::from_millis(kill_after(100, &mut seed));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        child.wait().unwrap();
        reader.join().unwrap();
        let mut this_round = 0;
        for line in std::iter::once(first_ack).chain(rx.try_iter()) {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts[0], "ACK", "unexpected line {line:?}");
            let rev: u64 = parts[2].parse().unwrap();
            let id: Uuid = parts[3].parse().unwrap();
            let prev = acked
                .entry(parts[1].to_owned())
                .or_default()
                .insert(rev, id);
            assert!(
                prev.is_none_or(|p| p == id),
                "revision {rev} of {} acked twice with different IDs",
                parts[1]
            );
            this_round += 1;
        }
        assert!(
            this_round > 0 || round > 0,
            "the child acknowledged nothing"
        );

        // Reopen in this process and check every acknowledged event.
        let mut config = Config::new(dir.path());
        if derived {
            config.derived = Some(strata_engine::derived::CategoryRule::default());
        }
        let engine = Engine::open(config).expect("reopen after SIGKILL");
        let report = engine.recovery_report();
        eprintln!(
            "round {round}: {this_round} acks; reopen re-indexed {} events, cut {} bytes, took {:?}",
            report.reindexed_events, report.truncated_bytes, report.duration
        );
        for (stream, revs) in &acked {
            let slice = engine
                .read_stream(stream, StreamFrom::Start, Direction::Forwards, usize::MAX)
                .unwrap_or_else(|e| panic!("round {round}: {stream}: {e}"));
            let mut ids = HashSet::new();
            for (i, e) in slice.events.iter().enumerate() {
                assert_eq!(e.revision, i as u64, "round {round}: {stream} has a gap");
                assert!(
                    ids.insert(e.event_id),
                    "round {round}: {stream} holds event {} twice",
                    e.event_id
                );
                assert_eq!(
                    &e.data[..],
                    payload_for(stream, e.event_id).as_bytes(),
                    "round {round}: damaged event"
                );
            }
            for (rev, id) in revs {
                let got = slice.events.get(*rev as usize).map(|e| e.event_id);
                assert_eq!(
                    got,
                    Some(*id),
                    "round {round}: acknowledged {stream}@{rev} is missing or different"
                );
            }
        }
        if derived {
            check_derived(&engine, &acked, &mut seen, round);
        }
        // New appends work after recovery.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(engine.append(
            "after-crash",
            ExpectedRevision::Any,
            vec![EventData::json("Ok", "{}")],
        ))
        .expect("append after recovery");
        engine.close().unwrap();
    }
    let total: usize = acked.values().map(HashMap::len).sum();
    assert!(
        total > 100,
        "only {total} events acknowledged over {rounds} rounds"
    );
}
