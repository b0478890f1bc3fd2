//! Prometheus metrics of a cluster node (on the server's `/metrics` with the rest): its role,
//! term and Raft entries, leader changes seen, snapshot transfers, and, on the leader, how far
//! each member is behind.

use std::sync::OnceLock;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::status::Handle;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Default)]
struct ClusterMetrics {
    is_leader: Gauge,
    term: Gauge,
    last_log_index: Gauge,
    committed_index: Gauge,
    leader_changes: Counter,
    snapshots_sent: Counter,
    snapshots_installed: Counter,
    member_alive: Family<NodeLabel, Gauge>,
    member_lag_entries: Family<NodeLabel, Gauge>,
    member_lag_bytes: Family<NodeLabel, Gauge>,
}

static METRICS: OnceLock<ClusterMetrics> = OnceLock::new();

/// Counts a snapshot sent to a member.
pub fn snapshot_sent() {
    if let Some(m) = METRICS.get() {
        m.snapshots_sent.inc();
    }
}

/// Counts a snapshot received and installed.
pub fn snapshot_installed() {
    if let Some(m) = METRICS.get() {
        m.snapshots_installed.inc();
    }
}

/// Registers the cluster metrics and keeps them up to date (every 500 ms, and at every
/// change of leader) until `stop`.
pub fn start(handle: Handle, mut stop: tokio::sync::watch::Receiver<bool>) {
    let m = METRICS.get_or_init(|| {
        let m = ClusterMetrics::default();
        crate::metrics::get().register_with(|r| {
            r.register(
                "strata_cluster_is_leader",
                "1 while this node leads, else 0",
                m.is_leader.clone(),
            );
            r.register(
                "strata_cluster_term",
                "This node's current Raft term",
                m.term.clone(),
            );
            r.register(
                "strata_cluster_last_log_index",
                "The last Raft entry this node holds",
                m.last_log_index.clone(),
            );
            r.register(
                "strata_cluster_committed_index",
                "The last Raft entry this node has committed and applied",
                m.committed_index.clone(),
            );
            r.register(
                "strata_cluster_leader_changes",
                "Times this node saw the leader change (elections won by any node, transfers)",
                m.leader_changes.clone(),
            );
            r.register(
                "strata_cluster_snapshots_sent",
                "Snapshot transfers this node completed as leader",
                m.snapshots_sent.clone(),
            );
            r.register(
                "strata_cluster_snapshots_installed",
                "Snapshots this node received (installed, or already covered by its log)",
                m.snapshots_installed.clone(),
            );
            r.register(
                "strata_cluster_member_alive",
                "1 if the member answered this node lately",
                m.member_alive.clone(),
            );
            r.register(
                "strata_cluster_member_lag_entries",
                "On the leader: Raft entries the member is behind",
                m.member_lag_entries.clone(),
            );
            r.register(
                "strata_cluster_member_lag_bytes",
                "On the leader: log bytes the member is behind",
                m.member_lag_bytes.clone(),
            );
        });
        m
    });
    tokio::spawn(async move {
        let mut watch = handle.raft.metrics();
        let mut leader = watch.borrow_watched().current_leader;
        loop {
            let now = watch.borrow_watched().current_leader;
            if now.is_some() && now != leader {
                m.leader_changes.inc();
            }
            leader = now;
            let s = handle.status();
            m.is_leader.set(i64::from(s.role == "leader"));
            m.term.set(s.term as i64);
            m.last_log_index.set(s.last_log_index as i64);
            m.committed_index.set(s.committed_index as i64);
            m.member_alive.clear();
            m.member_lag_entries.clear();
            m.member_lag_bytes.clear();
            for member in &s.members {
                let label = NodeLabel {
                    node: member.node_id.to_string(),
                };
                m.member_alive
                    .get_or_create(&label)
                    .set(i64::from(member.alive));
                if member.has_replication {
                    m.member_lag_entries
                        .get_or_create(&label)
                        .set(member.lag_entries as i64);
                    m.member_lag_bytes
                        .get_or_create(&label)
                        .set(member.lag_bytes as i64);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = watch.changed() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}
