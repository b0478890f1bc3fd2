//! Reading a server's Prometheus endpoint in tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::Server;

/// The address `server` serves `/metrics` on, from its log.
pub fn metrics_addr(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = server.logs();
        if let Some(at) = logs.find("metrics on http://") {
            return logs[at + 18..].chars().take_while(|c| *c != '/').collect();
        }
        assert!(
            Instant::now() < deadline,
            "no metrics address in the log:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GETs `path` over plain HTTP: (head, body).
pub fn scrape(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// The value of the first sample whose line starts with `prefix`.
pub fn value(body: &str, prefix: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{body}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
