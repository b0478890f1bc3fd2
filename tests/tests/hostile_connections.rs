//! Regression tests for the hardening issue, on connections and the process: peers that never
//! speak, running out of file descriptors, and a shutdown that must end whatever runs.

use std::time::{Duration, Instant};

use strata_client::{Client, EventData, ExpectedRevision as Exp};
use strata_tests::{rt, Server};

#[test]
fn sigterm_exits_within_the_grace_period_whatever_is_running() {
    use strata_proto::v1::{server_client::ServerClient, FloodRequest};
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--durability", "no-sync"]);
    let runtime = rt();
    // A stream whose client stopped reading: its response can never finish.
    let _stalled = runtime.block_on(async {
        let mut client = ServerClient::connect(server.url()).await.unwrap();
        let mut flood = client
            .flood(FloodRequest {
                count: u32::MAX,
                size: 64 * 1024,
            })
            .await
            .unwrap()
            .into_inner();
        flood.message().await.unwrap().unwrap();
        (client, flood)
    });
    let started = Instant::now();
    let status = server.terminate();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(25), "took {took:?}");
    assert!(
        server.logs().contains("closing their connections"),
        "{}",
        server.logs()
    );
    assert!(status.code().is_some(), "{status:?}");
    // The lock went with the process: a replacement starts at once.
    server.restart();
}

#[test]
fn silent_connections_are_closed_and_the_connection_cap_holds() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--handshake-timeout", "1s", "--max-connections", "20"],
    );
    // 30 peers that connect and say nothing: 20 are held until the handshake deadline, the
    // rest are closed at once.
    let mut silent: Vec<std::net::TcpStream> = (0..30)
        .map(|_| std::net::TcpStream::connect(server.addr).unwrap())
        .collect();
    let started = Instant::now();
    let mut closed_at = Vec::new();
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 64];
        // EOF or a reset: the server closed it.
        let _ = s.read(&mut b);
        closed_at.push(started.elapsed());
    }
    assert!(
        closed_at.iter().all(|t| *t < Duration::from_secs(8)),
        "{closed_at:?}"
    );
    assert!(
        server.logs().contains("connection limit"),
        "{}",
        server.logs()
    );
    // Real clients are served again.
    rt().block_on(async {
        let c = server.client().await;
        c.append("after", Exp::Any, vec![EventData::json("E", &1).unwrap()])
            .await
            .unwrap();
    });
}

#[test]
fn running_out_of_file_descriptors_is_logged_not_spun_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_fd_limit(dir.path(), &["--handshake-timeout", "2s"], 64);
    let silent: Vec<std::net::TcpStream> = (0..100)
        .filter_map(|_| std::net::TcpStream::connect(server.addr).ok())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.logs().contains("out of file descriptors") {
        assert!(Instant::now() < deadline, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    // While the limit is hit, the accept loop backs off instead of spinning a core.
    let before = server.cpu_ticks();
    std::thread::sleep(Duration::from_millis(1000));
    let used = server.cpu_ticks() - before;
    assert!(used < 50, "{used} ticks of CPU in 1 s");
    drop(silent);
    // Once the silent peers are gone the server serves again.
    rt().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = async {
                let c = Client::connect(server.url()).await.ok()?;
                c.append("after", Exp::Any, vec![EventData::json("E", &1).unwrap()])
                    .await
                    .ok()
            }
            .await;
            if ok.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "{}", server.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
