//! Engine-level benchmarks: durable appends at several concurrencies, stream and `$all` reads,
//! reopen after a clean shutdown and after SIGKILL, and a full index rebuild; beside them the
//! disk's own 4 KiB write+fdatasync rate measured in the same run.
//!
//! `cargo run --release -p strata-benches --bin engine-bench -- --help`

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use strata_engine::{AllFrom, Config, Direction, Engine, EventData, ExpectedRevision, StreamFrom};
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(about = "Strata engine benchmarks (durable mode)")]
struct Args {
    /// Directory for the stores (a temporary directory under it is used and removed).
    #[arg(long, default_value = "target/bench-data")]
    dir: PathBuf,
    /// Seconds per append scenario.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Bytes of event data (plus 70 bytes of metadata, as in ../shared/peers).
    #[arg(long, default_value_t = 200)]
    event_size: usize,
    /// Events in the store used for the read, reopen and rebuild measurements.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Only these scenarios (comma-separated): fsync,append,batch,read,reopen,indexes.
    #[arg(long, default_value = "fsync,append,batch,read,reopen")]
    only: String,
    /// Keep the derived streams (`$ce-…`, `$et-…`), to measure what they cost.
    #[arg(long)]
    derived: bool,
    /// Internal: populate a store then wait to be killed.
    #[arg(long, hide = true)]
    write_until_killed: Option<PathBuf>,
}

fn event(size: usize) -> EventData {
    let data = format!("{{\"pad\":\"{}\"}}", "x".repeat(size.saturating_sub(10)));
    EventData::json("BenchEvent", data)
        .with_metadata(format!("{{\"correlation\":\"{}\"}}", Uuid::new_v4()))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn fsync_baseline(dir: &Path, secs: f64) {
    let path = dir.join("fsync-probe");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let buf = vec![7u8; 4096];
    let mut lats = Vec::new();
    let start = Instant::now();
    let mut off = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        f.write_all_at(&buf, off).unwrap();
        f.sync_data().unwrap();
        lats.push(t.elapsed());
        off += 4096;
    }
    let rate = lats.len() as f64 / start.elapsed().as_secs_f64();
    lats.sort();
    println!(
        "disk_4k_fdatasync_per_s: {rate:.0}  (p50 {:.3} ms, p99 {:.3} ms)",
        pct(&lats, 0.5),
        pct(&lats, 0.99)
    );
    std::fs::remove_file(path).ok();
}

/// Set from `--derived`.
static DERIVED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn open(dir: &Path) -> Engine {
    open_with(dir, DERIVED.load(std::sync::atomic::Ordering::Relaxed))
}

