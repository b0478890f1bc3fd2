//! Load generator: drives a Strata server over gRPC and prints append throughput and latency,
//! read throughput, subscription end-to-end latency, and, measured in the same run, the
//! ceiling of the transport itself (a do-nothing unary call, a refused append over an append
//! session, and a plain server stream).
//!
//! `cargo build --release -p strata-server -p strata-benches && target/release/load --help`
//!
//! Without `--server` it starts `strata serve` (the binary next to this one) on a free port
//! with a temporary data directory, in durable mode.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use strata_benches::spawn_server;
use strata_client::{
    Client, EventData, ExpectedRevision, Filter, GroupMessage, GroupSettings, ReadOptions,
    SubscribeFrom, SubscriptionMessage,
};
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(about = "Strata gRPC load generator")]
struct Args {
    /// Server URL; without it a server is started from the strata binary next to this one.
    #[arg(long)]
    server: Option<String>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Concurrent clients for the append runs (comma-separated list).
    #[arg(long, default_value = "1,16,64")]
    clients: String,
    /// Events per append for the batch run, with --batch-clients clients.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, default_value_t = 16)]
    batch_clients: usize,
    /// Bytes of event data (plus ~70 bytes of metadata).
    #[arg(long, default_value_t = 200)]
    event_size: usize,
    /// Total append rate (events/s) while measuring subscription latency.
    #[arg(long, default_value_t = 5000)]
    sub_rate: u64,
    /// Concurrent `$all` subscriptions for the latency run (one connection each).
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Connections shared by the appenders (0: one per appender).
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Append with one unary call each instead of over append sessions.
    #[arg(long)]
    unary: bool,
    /// Only these parts (comma-separated): transport,append,batch,read,subscribe,persistent,
    /// and the same measured through the official KurrentDB Rust client: kdb-append,
    /// kdb-batch, kdb-read.
    #[arg(
        long,
        default_value = "transport,append,batch,read,subscribe,persistent,kdb-append,kdb-batch,kdb-read"
    )]
    only: String,
    /// Consumer counts for the persistent-subscription runs (comma-separated list).
    #[arg(long, default_value = "1,4")]
    group_consumers: String,
    /// Start the server secure (TLS with development certificates) and log in as admin; with
    /// --server, the CA file to trust (and admin / changeit as credentials).
    #[arg(long)]
    secure: bool,
    /// With --server and --secure: the CA file the server's certificate chains to.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// Create the benchmark group with the server's default settings (in-flight 500, buffer
    /// 500, read batch 20) instead of the tuned ones (1000, 2000, 500).
    #[arg(long)]
    group_defaults: bool,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

fn event(size: usize) -> EventData {
    events(size, 1).pop().expect("one event")
}

/// `n` events for one append: each has its own random ID; they share the append's correlation
/// ID (metadata) and the data payload, which is built once per run and shared, as
/// redis-benchmark and pgbench reuse theirs, so that the generator spends its CPU on the
/// protocol rather than on formatting padding.
fn events(size: usize, n: usize) -> Vec<EventData> {
    static PAD: std::sync::OnceLock<(usize, bytes::Bytes)> = std::sync::OnceLock::new();
    let make = || format!("{{\"pad\":\"{}\"}}", "x".repeat(size.saturating_sub(10))).into();
    let data = match PAD.get_or_init(|| (size, make())) {
        (s, d) if *s == size => d.clone(),
        _ => make(),
    };
    let metadata = bytes::Bytes::from(format!("{{\"correlation\":\"{}\"}}", Uuid::new_v4()));
    (0..n)
        .map(|_| EventData::json_bytes("LoadEvent", data.clone()).metadata(metadata.clone()))
        .collect()
}

/// The CA to trust when the server is secure (clients then log in as admin).
static SECURE_CA: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();

fn builder(url: &str) -> strata_client::ClientBuilder {
    strata_benches::client_builder(url, SECURE_CA.get().and_then(Option::as_deref))
}

