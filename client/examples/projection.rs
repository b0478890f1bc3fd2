//! A projection that follows `$all` (only `order-` streams), counts events per type, and keeps
//! its checkpoint so a restart resumes where it stopped instead of re-reading history.
//!
//! `cargo run -p strata-client --example projection -- http://127.0.0.1:2113 /tmp/projection.checkpoint`
//! (stops after 10 s without a message; `PROJECTION_IDLE_SECS` changes that, and
//! `PROJECTION_UNTIL_CAUGHT_UP=1` makes it stop as soon as it has caught up, for a batch run).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use strata_client::{Client, Filter, SubscribeFrom, SubscriptionMessage};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2113".into());
    let checkpoint_file = args
        .next()
        .unwrap_or_else(|| "projection.checkpoint".into());
    let client = Client::connect(url).await?;

    // The checkpoint file says where to resume: "after <position of the last event handled>"
    // or "from <checkpoint position>" (everything before it was examined).
    let from = match std::fs::read_to_string(&checkpoint_file) {
        Ok(s) => match s.trim().split_once(' ') {
            Some(("after", p)) => SubscribeFrom::AfterPosition(p.parse()?),
            Some(("from", p)) => SubscribeFrom::FromPosition(p.parse()?),
            _ => return Err(format!("unreadable checkpoint file {checkpoint_file}: {s:?}").into()),
        },
        Err(_) => SubscribeFrom::Start,
    };
    let filter = Filter::stream_prefix(["order-"]).checkpoint_interval(1000);
    let mut sub = client.subscribe("$all", from, Some(filter)).await?;
    let idle = std::env::var("PROJECTION_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let until_caught_up = std::env::var("PROJECTION_UNTIL_CAUGHT_UP").is_ok_and(|v| v == "1");
    let mut counts = BTreeMap::<String, u64>::new();
    loop {
        let message = match tokio::time::timeout(Duration::from_secs(idle), sub.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(m)) => m?,
        };
        match message {
            SubscriptionMessage::Event(e) => {
                *counts.entry(e.event_type.clone()).or_default() += 1;
                std::fs::write(&checkpoint_file, format!("after {}", e.position))?;
            }
            // Nothing matched for a while: remember how far the log was examined, so a restart
            // does not scan it again.
            SubscriptionMessage::Checkpoint { position } => {
                std::fs::write(&checkpoint_file, format!("from {position}"))?;
            }
            SubscriptionMessage::CaughtUp { position } => {
                println!("caught up at {position}: {counts:?}");
                if until_caught_up {
                    break;
                }
            }
        }
    }
    println!("final counts: {counts:?}");
    Ok(())
}
