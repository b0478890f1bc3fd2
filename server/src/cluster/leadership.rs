//! What runs only on the leader: consumer groups, and the creation of the initial accounts.
//! Groups start once the node leads with every earlier leader's entries applied (so their
//! checkpoints are the latest committed), and stop as soon as it does not.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use strata_persistent::Groups;
use strata_replication::proposer::ready;
use strata_replication::Raft;

/// Starts and stops `groups` with this node's leadership, until `stop`.
pub fn run_groups(raft: Raft, groups: Arc<Groups>, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let mut leading = false;
        loop {
            let now = ready(&metrics.borrow_watched().clone());
            if now && !leading {
                match groups.activate().await {
                    Ok(_) => leading = true,
                    Err(e) => {
                        // Try again shortly: the groups' state is in the committed log.
                        tracing::error!(error = %e, "cannot start the consumer groups on this leader");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            } else if !now && leading {
                groups.stand_down().await;
                leading = false;
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { break },
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    });
}

/// Creates the initial accounts (see [`strata_auth::Users::ensure_initial`]) the first time
/// this node leads with everything applied; a node that never leads leaves it to the one that
/// does. Retried while it fails (e.g. leadership lost midway).
pub fn initial_users(
    raft: Raft,
    users: Arc<strata_auth::Users>,
    admin: Option<String>,
    ops: Option<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        loop {
            if ready(&metrics.borrow_watched().clone()) {
                match users.ensure_initial(admin.clone(), ops.clone()).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "creating the initial users on this leader; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}
