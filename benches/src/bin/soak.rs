//! Soak: the normal load and a hostile one at the same time, against a server this run starts,
//! reporting the server's memory against the bounds in docs/operations.md ("Limits").
//!
//! For `--duration` seconds, together:
//! - `--writers` appenders (append sessions over 8 connections), each appending one event at a
//!   time to its own stream;
//! - `--groups` consumer groups (one in ten on `$all`) that nobody consumes: they lag;
//! - `--subscribers` `$all` catch-up subscriptions that never read what they are sent;
//! - a hostile mix: `--silent` connections that never send a byte (re-opened as the server
//!   closes them), stalled `$all` reads, appends over the size limit, and a `$all` read with a
//!   catastrophically backtracking regex, each in a loop.
//!
//! `cargo build --release -p strata-server -p strata-benches && target/release/soak --help`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::TryStreamExt;
use strata_benches::spawn_server_with;
use strata_client::{
    Client, EventData, ExpectedRevision, Filter, GroupSettings, GroupStart, ReadOptions,
    SubscribeFrom,
};

#[derive(Parser, Debug)]
#[command(about = "Strata soak: normal and hostile load together, with the server's peak memory")]
struct Args {
    /// Seconds of load.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    #[arg(long, default_value_t = 64)]
    writers: usize,
    #[arg(long, default_value_t = 1000)]
    groups: usize,
    #[arg(long, default_value_t = 300)]
    subscribers: usize,
    /// Connections that connect and never speak.
    #[arg(long, default_value_t = 100)]
    silent: usize,
    /// `$all` reads started and never read.
    #[arg(long, default_value_t = 20)]
    stalled_reads: usize,
    /// Bytes of event data.
    #[arg(long, default_value_t = 200)]
    event_size: usize,
}

fn event(size: usize) -> EventData {
    EventData::json_bytes("SoakEvent", format!("{{\"pad\":\"{}\"}}", "x".repeat(size)))
}

/// Counts of what the hostile clients saw.
#[derive(Default)]
struct Hostile {
    refused_appends: AtomicU64,
    refused_regex_reads: AtomicU64,
    silent_reopened: AtomicU64,
    unexpected: AtomicU64,
}

/// One `GET /metrics`; the size of the answer.
fn scrape(addr: &str) -> usize {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.len()
}

