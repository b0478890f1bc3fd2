//! Appends under concurrency to a store until killed, printing one line per acknowledged
//! event: `ACK <stream> <revision> <event-id>`. Used by the crash test, which SIGKILLs it.
//!
//! Usage: crash-writer <data-dir> <own-stream-writers> <shared-stream-writers> <segment-size>
//! [derived] (the last keeps the derived streams `$ce-…`, `$et-…`)

use std::io::Write;
use std::sync::Arc;

use strata_engine::{Config, Direction, Engine, EventData, ExpectedRevision, StreamFrom};
use strata_tests::payload_for;
use uuid::Uuid;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = &args[1];
    let own: usize = args[2].parse().expect("own-stream writers");
    let shared: usize = args[3].parse().expect("shared-stream writers");
    let mut config = Config::new(dir);
    config.segment_size = args[4].parse().expect("segment size");
    if args.get(5).is_some_and(|a| a == "derived") {
        config.derived = Some(strata_engine::derived::CategoryRule::default());
    }
    let engine = Arc::new(Engine::open(config).expect("open store"));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    println!("READY");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for w in 0..own + shared {
            let engine = engine.clone();
            let out = out.clone();
            tasks.push(tokio::spawn(async move {
                let stream = if w < own {
                    format!("crash-{w}")
                } else {
                    "crash-shared".to_owned()
                };
                let mut expected =
                    match engine.read_stream(&stream, StreamFrom::End, Direction::Backwards, 1) {
                        Ok(s) => ExpectedRevision::Exact(s.last_revision),
                        Err(_) => ExpectedRevision::NoStream,
                    };
                if w >= own {
                    expected = ExpectedRevision::Any;
                }
                let mut n: u64 = 0;
                loop {
                    n += 1;
                    let count = 1 + (n % 3) as usize;
                    let ids: Vec<Uuid> = (0..count).map(|_| Uuid::new_v4()).collect();
                    let events = ids
                        .iter()
                        .map(|id| EventData::json("Crashy", payload_for(&stream, *id)).with_id(*id))
                        .collect();
                    let r = engine
                        .append(&stream, expected, events)
                        .await
                        .expect("append");
                    let first = r.revision + 1 - count as u64;
                    let mut lines = String::new();
                    for (i, id) in ids.iter().enumerate() {
                        lines.push_str(&format!("ACK {stream} {} {id}\n", first + i as u64));
                    }
                    {
                        let mut o = out.lock().unwrap();
                        o.write_all(lines.as_bytes()).unwrap();
                        o.flush().unwrap();
                    }
                    if w < own {
                        expected = ExpectedRevision::Exact(r.revision);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}
