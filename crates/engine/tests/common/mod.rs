#![allow(dead_code)]

use strata_engine::{Config, Durability, Engine, EventData};
use tempfile::TempDir;
use uuid::Uuid;

pub fn config(dir: &TempDir) -> Config {
    let mut c = Config::new(dir.path());
    c.durability = Durability::NoSync;
    c.index_cache_bytes = 4 * 1024 * 1024;
    c
}

pub fn open(dir: &TempDir) -> Engine {
    Engine::open(config(dir)).expect("open")
}

pub fn ev(n: u128) -> EventData {
    EventData::json("Happened", format!("{{\"n\":{n}}}")).with_id(Uuid::from_u128(n))
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