async fn connect(url: &str) -> Client {
    Client::connect(url.to_owned()).await.expect("connect")
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let max_groups = args.groups.max(1).to_string();
    let (url, mut server) = spawn_server_with(&[
        "--max-groups",
        &max_groups,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let started_rss = server.rss_mib();

    // Groups first, with a little history in their streams, so they start out lagging.
    let admin = connect(&url).await;
    for w in 0..args.writers.max(1) {
        admin
            .append(
                &format!("soak-{w}"),
                ExpectedRevision::Any,
                vec![event(args.event_size)],
            )
            .await
            .expect("seed append");
    }
    for g in 0..args.groups {
        let stream = if g % 10 == 0 {
            "$all".to_owned()
        } else {
            format!("soak-{}", g % args.writers.max(1))
        };
        let settings = GroupSettings {
            start_from: Some(GroupStart::Start),
            ..Default::default()
        };
        admin
            .create_group(&stream, &format!("g{g}"), settings)
            .await
            .expect("create group");
    }

    // Subscribers that never read: their server side fills its bounded queue and waits.
    let mut lagging = Vec::new();
    let sub_clients: Vec<Client> = {
        let mut v = Vec::new();
        for _ in 0..args.subscribers.div_ceil(10).max(1) {
            v.push(connect(&url).await);
        }
        v
    };
    for i in 0..args.subscribers {
        let c = &sub_clients[i % sub_clients.len()];
        lagging.push(
            c.subscribe("$all", SubscribeFrom::Start, None)
                .await
                .expect("subscribe"),
        );
    }
    let mut stalled = Vec::new();
    for _ in 0..args.stalled_reads {
        let c = connect(&url).await;
        let read = c.read_all(ReadOptions::default()).await.expect("read");
        stalled.push((c, read));
    }

    let hostile = Arc::new(Hostile::default());
    let mut tasks = Vec::new();
    // Silent connections, re-opened when the server closes them.
    let addr = url.trim_start_matches("http://").to_owned();
    for _ in 0..args.silent {
        let (stop, hostile, addr) = (stop.clone(), hostile.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                // The server speaks first (its HTTP/2 settings); this peer never answers and
                // waits for the server to close the connection.
                let closed = async {
                    let mut b = [0u8; 256];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 {
                            break;
                        }
                    }
                };
                tokio::select! {
                    _ = closed => { hostile.silent_reopened.fetch_add(1, Ordering::Relaxed); }
                    _ = async { while !stop.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(100)).await } } => {}
                }
            }
        }));
    }
    // Oversized appends and a hostile regex, in loops.
    {
        let (stop, hostile, c) = (stop.clone(), hostile.clone(), connect(&url).await);
        let size = args.event_size;
        tasks.push(tokio::spawn(async move {
            let big = EventData::binary("Big", vec![0u8; 3 << 19]);
            while !stop.load(Ordering::Relaxed) {
                match c
                    .append("hostile", ExpectedRevision::Any, vec![big.clone()])
                    .await
                {
                    Err(strata_client::Error::AppendTooLarge { .. }) => {
                        hostile.refused_appends.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        hostile.unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let read = async {
                    let s = c
                        .read_all(ReadOptions {
                            filter: Some(Filter::stream_regex(r"(a*)*\1b")),
                            ..Default::default()
                        })
                        .await?;
                    s.try_collect::<Vec<_>>().await
                }
                .await;
                match read {
                    Err(strata_client::Error::InvalidArgument { .. }) => {
                        hostile.refused_regex_reads.fetch_add(1, Ordering::Relaxed);
                    }
                    // Nothing matched before the end of the log: fine, and not an error.
                    Ok(_) => {}
                    Err(_) => {
                        hostile.unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // A long stream name of a's makes the regex backtrack.
                let _ = c
                    .append(&"a".repeat(100), ExpectedRevision::Any, vec![event(size)])
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    // The writers.
    let written = Arc::new(AtomicU64::new(0));
    let writer_clients: Vec<Client> = {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(connect(&url).await);
        }
        v
    };
    let run_started = Instant::now();
    for w in 0..args.writers {
        let (stop, written, c) = (stop.clone(), written.clone(), writer_clients[w % 8].clone());
        let size = args.event_size;
        tasks.push(tokio::spawn(async move {
            let stream = format!("soak-{w}");
            while !stop.load(Ordering::Relaxed) {
                if c.append(&stream, ExpectedRevision::Any, vec![event(size)])
                    .await
                    .is_ok()
                {
                    written.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // Memory, sampled while it all runs.
    let mut max_rss = 0;
    let deadline = run_started + Duration::from_secs_f64(args.duration);
    while Instant::now() < deadline {
        max_rss = max_rss.max(server.rss_mib());
        if !server.is_running() {
            println!("soak_server_died");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // What an operator pays to look at it, under the full load.
    let listed = Instant::now();
    let groups_listed = admin.list_groups(None).await.map_or(0, |g| g.len());
    let list_ms = listed.elapsed().as_millis();
    let scraped = Instant::now();
    let scrape_bytes = server.metrics.as_deref().map_or(0, scrape);
    let scrape_ms = scraped.elapsed().as_millis();
    stop.store(true, Ordering::Relaxed);
    let elapsed = run_started.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let events = written.load(Ordering::Relaxed);
    // Still answering after all that.
    let alive = connect(&url).await.ping().await.is_ok();
    drop((lagging, stalled));
    println!(
        "soak: {} writers, {} groups, {} lagging $all subscribers, {} stalled reads, {} silent connections, {} s, {} B events",
        args.writers, args.groups, args.subscribers, args.stalled_reads, args.silent, args.duration, args.event_size
    );
    println!(
        "soak_writers events={events} events_per_s={:.0}",
        events as f64 / elapsed
    );
    println!(
        "soak_hostile refused_appends={} refused_regex_reads={} silent_closed_by_server={} unexpected={}",
        hostile.refused_appends.load(Ordering::Relaxed),
        hostile.refused_regex_reads.load(Ordering::Relaxed),
        hostile.silent_reopened.load(Ordering::Relaxed),
        hostile.unexpected.load(Ordering::Relaxed),
    );
    println!(
        "soak_operator list_groups={groups_listed} groups in {list_ms} ms, metrics scrape {scrape_bytes} bytes in {scrape_ms} ms"
    );
    println!(
        "soak_server_rss_mib start={started_rss} max_sampled={max_rss} peak={} answering_after={alive}",
        server.peak_rss_mib()
    );
}