/// `n` client handles over `connections` connections (0: one each).
async fn clients_over(url: &str, n: usize, connections: usize, sessions: bool) -> Vec<Client> {
    let connections = if connections == 0 {
        n
    } else {
        connections.min(n)
    };
    let mut conns = Vec::new();
    for _ in 0..connections {
        conns.push(
            builder(url)
                .append_sessions(sessions)
                .connect()
                .await
                .expect("connect"),
        );
    }
    (0..n).map(|i| conns[i % connections].clone()).collect()
}

async fn clients(url: &str, n: usize) -> Vec<Client> {
    clients_over(url, n, 0, true).await
}

/// Runs `op` in `n` concurrent loops for `secs`; returns (operations, sorted latencies, seconds).
async fn run_loops<F, Fut>(cs: &[Client], secs: f64, op: F) -> (usize, Vec<Duration>, f64)
where
    F: Fn(Client, usize, u64) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = ()> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in cs.iter().enumerate() {
        let c = c.clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lats = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(c.clone(), i, n).await;
                lats.push(t.elapsed());
                n += 1;
            }
            lats
        }));
    }
    let mut lats = Vec::new();
    for t in tasks {
        lats.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    lats.sort();
    (lats.len(), lats, elapsed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let (url, _spawned) = match (&args.server, args.secure) {
        (Some(u), _) => {
            let _ = SECURE_CA.set(args.secure.then(|| {
                args.tls_ca
                    .clone()
                    .expect("--secure with --server needs --tls-ca")
            }));
            (u.clone(), None)
        }
        (None, false) => {
            let (u, s) = spawn_server();
            (u, Some(s))
        }
        (None, true) => {
            let (u, s, ca) = strata_benches::spawn_secure_server(&[]);
            let _ = SECURE_CA.set(Some(ca));
            (u, Some(s))
        }
    };
    let only: Vec<&str> = args.only.split(',').collect();
    let counts: Vec<usize> = args
        .clients
        .split(',')
        .map(|c| c.trim().parse().expect("--clients"))
        .collect();
    println!(
        "# load: server {url}, {} B data + ~70 B metadata per event, {} s per run",
        args.event_size, args.duration
    );
    let mut unary_ceiling = std::collections::HashMap::new();

    if only.contains(&"transport") {
        for &n in &counts {
            let cs = clients(&url, n).await;
            let (ops, lats, secs) = run_loops(&cs, args.duration, |c, _, _| async move {
                c.ping().await.unwrap()
            })
            .await;
            let rate = ops as f64 / secs;
            unary_ceiling.insert(n, rate);
            println!(
                "transport_unary_{n}c: {rate:.0} calls/s, p50 {:.2} ms p99 {:.2} ms",
                pct(&lats, 0.5),
                pct(&lats, 0.99)
            );
        }
        // The append-session path without the disk: an append to an invalid (empty) stream
        // name is refused by the server's validation and answered in-band.
        for &n in &counts {
            let cs = clients_over(&url, n, args.connections, true).await;
            let size = args.event_size;
            let (ops, lats, secs) = run_loops(&cs, args.duration, move |c, _, _| async move {
                let err = c
                    .append("", ExpectedRevision::Any, vec![event(size)])
                    .await
                    .expect_err("an empty stream name is refused");
                assert!(
                    matches!(err, strata_client::Error::InvalidArgument { .. }),
                    "{err}"
                );
            })
            .await;
            println!(
                "transport_session_{n}c: {:.0} round trips/s, p50 {:.2} ms p99 {:.2} ms (refused appends, no disk)",
                ops as f64 / secs,
                pct(&lats, 0.5),
                pct(&lats, 0.99)
            );
        }
        let c = builder(&url).connect().await.unwrap();
        let t = Instant::now();
        let got = c.flood(1_000_000, 16).await.unwrap();
        println!(
            "transport_server_stream: {:.0} messages/s (16-byte messages)",
            got as f64 / t.elapsed().as_secs_f64()
        );
    }

    let mode = format!(
        "{} over {}",
        if args.unary {
            "unary calls"
        } else {
            "append sessions"
        },
        if args.connections == 0 {
            "one connection per appender".to_owned()
        } else {
            format!("{} shared connection(s)", args.connections)
        }
    );
    if only.contains(&"append") {
        for &n in &counts {
            let cs = clients_over(&url, n, args.connections, !args.unary).await;
            let size = args.event_size;
            let revs: Arc<Vec<std::sync::Mutex<ExpectedRevision>>> = Arc::new(
                (0..n)
                    .map(|_| std::sync::Mutex::new(ExpectedRevision::NoStream))
                    .collect(),
            );
            let run = Uuid::new_v4().simple().to_string();
            let (ops, lats, secs) = run_loops(&cs, args.duration, move |c, i, _| {
                let revs = revs.clone();
                let stream = format!("load-{run}-{i}");
                async move {
                    let expected = *revs[i].lock().unwrap();
                    let r = c
                        .append(&stream, expected, vec![event(size)])
                        .await
                        .expect("append");
                    *revs[i].lock().unwrap() = ExpectedRevision::Exact(r.revision);
                }
            })
            .await;
            let rate = ops as f64 / secs;
            let ceiling = unary_ceiling.get(&n).map_or(String::new(), |u| {
                format!(", {:.0}% of the unary ceiling", 100.0 * rate / u)
            });
            println!(
                "append_{n}c_x1: {rate:.0} events/s, p50 {:.2} ms p99 {:.2} ms p999 {:.2} ms{ceiling} ({mode})",
                pct(&lats, 0.5),
                pct(&lats, 0.99),
                pct(&lats, 0.999)
            );
        }
    }

    if only.contains(&"batch") {
        let n = args.batch_clients;
        let cs = clients_over(&url, n, args.connections, !args.unary).await;
        let (size, batch) = (args.event_size, args.batch);
        let (ops, lats, secs) = run_loops(&cs, args.duration, move |c, i, _| async move {
            let events = events(size, batch);
            c.append(&format!("batch-{i}"), ExpectedRevision::Any, events)
                .await
                .expect("append");
        })
        .await;
        println!(
            "append_{n}c_x{batch}: {:.0} events/s, p50 {:.2} ms p99 {:.2} ms p999 {:.2} ms ({mode})",
            (ops * batch) as f64 / secs,
            pct(&lats, 0.5),
            pct(&lats, 0.99),
            pct(&lats, 0.999)
        );
    }

    if only.contains(&"read") {
        let c = builder(&url).connect().await.unwrap();
        let t = Instant::now();
        let n = c
            .read_all(ReadOptions::default())
            .await
            .unwrap()
            .try_fold(0u64, |n, _| async move { Ok(n + 1) })
            .await
            .unwrap();
        println!(
            "read_all: {:.0} events/s ({n} events)",
            n as f64 / t.elapsed().as_secs_f64()
        );
        if let Some(s) = c.list_streams("batch-0", false).await.unwrap().first() {
            let t = Instant::now();
            let n = c
                .read_stream(&s.name, ReadOptions::default())
                .await
                .unwrap()
                .try_fold(0u64, |n, _| async move { Ok(n + 1) })
                .await
                .unwrap();
            println!(
                "read_stream: {:.0} events/s ({n} events, one stream)",
                n as f64 / t.elapsed().as_secs_f64()
            );
        }
        // The category of the batch streams, when the server keeps the derived streams.
        let t = Instant::now();
        let category = match c.read_stream("$ce-batch", ReadOptions::default()).await {
            Ok(events) => events.try_fold(0u64, |n, _| async move { Ok(n + 1) }).await,
            Err(e) => Err(e),
        };
        match category {
            Ok(n) => println!(
                "read_category: {:.0} events/s ({n} entries of $ce-batch)",
                n as f64 / t.elapsed().as_secs_f64()
            ),
            Err(e) => println!("read_category: skipped ({e})"),
        }
    }

    strata_benches::kurrent::Runs {
        url: &url,
        ca: SECURE_CA.get().and_then(Option::as_deref),
        only: &only,
        clients: &counts,
        batch: args.batch,
        batch_clients: args.batch_clients,
        size: args.event_size,
        secs: args.duration,
    }
    .run()
    .await;

    if only.contains(&"subscribe") {
        let mut subs = Vec::new();
        for c in clients(&url, args.subscribers.max(1)).await {
            subs.push(c.subscribe("$all", SubscribeFrom::End, None).await.unwrap());
        }
        let writers = 8u64;
        let per_writer_interval = Duration::from_secs_f64(writers as f64 / args.sub_rate as f64);
        let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
        let cs = clients(&url, writers as usize).await;
        let mut tasks = Vec::new();
        for (i, c) in cs.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(per_writer_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut appended = 0usize;
                while Instant::now() < deadline {
                    tick.tick().await;
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap()
                        .as_nanos() as u64;
                    let e = EventData::json("Timed", &serde_json::json!({ "sent": now })).unwrap();
                    c.append(&format!("timed-{i}"), ExpectedRevision::Any, vec![e])
                        .await
                        .unwrap();
                    appended += 1;
                }
                appended
            }));
        }
        let listen = Duration::from_secs_f64(args.duration + 1.0);
        let receivers: Vec<_> = subs
            .into_iter()
            .map(|mut sub| {
                tokio::spawn(async move {
                    let mut lats = Vec::new();
                    let recv = async {
                        while let Some(m) = sub.next().await {
                            if let SubscriptionMessage::Event(e) = m.unwrap() {
                                let sent = e.json::<serde_json::Value>().unwrap()["sent"]
                                    .as_u64()
                                    .unwrap();
                                let now = SystemTime::now()
                                    .duration_since(UNIX_EPOCH)
                                    .unwrap()
                                    .as_nanos() as u64;
                                lats.push(Duration::from_nanos(now.saturating_sub(sent)));
                            }
                        }
                    };
                    let _ = tokio::time::timeout(listen, recv).await;
                    lats
                })
            })
            .collect();
        let mut appended = 0;
        for t in tasks {
            appended += t.await.unwrap();
        }
        let mut lats = Vec::new();
        let mut fewest = usize::MAX;
        for r in receivers {
            let got = r.await.unwrap();
            fewest = fewest.min(got.len());
            lats.extend(got);
        }
        lats.sort();
        println!(
            "subscription_latency: p50 {:.2} ms p99 {:.2} ms p999 {:.2} ms ({} deliveries to {} subscriber(s) of {appended} events appended at ~{} events/s, append to delivery; the slowest subscriber got {fewest} in the window)",
            pct(&lats, 0.5),
            pct(&lats, 0.99),
            pct(&lats, 0.999),
            lats.len(),
            args.subscribers.max(1),
            args.sub_rate
        );
    }
    if only.contains(&"persistent") {
        for n in args.group_consumers.split(',') {
            let n: usize = n.trim().parse().expect("--group-consumers");
            for rate in [Some(args.sub_rate), None] {
                let r = run_group(
                    &url,
                    n,
                    rate,
                    args.duration,
                    args.event_size,
                    args.group_defaults,
                )
                .await;
                let label = rate.map_or("full speed".to_owned(), |r| format!("~{r} events/s"));
                let settings = if args.group_defaults {
                    "default settings"
                } else {
                    "tuned settings"
                };
                println!(
                    "persistent_group: {n} consumer(s), {settings}, writers at {label}: appended {:.0} events/s, acked {:.0} events/s, delivery p50 {:.2} ms p99 {:.2} ms",
                    r.appended as f64 / args.duration,
                    r.acked as f64 / args.duration,
                    pct(&r.latencies, 0.5),
                    pct(&r.latencies, 0.99),
                );
            }
        }
    }
    if let Some(server) = &_spawned {
        println!("server_peak_rss: {} MiB", server.peak_rss_mib());
    }
}

