//! The edge of a secure server: the start-up rule beyond loopback, stalled TLS handshakes, and
//! the official Python client over TLS.

use std::path::Path;
use std::time::Duration;

use strata_client::{Error, ExpectedRevision as Exp, StreamMetadata};
use strata_tests::secure::{create_user, ev, kurrent_channel, secure, ADMIN};
use strata_tests::{dev_certs, rt, tls_flags, Server};

/// Beyond loopback: the server refuses to start without TLS unless told `--insecure` (and then
/// warns); a secure server refuses the default password until another is set.
#[test]
fn exposure_beyond_loopback_takes_tls_or_an_explicit_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let (code, log) = Server::refused(&dir.path().join("a"), &["--metrics-listen", "0.0.0.0:0"]);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("--tls-cert") && log.contains("--insecure"),
        "{log}"
    );

    let mut open = Server::start_on(&dir.path().join("b"), "0.0.0.0:0", &["--insecure"]);
    assert!(
        open.logs().contains("INSECURE MODE beyond loopback"),
        "{}",
        open.logs()
    );
    assert!(open.terminate().success());

    let certs = dev_certs(dir.path(), &[]);
    let mut args = tls_flags(&certs);
    let flags: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_on(&dir.path().join("c"), "0.0.0.0:0", &flags);
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    rt().block_on(async {
        let connect = |user: (&'static str, &'static str)| {
            let url = url.clone();
            let ca = certs.join("ca.pem");
            async move {
                strata_client::Client::builder(url)
                    .tls_ca_file(ca)
                    .unwrap()
                    .credentials(user.0, user.1)
                    .connect()
                    .await
                    .unwrap()
            }
        };
        let admin = connect(ADMIN).await;
        match admin.append("s", Exp::Any, ev()).await {
            Err(Error::Unauthenticated(m)) => assert!(m.contains("default password"), "{m}"),
            other => panic!("the default password was accepted beyond loopback: {other:?}"),
        }
    });
    drop(server);
    // Given an initial password, admin logs in with it (and never had the default).
    args.extend([
        "--initial-admin-password".to_owned(),
        "s3cret-admin".to_owned(),
    ]);
    let flags: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_on(&dir.path().join("d"), "0.0.0.0:0", &flags);
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    rt().block_on(async {
        let c = strata_client::Client::builder(url)
            .tls_ca_file(certs.join("ca.pem"))
            .unwrap()
            .credentials("admin", "s3cret-admin")
            .connect()
            .await
            .unwrap();
        c.append("s", Exp::Any, ev()).await.unwrap();
    });
}

/// The official KurrentDB Python client over TLS with credentials: everything an admin does,
/// and its AccessDeniedError / UnauthenticatedError for what others may not do.
#[test]
fn the_python_client_works_over_tls_and_maps_denials() {
    let py = strata_tests::python_venv(
        "kurrentdb-venv",
        "kurrentdbclient==1.3.5",
        "kurrentdbclient",
    );
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &[]);
    let server = secure(dir.path(), &certs, &["--durability", "no-sync"]);
    rt().block_on(async {
        let ch = kurrent_channel(&server, &certs).await;
        create_user(&ch, "alice", "alice-pw", &[]).await;
        let admin = server.client_as(&certs, Some(ADMIN)).await.unwrap();
        admin.append("private", Exp::Any, ev()).await.unwrap();
        let meta = StreamMetadata {
            custom: serde_json::json!({"$acl": {"$r": "bob", "$w": "bob"}}),
            ..Default::default()
        };
        admin
            .set_stream_metadata("private", Exp::Any, meta)
            .await
            .unwrap();
    });
    let url = |user: &str, password: &str| {
        format!(
            "kurrentdb://{user}:{password}@127.0.0.1:{}?tls=true&tlsCaFile={}",
            server.addr.port(),
            certs.join("ca.pem").display()
        )
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/kurrentdb_secure.py");
    let out = std::process::Command::new(py)
        .arg(script)
        .arg(url("admin", "changeit"))
        .arg(url("alice", "alice-pw"))
        .arg(url("alice", "wrong"))
        .arg("private")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("compat secure: 6 passed, 0 failed"),
        "stdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
}

/// A client that connects to the TLS port and never finishes its handshake (silent, or a few
/// bytes of one) is closed after the handshake timeout and holds nothing afterwards.
#[test]
fn stalled_tls_handshakes_are_closed_after_the_handshake_timeout() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &[]);
    let server = secure(dir.path(), &certs, &["--handshake-timeout", "1s"]);
    let mut silent = std::net::TcpStream::connect(server.addr).unwrap();
    let mut partial = std::net::TcpStream::connect(server.addr).unwrap();
    // The first bytes of a TLS ClientHello record, then nothing.
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    for s in [&mut silent, &mut partial] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the server answered a stalled handshake");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "a stalled handshake was kept {:?}",
            started.elapsed()
        );
    }
    // The server still serves.
    rt().block_on(async {
        let c = server.client_as(&certs, Some(ADMIN)).await.unwrap();
        c.append("after", Exp::Any, ev()).await.unwrap();
    });
}