fn open_with(dir: &Path, derived: bool) -> Engine {
    let mut c = Config::new(dir);
    c.index_cache_bytes = 128 * 1024 * 1024;
    if derived {
        c.derived = Some(strata_engine::derived::CategoryRule::default());
    }
    Engine::open(c).expect("open")
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The derived streams (issue targets): `n` events over 1000 streams in 100 categories (1%
/// each) and 10 event types (10% each). Reads `$ce-`/`$et-` in-process, times an `$all` read
/// filtered to one category from the index against the same read scanning the log, the
/// index's size per event with and without them, and rebuilds with and without them.
fn indexes(rt: &tokio::runtime::Runtime, dir: &Path, n: u64, size: usize) {
    let store = dir.join("categories");
    let engine = Arc::new(open_with(&store, true));
    let pad = format!("{{\"pad\":\"{}\"}}", "x".repeat(size.saturating_sub(10)));
    let t = Instant::now();
    fill(rt, &engine, n, move |s, written, k| {
        let stream = format!("cat{}-{}", s % 100, (s / 100) % 10);
        let events = (0..k)
            .map(|i| EventData::json(format!("Type{}", (written + i) % 10), pad.clone()))
            .collect();
        (stream, events)
    });
    eprintln!("populated {n} events in {:.1}s", t.elapsed().as_secs_f64());
    // Reads measured with the index in sled, not racing its background flush.
    engine.flush_index().unwrap();

    let read_derived = |name: &str| {
        let t = Instant::now();
        let (mut from, mut count) = (StreamFrom::Start, 0usize);
        loop {
            let page = engine
                .read_derived(name, from, Direction::Forwards, 1000, usize::MAX)
                .unwrap();
            count += page.events.len();
            match page.next_revision {
                Some(r) => from = StreamFrom::Revision(r),
                None => break,
            }
        }
        (count, t.elapsed().as_secs_f64())
    };
    for name in ["$ce-cat7", "$et-Type3"] {
        let (count, s) = read_derived(name);
        println!(
            "read_derived {name}: {:.0} events/s ({count} events, pages of 1000)",
            count as f64 / s
        );
    }
    let filtered = |filter: &strata_engine::EventFilter| {
        let t = Instant::now();
        let (mut from, mut count) = (AllFrom::Start, 0usize);
        loop {
            let page = engine
                .read_all_budget(
                    from,
                    Direction::Forwards,
                    1000,
                    Some(filter),
                    32_000,
                    1 << 22,
                )
                .unwrap();
            count += page.events.len();
            if page.is_end {
                break;
            }
            from = AllFrom::Position(page.next_position);
        }
        (count, t.elapsed().as_secs_f64())
    };
    use strata_engine::{EventFilter, FilterOn};
    let by_index = EventFilter::prefixes(FilterOn::StreamName, ["$idx-ce-cat7"]).unwrap();
    let by_prefix = EventFilter::prefixes(FilterOn::StreamName, ["cat7-"]).unwrap();
    let by_scan = EventFilter::regex(FilterOn::StreamName, "^cat7-").unwrap();
    let (ci, si) = filtered(&by_index);
    let (cp, sp) = filtered(&by_prefix);
    let (cs, ss) = filtered(&by_scan);
    assert_eq!((ci, cp), (cs, cs), "the index and the scan disagree");
    println!(
        "all_filtered_1pct_category: index {:.3} s, prefix (index) {:.3} s, regex scan {:.3} s: {:.1}% of the scan's time ({cs} of {n} events)",
        si,
        sp,
        ss,
        100.0 * si / ss
    );
    let by_type = EventFilter::prefixes(FilterOn::EventType, ["Type3"]).unwrap();
    let (ct, st) = filtered(&by_type);
    println!(
        "all_filtered_10pct_type: {:.0} events/s from the index ({ct} events in {st:.3} s)",
        ct as f64 / st
    );
    Arc::try_unwrap(engine)
        .ok()
        .expect("sole owner")
        .close()
        .unwrap();

    // Rebuilds (the index directory deleted) with and without the derived streams, and the
    // index's size after each.
    let mut sizes = [0u64; 2];
    for (i, derived) in [false, true].into_iter().enumerate() {
        std::fs::remove_dir_all(store.join("index")).unwrap();
        let t = Instant::now();
        let engine = open_with(&store, derived);
        let rebuild = t.elapsed().as_secs_f64();
        let k = engine.recovery_report().reindexed_events;
        engine.flush_index().unwrap();
        engine.close().unwrap();
        sizes[i] = dir_size(&store.join("index"));
        println!(
            "index_rebuild (derived {}): {:.0} events/s ({k} events in {rebuild:.3} s), index {:.1} MB",
            if derived { "on" } else { "off" },
            k as f64 / rebuild,
            sizes[i] as f64 / 1e6
        );
    }
    println!(
        "derived_index_size: {:.1} bytes per event per derived index ({:.1} MB more for 2 entries per event)",
        sizes[1].saturating_sub(sizes[0]) as f64 / (2 * n) as f64,
        sizes[1].saturating_sub(sizes[0]) as f64 / 1e6
    );
}

/// `writers` tasks each append `batch`-event appends with exact expected revisions to their
/// own stream for `secs`.
fn appends(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    writers: usize,
    batch: usize,
    secs: f64,
    size: usize,
) {
    let store = dir.join(format!("append-{writers}x{batch}"));
    let engine = Arc::new(open(&store));
    let template = event(size);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let results = rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let engine = engine.clone();
            let template = template.clone();
            tasks.push(tokio::spawn(async move {
                let stream = format!("bench-{w}");
                let mut expected = ExpectedRevision::NoStream;
                let mut lats = Vec::new();
                while Instant::now() < deadline {
                    let events = (0..batch)
                        .map(|_| template.clone().with_id(Uuid::new_v4()))
                        .collect();
                    let t = Instant::now();
                    let r = engine
                        .append(&stream, expected, events)
                        .await
                        .expect("append");
                    lats.push(t.elapsed());
                    expected = ExpectedRevision::Exact(r.revision);
                }
                lats
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut lats = results;
    lats.sort();
    let events = lats.len() * batch;
    let stats = engine.stats();
    let bytes = stats.log_bytes as f64;
    println!(
        "append_{writers}w_x{batch}: {:.0} events/s, {:.1} MB/s, {:.0} appends/s, latency p50 {:.2} ms p99 {:.2} ms, {:.1} appends per fsync",
        events as f64 / elapsed,
        bytes / elapsed / 1e6,
        lats.len() as f64 / elapsed,
        pct(&lats, 0.5),
        pct(&lats, 0.99),
        stats.requests_committed as f64 / stats.batches_committed.max(1) as f64
    );
    drop(engine);
    std::fs::remove_dir_all(store).ok();
}

/// Appends `n` events from 16 tasks, 100 per append. `batch(s, written, k)` gives the stream
/// and the `k` events of a task's append; `s` numbers the appends across tasks (task `w`'s
/// `a`-th append is `w + 16a`), `written` counts the task's events so far.
fn fill(
    rt: &tokio::runtime::Runtime,
    engine: &Arc<Engine>,
    n: u64,
    batch: impl Fn(u64, u64, u64) -> (String, Vec<EventData>) + Send + Sync + 'static,
) {
    let batch = Arc::new(batch);
    rt.block_on(async {
        let per_task = n / 16;
        let mut tasks = Vec::new();
        for w in 0..16u64 {
            let (engine, batch) = (engine.clone(), batch.clone());
            tasks.push(tokio::spawn(async move {
                let (mut written, mut appends) = (0u64, 0u64);
                while written < per_task {
                    let k = 100.min(per_task - written);
                    let (stream, events) = batch(w + 16 * appends, written, k);
                    appends += 1;
                    engine
                        .append(&stream, ExpectedRevision::Any, events)
                        .await
                        .expect("append");
                    written += k;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Fills a store with `n` events over 1000 streams (100-event appends), returns the path.
fn populate(rt: &tokio::runtime::Runtime, dir: &Path, n: u64, size: usize) -> PathBuf {
    let store = dir.join("big");
    let engine = Arc::new(open(&store));
    let template = event(size);
    let t = Instant::now();
    let one = template.clone();
    fill(rt, &engine, n, move |s, _, k| {
        let events = (0..k)
            .map(|_| one.clone().with_id(Uuid::new_v4()))
            .collect();
        (format!("stream-{}", s % 1000), events)
    });
    // One long stream for the read_stream measurement.
    rt.block_on(async {
        for _ in 0..(n / 10 / 100) {
            let events = (0..100)
                .map(|_| template.clone().with_id(Uuid::new_v4()))
                .collect();
            engine
                .append("long-stream", ExpectedRevision::Any, events)
                .await
                .unwrap();
        }
    });
    eprintln!(
        "populated {} events in {:.1}s",
        n + n / 10,
        t.elapsed().as_secs_f64()
    );
    Arc::try_unwrap(engine)
        .ok()
        .expect("sole owner")
        .close()
        .unwrap();
    store
}

fn reads(store: &Path) {
    let engine = open(store);
    let t = Instant::now();
    let mut from = AllFrom::Start;
    let mut count = 0usize;
    let mut bytes = 0usize;
    loop {
        let page = engine
            .read_all(from, Direction::Forwards, 10_000, None)
            .unwrap();
        count += page.events.len();
        bytes += page
            .events
            .iter()
            .map(|e| e.data.len() + e.metadata.len())
            .sum::<usize>();
        if page.is_end {
            break;
        }
        from = AllFrom::Position(page.next_position);
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "read_all: {:.0} events/s, {:.0} MB/s of payload ({count} events)",
        count as f64 / s,
        bytes as f64 / s / 1e6
    );
    let t = Instant::now();
    let mut from = StreamFrom::Start;
    let mut count = 0usize;
    loop {
        let page = engine
            .read_stream("long-stream", from, Direction::Forwards, 1000)
            .unwrap();
        count += page.events.len();
        match page.next_revision {
            Some(r) => from = StreamFrom::Revision(r),
            None => break,
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "read_stream: {:.0} events/s ({count} events, one stream, pages of 1000)",
        count as f64 / s
    );
    let t = Instant::now();
    let (mut count, mut streams) = (0usize, 0usize);
    for i in 0..1000 {
        match engine.read_stream(
            &format!("stream-{i}"),
            StreamFrom::Start,
            Direction::Forwards,
            100_000,
        ) {
            Ok(slice) => {
                count += slice.events.len();
                streams += 1;
            }
            // A small --events fills fewer than 1000 streams.
            Err(strata_engine::Error::StreamNotFound { .. }) => {}
            Err(e) => panic!("read_stream stream-{i}: {e}"),
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "read_stream_interleaved: {:.0} events/s ({count} events over {streams} interleaved streams)",
        count as f64 / s
    );
}

fn reopen(store: &Path, events: u64) {
    let t = Instant::now();
    let engine = open(store);
    let clean = t.elapsed();
    drop(engine);
    println!(
        "reopen_clean: {:.3} s ({events} events, intact index)",
        clean.as_secs_f64()
    );

    let tmp = store.with_extension("killed");
    std::fs::remove_dir_all(&tmp).ok();
    // A child appends 100k more events, then is SIGKILLed while idle with its index behind.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--write-until-killed")
        .arg(store)
        .args(
            DERIVED
                .load(std::sync::atomic::Ordering::Relaxed)
                .then_some("--derived"),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let t = Instant::now();
    let engine = open(store);
    let killed = t.elapsed();
    let r = engine.recovery_report().clone();
    drop(engine);
    println!(
        "reopen_after_sigkill: {:.3} s (re-indexed {} events after the checkpoint)",
        killed.as_secs_f64(),
        r.reindexed_events
    );

    std::fs::remove_dir_all(store.join("index")).unwrap();
    let t = Instant::now();
    let engine = open(store);
    let rebuild = t.elapsed();
    let n = engine.recovery_report().reindexed_events;
    let t2 = Instant::now();
    engine.flush_index().unwrap();
    let persisted = t2.elapsed();
    drop(engine);
    println!(
        "index_rebuild: {:.0} events/s ({n} events in {:.3} s; writing them to sled took a further {:.3} s, in the background in normal operation)",
        n as f64 / rebuild.as_secs_f64(),
        rebuild.as_secs_f64(),
        persisted.as_secs_f64()
    );
}

fn write_until_killed(store: &Path) {
    let engine = open(store);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let template = event(200);
    rt.block_on(async {
        for _ in 0..1000 {
            let events = (0..100)
                .map(|_| template.clone().with_id(Uuid::new_v4()))
                .collect();
            engine
                .append("late", ExpectedRevision::Any, events)
                .await
                .unwrap();
        }
    });
    println!("DONE");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(3600));
}

fn main() {
    let args = Args::parse();
    DERIVED.store(args.derived, std::sync::atomic::Ordering::Relaxed);
    if let Some(store) = args.write_until_killed {
        write_until_killed(&store);
        return;
    }
    std::fs::create_dir_all(&args.dir).unwrap();
    let tmp = tempfile::tempdir_in(&args.dir).unwrap();
    let dir = tmp.path();
    let only: Vec<&str> = args.only.split(',').collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "# engine-bench: {} B data + ~70 B metadata per event, durable (fdatasync) mode, {} cores",
        args.event_size,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if only.contains(&"fsync") {
        fsync_baseline(dir, args.duration.min(3.0));
    }
    if only.contains(&"append") {
        for writers in [1, 16, 64] {
            appends(&rt, dir, writers, 1, args.duration, args.event_size);
        }
    }
    if only.contains(&"batch") {
        appends(&rt, dir, 16, 100, args.duration, args.event_size);
    }
    if only.contains(&"read") || only.contains(&"reopen") {
        let store = populate(&rt, dir, args.events, args.event_size);
        if only.contains(&"read") {
            reads(&store);
        }
        if only.contains(&"reopen") {
            reopen(&store, args.events);
        }
    }
    if only.contains(&"indexes") {
        indexes(&rt, dir, args.events, args.event_size);
    }
    if only.contains(&"fsync") {
        fsync_baseline(dir, args.duration.min(3.0));
    }
}
