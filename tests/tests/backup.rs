//! The backup and restore procedures of docs/operations.md, run as written (the shell blocks
//! are read from the document) against a server under write load: every append acknowledged
//! before the backup began is in the restored store.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_client::{Client, EventData, ExpectedRevision as Exp, ReadOptions};
use strata_tests::{rt, strata_bin, Server};

/// The first ```sh block after `heading` in docs/operations.md.
fn shell_block(heading: &str) -> String {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .unwrap();
    let after = &doc[doc
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"))..];
    let start = after.find("```sh\n").expect("a sh block") + 6;
    let end = start + after[start..].find("```").expect("block end");
    after[start..end].to_owned()
}

fn run_shell(script: &str, envs: &[(&str, &Path)]) {
    let bin_dir = strata_bin().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", script])
        .env("PATH", path);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{script}\nfailed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_documented_backup_of_a_running_server_restores_every_acknowledged_append() {
    let data = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let backup = scratch.path().join("backup");
    let restore = scratch.path().join("restore");
    // Small segments, so the copy spans several and the writer rolls over during it.
    let server = Server::start(data.path(), &["--segment-size", "256KiB"]);
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let runtime = rt();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (url, acked, stop) = (server.url(), acked.clone(), stop.clone());
        writers.push(runtime.spawn(async move {
            let c = Client::connect(url).await.unwrap();
            let stream = format!("b-{w}");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let e = EventData::json("Written", &serde_json::json!({"pad": "x".repeat(300)}))
                    .unwrap();
                let r = c.append(&stream, Exp::Any, vec![e]).await.unwrap();
                acked.lock().unwrap().push((stream.clone(), r.revision));
            }
        }));
    }
    // Back up once the log spans a few segments, however slow the machine's fsyncs are.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(data.path().join("log")).unwrap().count() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writers did not fill three segments"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before: HashSet<(String, u64)> = acked.lock().unwrap().iter().cloned().collect();
    assert!(
        before.len() > 100,
        "the writers made progress: {}",
        before.len()
    );
    run_shell(
        &shell_block("### Backup procedure"),
        &[("DATA_DIR", data.path()), ("BACKUP_DIR", &backup)],
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        runtime.block_on(w).unwrap();
    }
    assert!(
        std::fs::read_dir(backup.join("log")).unwrap().count() > 1,
        "the backup spans several segments"
    );

    // Restore, as documented, up to starting the server (which the test does itself).
    let restore_script: String = shell_block("### Restore procedure")
        .lines()
        .filter(|l| !l.starts_with("strata serve"))
        .map(|l| format!("{l}\n"))
        .collect();
    run_shell(
        &restore_script,
        &[("BACKUP_DIR", &backup), ("RESTORE_DIR", &restore)],
    );
    let restored = Server::start(&restore, &["--durability", "no-sync"]);
    runtime.block_on(async {
        let c = restored.client().await;
        let mut found = HashSet::new();
        for w in 0..4 {
            let stream = format!("b-{w}");
            let events: Vec<_> = futures::TryStreamExt::try_collect(
                c.read_stream(&stream, ReadOptions::default())
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
            for (i, e) in events.iter().enumerate() {
                assert_eq!(e.revision, i as u64, "revisions stay dense in {stream}");
                found.insert((stream.clone(), e.revision));
            }
        }
        let missing: Vec<_> = before.difference(&found).take(5).collect();
        assert!(
            missing.is_empty(),
            "acknowledged before the backup but missing: {missing:?}"
        );
    });
}
