//! Replication for Strata: the engine's log as openraft's log, and the engine's index as its
//! state machine (see `docs/replication.md`). Nothing here knows gRPC; the server supplies
//! the network.
//!
//! - [`types`]: the openraft type configuration and entry conversions.
//! - [`log_store`]: `RaftLogStorage` over the engine's entry log, with group fsync.
//! - [`state_machine`]: `RaftStateMachine`: applying indexes committed entries.
//! - [`proposer`]: the engine writer's path into Raft.
//! - [`snapshot`]: catching a node up from the leader's committed log in one transfer.

pub mod log_store;
pub mod proposer;
pub mod snapshot;
pub mod state_machine;
pub mod types;

pub use log_store::LogStore;
pub use proposer::RaftProposer;
pub use state_machine::StateMachine;
pub use types::TypeConfig;

/// A node's Raft handle.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// Raft settings for a Strata node: elections within a few hundred milliseconds; a snapshot
/// every `snapshot_entries` entries (it costs nothing: see [`snapshot`]), after which a node
/// more than `snapshot_entries` entries behind catches up by a snapshot transfer rather than
/// by AppendEntries calls.
pub fn raft_config(
    cluster: &str,
    snapshot_entries: u64,
) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: cluster.to_owned(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_entries),
        max_in_snapshot_log_to_keep: snapshot_entries,
        // Purging is only openraft's bookkeeping (the log is never deleted): no need to batch.
        purge_batch_size: 1,
        // A node that lost its disk comes back with an empty log and replays it from the
        // leader. Without this, the leader treats a follower whose log went backwards as a bug
        // (a debug assertion). What the node also lost is its vote: see "A node that lost its
        // disk" in docs/replication.md.
        allow_log_reversion: Some(true),
        ..Default::default()
    }
    .validate()
}
