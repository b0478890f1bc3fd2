//! The `strata` CLI against the real server: output, --json, exit codes.

use std::process::Output;

use strata_tests::{strata_bin, Server};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

#[test]
fn walk_through_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let out = ok(server.cli(&[
        "append",
        "orders-1",
        "--type",
        "OrderPlaced",
        "--data",
        r#"{"total":42}"#,
    ]));
    assert!(out.contains("appended to orders-1@0"), "{out}");
    let out = ok(server.cli(&[
        "append",
        "orders-1",
        "--type",
        "OrderPaid",
        "--expected",
        "0",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["revision"], 1);

    let out = ok(server.cli(&["read", "orders-1", "--json"]));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["data"]["total"], 42);
    assert_eq!(lines[1]["event_type"], "OrderPaid");
    let out = ok(server.cli(&["read", "orders-1", "--backwards", "--count", "1"]));
    assert!(out.starts_with("orders-1@1 "), "{out}");
    let out = ok(server.cli(&["read", "$all", "--stream-prefix", "orders-", "--json"]));
    assert_eq!(out.lines().count(), 2);

    let out = ok(server.cli(&["subscribe", "orders-1", "--count", "2", "--json"]));
    assert_eq!(
        out.lines().filter(|l| l.contains("\"event_type\"")).count(),
        2
    );

    // Exit codes scripts can test.
    let o = server.cli(&["append", "orders-1", "--type", "X", "--expected", "0"]);
    assert_eq!(o.status.code(), Some(3), "wrong expected revision");
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected 0, actual 1"));
    assert_eq!(
        server.cli(&["read", "nope"]).status.code(),
        Some(4),
        "not found"
    );
    assert_eq!(
        server.cli(&["append", "$sys", "--type", "X"]).status.code(),
        Some(7),
        "invalid"
    );
    assert_eq!(
        server
            .cli(&["append", "s", "--type", "X", "--data", "not json"])
            .status
            .code(),
        Some(2),
        "usage"
    );
    assert_eq!(
        server
            .cli(&["append", "s", "--type", "X", "--expected", "soon"])
            .status
            .code(),
        Some(2),
        "usage"
    );

    let out = ok(server.cli(&[
        "metadata",
        "set",
        "orders-1",
        "--max-count",
        "1",
        "--custom",
        r#"{"team":"a"}"#,
    ]));
    assert!(out.contains("metadata revision 0"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(ok(server.cli(&["metadata", "get", "orders-1", "--json"])).trim())
            .unwrap();
    assert_eq!(
        (v["max_count"].as_u64(), v["custom"]["team"].as_str()),
        (Some(1), Some("a"))
    );
    assert_eq!(ok(server.cli(&["read", "orders-1"])).lines().count(), 1);

    ok(server.cli(&["append", "cart-9", "--type", "Added"]));
    ok(server.cli(&["delete", "cart-9"]));
    assert_eq!(server.cli(&["read", "cart-9"]).status.code(), Some(4));
    ok(server.cli(&["tombstone", "orders-1"]));
    assert_eq!(
        server.cli(&["read", "orders-1"]).status.code(),
        Some(5),
        "deleted"
    );
    assert_eq!(
        server
            .cli(&["append", "orders-1", "--type", "X"])
            .status
            .code(),
        Some(5)
    );

    let out = ok(server.cli(&["streams"]));
    assert!(
        out.contains("orders-1\tlast revision 1 (tombstoned)")
            && out.contains("cart-9\tlast revision 0 (deleted)"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(ok(server.cli(&["info", "--json"])).trim()).unwrap();
    assert_eq!(v["durability"], "fsync");
    assert_eq!(ok(server.cli(&["health"])).trim(), "SERVING");
}

#[test]
fn unreachable_server_is_exit_code_6() {
    let o = std::process::Command::new(strata_bin())
        .args(["info", "--server", "http://127.0.0.1:1", "--timeout", "2"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect"));
}

#[test]
fn serve_help_documents_every_flag_and_its_environment_variable() {
    let o = std::process::Command::new(strata_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = stdout(&o);
    for flag in [
        "--data-dir",
        "--listen",
        "--durability",
        "--segment-size",
        "--max-append-size",
        "--log-level",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing from serve --help");
    }
    for env in [
        "STRATA_DATA_DIR",
        "STRATA_LISTEN",
        "STRATA_DURABILITY",
        "STRATA_SEGMENT_SIZE",
        "STRATA_MAX_APPEND_SIZE",
    ] {
        assert!(help.contains(env), "{env} missing from serve --help");
    }
}

#[test]
fn bad_configuration_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(strata_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--segment-size",
            "12XB",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown size unit"));
}

#[test]
fn client_examples_run_against_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let o = std::process::Command::new(strata_tests::client_example("bank_account"))
        .arg(server.url())
        .output()
        .unwrap();
    let out = ok(o);
    assert!(
        out.contains("final balance 30"),
        "one withdrawal of 70 from 100 succeeds, the other is refused: {out}"
    );

    for i in 0..5 {
        ok(server.cli(&["append", &format!("order-{i}"), "--type", "OrderPlaced"]));
        ok(server.cli(&["append", "noise", "--type", "Noise"]));
    }
    let checkpoint = dir.path().join("projection.checkpoint");
    let run = || {
        let o = std::process::Command::new(strata_tests::client_example("projection"))
            .arg(server.url())
            .arg(&checkpoint)
            .env("PROJECTION_UNTIL_CAUGHT_UP", "1")
            .output()
            .unwrap();
        ok(o)
    };
    let first = run();
    assert!(
        first.contains("final counts: {\"OrderPlaced\": 5}"),
        "{first}"
    );
    ok(server.cli(&["append", "order-9", "--type", "OrderShipped"]));
    let second = run();
    assert!(
        second.contains("final counts: {\"OrderShipped\": 1}"),
        "resumed from its checkpoint: {second}"
    );
}

/// The CLI walk-through in README.md, run line by line against a real server.
#[test]
fn readme_walk_through_works() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let lines: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("target/release/strata "))
        .collect();
    assert!(lines.len() >= 5, "README lost its walk-through");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    for line in lines {
        let script = format!(
            "{} --server {}",
            line.replacen(
                "target/release/strata",
                &strata_bin().display().to_string(),
                1
            ),
            server.url()
        );
        let o = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "README line failed: {line}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn verify_reports_an_intact_log_and_names_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    for i in 0..20 {
        ok(server.cli(&[
            "append",
            &format!("v-{}", i % 3),
            "--type",
            "E",
            "--data",
            r#"{"padding":"xxxxxxxxxxxxxxxxxxxx"}"#,
        ]));
    }
    let verify = || {
        std::process::Command::new(strata_bin())
            .args(["verify", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    // A running server holds the directory.
    let o = verify();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("locked"));
    assert_eq!(server.terminate().code(), Some(0));
    let o = verify();
    assert!(stdout(&o).contains("verified 20 records"), "{}", stdout(&o));
    // Flip a byte inside the first segment's records.
    let seg = dir.path().join("log").join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[200] ^= 0x5a;
    std::fs::write(&seg, bytes).unwrap();
    let o = verify();
    assert_eq!(
        o.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("00000000000000000000.seg") && err.contains("byte offset"),
        "{err}"
    );
}
