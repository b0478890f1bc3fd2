//! The `load` tool's second driver: the official KurrentDB Rust client (`kurrentdb` on
//! crates.io), used as its users use it (its own connection settings, Nagle's algorithm left
//! as the client sets it), so that the KurrentDB protocol path is measured beside Strata's own
//! in the same run.

use std::time::{Duration, Instant};

use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, EventData, ReadAllOptions, StreamState,
};
use uuid::Uuid;

/// A KurrentDB client for the server at `url` (`http://` or `https://`); over TLS it trusts
/// `ca` and logs in as `admin`.
pub fn connect(url: &str, ca: Option<&std::path::Path>) -> Client {
    let host = url.split("://").nth(1).unwrap_or(url);
    let conn = match ca {
        None => format!("kurrentdb://{host}?tls=false"),
        Some(ca) => format!(
            "kurrentdb://admin:changeit@{host}?tls=true&tlsCaFile={}",
            ca.display()
        ),
    };
    let settings: ClientSettings = conn.parse().expect("connection string");
    Client::new(settings).expect("KurrentDB client")
}

/// One result line's figures.
pub struct Measured {
    pub ops: usize,
    /// Sorted.
    pub latencies: Vec<Duration>,
    pub seconds: f64,
}

/// `n` appenders, one client (connection) each, appending `batch` events of `size` bytes per
/// call for `secs` seconds: single-event appenders to their own stream with an exact expected
/// revision (as an aggregate does), batches with `Any`.
pub async fn append(
    url: &str,
    ca: Option<&std::path::Path>,
    n: usize,
    batch: usize,
    size: usize,
    secs: f64,
) -> Measured {
    let payload = bytes::Bytes::from(format!(
        "{{\"pad\":\"{}\"}}",
        "x".repeat(size.saturating_sub(10))
    ));
    let run = Uuid::new_v4().simple().to_string();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = connect(url, ca);
        let payload = payload.clone();
        let stream = format!("kdb-{run}-{i}");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut state = StreamState::NoStream;
            while Instant::now() < deadline {
                let metadata =
                    bytes::Bytes::from(format!("{{\"correlation\":\"{}\"}}", Uuid::new_v4()));
                let events: Vec<EventData> = (0..batch)
                    .map(|_| {
                        EventData::binary("LoadEvent", payload.clone())
                            .metadata(metadata.clone())
                            .id(Uuid::new_v4())
                    })
                    .collect();
                let options = AppendToStreamOptions::default().stream_state(if batch == 1 {
                    state
                } else {
                    StreamState::Any
                });
                let t = Instant::now();
                let written = client
                    .append_to_stream(stream.as_str(), &options, events)
                    .await
                    .expect("append through the KurrentDB client");
                latencies.push(t.elapsed());
                state = StreamState::StreamRevision(written.next_expected_version);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("appender"));
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort();
    Measured {
        ops: latencies.len(),
        latencies,
        seconds,
    }
}

/// Reads `$all` from the start to the end through the KurrentDB client; (events, seconds).
pub async fn read_all(url: &str, ca: Option<&std::path::Path>) -> (u64, f64) {
    let client = connect(url, ca);
    let t = Instant::now();
    let mut read = client
        .read_all(&ReadAllOptions::default().max_count(usize::MAX))
        .await
        .expect("read $all through the KurrentDB client");
    let mut n = 0u64;
    while read.next().await.expect("read $all").is_some() {
        n += 1;
    }
    (n, t.elapsed().as_secs_f64())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

/// What `load --only kdb-append,kdb-batch,kdb-read` measures, printed in the same form as
/// the Strata client's lines with a `kdb_` prefix.
pub struct Runs<'a> {
    pub url: &'a str,
    pub ca: Option<&'a std::path::Path>,
    pub only: &'a [&'a str],
    pub clients: &'a [usize],
    pub batch: usize,
    pub batch_clients: usize,
    pub size: usize,
    pub secs: f64,
}

impl Runs<'_> {
    pub async fn run(&self) {
        let line = |name: String, m: &Measured, per_op: usize| {
            println!(
                "{name}: {:.0} events/s, p50 {:.2} ms p99 {:.2} ms p999 {:.2} ms (official KurrentDB Rust client, v1 Append, one connection per appender)",
                (m.ops * per_op) as f64 / m.seconds,
                pct(&m.latencies, 0.5),
                pct(&m.latencies, 0.99),
                pct(&m.latencies, 0.999)
            )
        };
        if self.only.contains(&"kdb-append") {
            for &n in self.clients {
                let m = append(self.url, self.ca, n, 1, self.size, self.secs).await;
                line(format!("kdb_append_{n}c_x1"), &m, 1);
            }
        }
        if self.only.contains(&"kdb-batch") {
            let (n, b) = (self.batch_clients, self.batch);
            let m = append(self.url, self.ca, n, b, self.size, self.secs).await;
            line(format!("kdb_append_{n}c_x{b}"), &m, b);
        }
        if self.only.contains(&"kdb-read") {
            let (n, secs) = read_all(self.url, self.ca).await;
            println!(
                "kdb_read_all: {:.0} events/s ({n} events, official KurrentDB Rust client)",
                n as f64 / secs
            );
        }
    }
}
