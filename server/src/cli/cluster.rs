//! `strata cluster …`: a cluster as one of its nodes sees it, and leadership transfer.

use clap::Subcommand;
use serde_json::{json, Value};
use strata_client::ClusterStatus;

use super::{connect, ClientOpts, Failure, EXIT_INVALID};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The node's role, term, leader and commit point, and every member with its liveness
    /// (and, asked of the leader, how far each member is behind).
    Status {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Add a running node (started with its --node-id and --cluster-listen, without
    /// --cluster-init): it joins as a learner, and once it has caught up it is made a voter
    /// (unless --learner). Send it to the leader; operators only.
    Add {
        #[arg(long)]
        node_id: u64,
        /// The new node's --cluster-listen address, as its peers reach it.
        #[arg(long)]
        peer_address: String,
        /// Keep it a learner: a read-only replica that receives the log but does not vote.
        #[arg(long)]
        learner: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Make a learner a voter (leader; operators).
    Promote {
        #[arg(long)]
        node_id: u64,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Remove a voter or a learner from the cluster (leader; operators). Stop the node
    /// afterwards; never reuse its ID.
    Remove {
        #[arg(long)]
        node_id: u64,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Hand leadership to another voter, and wait until it leads. Send it to the leader;
    /// operators only.
    TransferLeader {
        /// The node ID of the voter to take over.
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

/// A cluster status as JSON (also part of `strata info --json`).
pub(super) fn status_json(c: &ClusterStatus) -> Value {
    json!({
        "node_id": c.node_id,
        "role": c.role,
        "term": c.term,
        "leader_id": c.leader_id,
        "last_log_index": c.last_log_index,
        "committed_index": c.committed_index,
        "snapshot_index": c.snapshot_index,
        "members": c.members.iter().map(|m| {
            let mut v = json!({
                "node_id": m.node_id,
                "peer_address": m.peer_address,
                "voter": m.voter,
                "client_endpoint": m.client_endpoint,
                "alive": m.alive,
            });
            if let Some(r) = &m.replication {
                v["matched_index"] = json!(r.matched_index);
                v["lag_entries"] = json!(r.lag_entries);
                v["lag_bytes"] = json!(r.lag_bytes);
                v["last_ack_ms"] = json!(r.last_ack.map(|d| d.as_millis() as u64));
            }
            v
        }).collect::<Vec<_>>(),
    })
}

fn print_status(c: &ClusterStatus) {
    let leader = c
        .leader_id
        .map_or("none (election under way)".to_owned(), |l| l.to_string());
    println!(
        "node {}: {}, term {}, leader {leader}; entries: last {}, committed {}, snapshot {}",
        c.node_id, c.role, c.term, c.last_log_index, c.committed_index, c.snapshot_index
    );
    for m in &c.members {
        let mut line = format!(
            "  node {} {} {} peer {} clients {}",
            m.node_id,
            if m.voter { "voter" } else { "learner" },
            if m.alive { "alive" } else { "down" },
            m.peer_address,
            m.client_endpoint.as_deref().unwrap_or("?"),
        );
        if let Some(r) = &m.replication {
            let ack = r
                .last_ack
                .map_or("never".to_owned(), |d| format!("{} ms ago", d.as_millis()));
            line.push_str(&format!(
                "; matched {} (behind by {} entries, {} bytes), last ack {ack}",
                r.matched_index, r.lag_entries, r.lag_bytes
            ));
        }
        println!("{line}");
    }
}

/// Prints the cluster after a membership change.
fn changed(s: &ClusterStatus, opts: &ClientOpts) -> Result<i32, Failure> {
    if opts.json {
        println!("{}", status_json(s));
    } else {
        print_status(s);
    }
    Ok(0)
}

pub(super) async fn execute(cmd: ClusterCommand) -> Result<i32, Failure> {
    match cmd {
        ClusterCommand::Status { opts } => {
            let client = connect(&opts).await?;
            let Some(c) = client.server_info().await?.cluster else {
                eprintln!(
                    "strata: {} is a single node, not a cluster node",
                    opts.server
                );
                return Ok(EXIT_INVALID);
            };
            if opts.json {
                println!("{}", status_json(&c));
            } else {
                print_status(&c);
            }
            Ok(0)
        }
        ClusterCommand::Add {
            node_id,
            peer_address,
            learner,
            opts,
        } => {
            let client = connect(&opts).await?;
            let s = client.add_member(node_id, &peer_address, !learner).await?;
            changed(&s, &opts)
        }
        ClusterCommand::Promote { node_id, opts } => {
            let client = connect(&opts).await?;
            let s = client.promote_member(node_id).await?;
            changed(&s, &opts)
        }
        ClusterCommand::Remove { node_id, opts } => {
            let client = connect(&opts).await?;
            let s = client.remove_member(node_id).await?;
            changed(&s, &opts)
        }
        ClusterCommand::TransferLeader { to, opts } => {
            let client = connect(&opts).await?;
            let leader = client.transfer_leader(to).await?;
            if opts.json {
                println!("{}", json!({ "leader_id": leader }));
            } else {
                println!("node {leader} leads");
            }
            Ok(0)
        }
    }
}
