//! openraft's own storage tests, run against the engine-backed log store and state machine.
//!
//! Left out, by design (see `docs/replication.md`): tests that apply entries to the state
//! machine that were never appended to the log (Strata's state machine is the index of its
//! log, so it applies only entries the log holds), and tests of purging and snapshots (the
//! log is never purged and snapshots are not built; nodes catch up by replaying the log).

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use strata_engine::{Config, Durability, Engine};
use strata_replication::{LogStore, StateMachine, TypeConfig};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::new(dir.path());
        c.replicated = true;
        c.durability = Durability::NoSync;
        c.index_cache_bytes = 4 * 1024 * 1024;
        let engine = Arc::new(Engine::open(c).unwrap());
        let store = LogStore::new(engine.clone()).unwrap();
        Ok((dir, store, StateMachine::new(engine)))
    }
}

type S = Suite<TypeConfig, LogStore, StateMachine, Builder, TempDir>;

macro_rules! suite_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_dir, store, sm) = Builder.build().await.unwrap();
                S::$name(store, sm).await.unwrap();
            }
        )*
    };
}

suite_tests!(
    last_membership_in_log_initial,
    get_membership_initial,
    get_initial_state_without_init,
    save_vote,
    get_log_entries,
    limited_get_log_entries,
    leader_bounded_stream,
    entries_stream,
    log_reader_reads_new_entries,
    initial_logs,
    delete_logs_after_11,
    delete_logs_after_5,
    delete_logs_after_0,
    delete_logs_after_none,
);