struct GroupRun {
    appended: usize,
    acked: usize,
    latencies: Vec<Duration>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A `$all` group (filtered to this run's streams) with `consumers` consumers that ack every
/// event, while 8 writers append batches of 10 events (rate-limited to `rate` events/s, or as
/// fast as they can). Counts acks within the window; latency is append to delivery.
async fn run_group(
    url: &str,
    consumers: usize,
    rate: Option<u64>,
    secs: f64,
    size: usize,
    defaults: bool,
) -> GroupRun {
    let prefix = format!("grp-{}-", Uuid::new_v4().simple());
    let admin = builder(url).connect().await.unwrap();
    let group = format!("bench-{consumers}");
    let settings = if defaults {
        GroupSettings {
            filter: Some(Filter::stream_prefix([prefix.clone()])),
            ..Default::default()
        }
    } else {
        GroupSettings {
            filter: Some(Filter::stream_prefix([prefix.clone()])),
            max_in_flight_per_consumer: Some(1000),
            live_buffer_size: Some(2000),
            read_batch_size: Some(500),
            ..Default::default()
        }
    };
    admin.create_group("$all", &group, settings).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut readers = Vec::new();
    for _ in 0..consumers {
        let c = builder(url).connect().await.unwrap();
        let mut consumer = c.consume_group("$all", &group, 1000).await.unwrap();
        readers.push(tokio::spawn(async move {
            let mut acked = 0usize;
            let mut lats = Vec::new();
            let mut pending = Vec::with_capacity(256);
            loop {
                let wait = deadline.saturating_duration_since(Instant::now());
                let m =
                    match tokio::time::timeout(wait.min(Duration::from_millis(2)), consumer.next())
                        .await
                    {
                        Ok(Some(Ok(GroupMessage::Event(e)))) => Some(e),
                        Ok(Some(Ok(GroupMessage::Rejected { reason, .. }))) => panic!("{reason}"),
                        Ok(other) => panic!("consumer ended: {other:?}"),
                        Err(_) => None,
                    };
                if let Some(e) = &m {
                    let sent = e.event.json::<serde_json::Value>().unwrap()["sent"]
                        .as_u64()
                        .unwrap();
                    lats.push(Duration::from_nanos(now_ns().saturating_sub(sent)));
                    pending.push(e.event.id);
                }
                if pending.len() >= 200 || (m.is_none() && !pending.is_empty()) {
                    if Instant::now() < deadline {
                        acked += pending.len();
                    }
                    consumer.ack(&pending).await.unwrap();
                    pending.clear();
                }
                if Instant::now() >= deadline {
                    return (acked, lats);
                }
            }
        }));
    }
    let writers = 8usize;
    let pad = "x".repeat(size.saturating_sub(40));
    let mut tasks = Vec::new();
    for (i, c) in clients(url, writers).await.into_iter().enumerate() {
        let stream = format!("{prefix}{i}");
        let pad = pad.clone();
        tasks.push(tokio::spawn(async move {
            let mut appended = 0usize;
            let mut tick = rate.map(|r| {
                let mut t = tokio::time::interval(Duration::from_secs_f64(
                    10.0 * writers as f64 / r as f64,
                ));
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            while Instant::now() < deadline {
                if let Some(t) = &mut tick {
                    t.tick().await;
                }
                let batch: Vec<_> = (0..10)
                    .map(|_| {
                        EventData::json(
                            "Timed",
                            &serde_json::json!({ "sent": now_ns(), "pad": pad }),
                        )
                        .unwrap()
                    })
                    .collect();
                c.append(&stream, ExpectedRevision::Any, batch)
                    .await
                    .unwrap();
                appended += 10;
            }
            appended
        }));
    }
    let mut appended = 0;
    for t in tasks {
        appended += t.await.unwrap();
    }
    let mut acked = 0;
    let mut latencies = Vec::new();
    for r in readers {
        let (a, l) = r.await.unwrap();
        acked += a;
        latencies.extend(l);
    }
    latencies.sort();
    admin.delete_group("$all", &group).await.unwrap();
    GroupRun {
        appended,
        acked,
        latencies,
    }
}
