//! `strata group …`: manage persistent subscription groups and consume from one.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use strata_client::{
    ConsumerStrategy, GroupInfo, GroupMessage, GroupSettings, GroupStart, GroupStatus,
};

use super::{connect, print_event, ClientOpts, Failure, FilterArgs};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group on a stream or $all.
    Create {
        /// A stream name, or $all.
        stream: String,
        group: String,
        /// start, end (the default: only new events), or a revision (streams) / position ($all).
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Change a group's settings; unset options keep their values. The group keeps its position.
    Update {
        stream: String,
        group: String,
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Delete a group (its consumers are disconnected, its parked messages dropped).
    Delete {
        stream: String,
        group: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List groups, of one stream or all.
    List {
        stream: Option<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Show a group's state: consumers, checkpoint, in flight, parked, lag.
    Info {
        stream: String,
        group: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Redeliver parked messages.
    ReplayParked {
        stream: String,
        group: String,
        /// At most this many (default: all).
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Join a group as a consumer, print each event and ack it.
    Consume {
        stream: String,
        group: String,
        /// Messages held unacknowledged at once.
        #[arg(long, default_value_t = 10)]
        capacity: u32,
        /// Exit after this many events (0: run until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Print without acking (the messages time out and go to other consumers).
        #[arg(long)]
        no_ack: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Strategy {
    RoundRobin,
    DispatchToSingle,
    Pinned,
    PinnedByCorrelation,
}

#[derive(Debug, Args)]
pub struct SettingsArgs {
    #[arg(long, value_enum)]
    strategy: Option<Strategy>,
    /// Redeliveries before a message is parked.
    #[arg(long)]
    max_retries: Option<u32>,
    /// Retry a message not acked within this many milliseconds (0: never).
    #[arg(long)]
    message_timeout_ms: Option<u64>,
    /// Unacknowledged messages per consumer, at most.
    #[arg(long)]
    max_in_flight: Option<u32>,
    /// Messages read ahead of the consumers.
    #[arg(long)]
    live_buffer: Option<u32>,
    /// Events per storage read.
    #[arg(long)]
    read_batch: Option<u32>,
    /// Checkpoint after this many settled messages...
    #[arg(long)]
    checkpoint_after_count: Option<u32>,
    /// ...or after this many milliseconds.
    #[arg(long)]
    checkpoint_after_ms: Option<u64>,
    /// Consumers allowed at once (0: unlimited).
    #[arg(long)]
    max_consumers: Option<u32>,
    #[command(flatten)]
    filter: FilterArgs,
}

impl SettingsArgs {
    fn settings(&self) -> Result<GroupSettings, Failure> {
        Ok(GroupSettings {
            start_from: None,
            filter: self.filter.filter().map_err(Failure::Usage)?,
            strategy: self.strategy.map(|s| match s {
                Strategy::RoundRobin => ConsumerStrategy::RoundRobin,
                Strategy::DispatchToSingle => ConsumerStrategy::DispatchToSingle,
                Strategy::Pinned => ConsumerStrategy::Pinned,
                Strategy::PinnedByCorrelation => ConsumerStrategy::PinnedByCorrelation,
            }),
            max_retry_count: self.max_retries,
            message_timeout: self
                .message_timeout_ms
                .map(std::time::Duration::from_millis),
            max_in_flight_per_consumer: self.max_in_flight,
            live_buffer_size: self.live_buffer,
            read_batch_size: self.read_batch,
            checkpoint_after_count: self.checkpoint_after_count,
            checkpoint_after: self
                .checkpoint_after_ms
                .map(std::time::Duration::from_millis),
            max_consumers: self.max_consumers,
        })
    }
}

fn start_from(s: Option<&str>, is_all: bool) -> Result<Option<GroupStart>, Failure> {
    Ok(match s {
        None => None,
        Some("start") => Some(GroupStart::Start),
        Some("end") => Some(GroupStart::End),
        Some(n) => {
            let n: u64 = n
                .parse()
                .map_err(|_| Failure::Usage(format!("--from {n:?}: use start, end or a number")))?;
            Some(if is_all {
                GroupStart::Position(n)
            } else {
                GroupStart::Revision(n)
            })
        }
    })
}

fn info_json(g: &GroupInfo) -> serde_json::Value {
    let s = &g.settings;
    json!({
        "stream": g.stream,
        "group": g.group,
        "status": status_name(g.status),
        "consumers": g.consumers.iter().map(|c| json!({
            "id": c.id, "name": c.name, "capacity": c.capacity, "in_flight": c.in_flight,
            "acked": c.acked, "nacked": c.nacked, "ack_rate": c.ack_rate,
            "connected_seconds": c.connected.as_secs(),
        })).collect::<Vec<_>>(),
        "last_checkpoint": g.last_checkpoint,
        "settled_up_to": g.settled_up_to,
        "last_delivered": g.last_delivered,
        "read_position": g.read_position,
        "in_flight": g.in_flight,
        "buffered": g.buffered,
        "retry_queued": g.retry_queued,
        "parked": g.parked,
        "lag": g.lag,
        "lag_is_lower_bound": g.lag_is_lower_bound,
        "settings": {
            "strategy": format!("{:?}", s.strategy.unwrap_or(ConsumerStrategy::RoundRobin)),
            "max_retry_count": s.max_retry_count,
            "message_timeout_ms": s.message_timeout.map(|d| d.as_millis() as u64),
            "max_in_flight_per_consumer": s.max_in_flight_per_consumer,
            "live_buffer_size": s.live_buffer_size,
            "read_batch_size": s.read_batch_size,
            "checkpoint_after_count": s.checkpoint_after_count,
            "checkpoint_after_ms": s.checkpoint_after.map(|d| d.as_millis() as u64),
            "max_consumers": s.max_consumers,
        },
    })
}

fn status_name(s: GroupStatus) -> &'static str {
    match s {
        GroupStatus::Idle => "idle",
        GroupStatus::CatchingUp => "catching-up",
        GroupStatus::Live => "live",
        GroupStatus::StreamDeleted => "stream-deleted",
    }
}

fn print_info(g: &GroupInfo, as_json: bool) {
    if as_json {
        println!("{}", info_json(g));
        return;
    }
    let lag = if g.lag_is_lower_bound {
        format!(">={}", g.lag)
    } else {
        g.lag.to_string()
    };
    println!(
        "{}::{} status={} consumers={} in_flight={} parked={} lag={} settled_up_to={} checkpoint={}",
        g.stream,
        g.group,
        status_name(g.status),
        g.consumers.len(),
        g.in_flight,
        g.parked,
        lag,
        g.settled_up_to,
        g.last_checkpoint
            .map_or_else(|| "none".to_owned(), |c| c.to_string()),
    );
    for c in &g.consumers {
        println!(
            "  consumer {} ({}) in_flight={}/{} acked={} nacked={} rate={:.1}/s",
            c.id, c.name, c.in_flight, c.capacity, c.acked, c.nacked, c.ack_rate
        );
    }
}

pub async fn execute(cmd: GroupCommand) -> Result<i32, Failure> {
    match cmd {
        GroupCommand::Create {
            stream,
            group,
            from,
            settings,
            opts,
        } => {
            let mut s = settings.settings()?;
            s.start_from = start_from(from.as_deref(), stream == "$all")?;
            let client = connect(&opts).await?;
            client.create_group(&stream, &group, s).await?;
            if opts.json {
                println!(
                    "{}",
                    json!({"stream": stream, "group": group, "created": true})
                );
            } else {
                println!("created group {group} on {stream}");
            }
        }
        GroupCommand::Update {
            stream,
            group,
            settings,
            opts,
        } => {
            let client = connect(&opts).await?;
            client
                .update_group(&stream, &group, settings.settings()?)
                .await?;
            print_info(&client.group_info(&stream, &group).await?, opts.json);
        }
        GroupCommand::Delete {
            stream,
            group,
            opts,
        } => {
            let client = connect(&opts).await?;
            client.delete_group(&stream, &group).await?;
            if opts.json {
                println!(
                    "{}",
                    json!({"stream": stream, "group": group, "deleted": true})
                );
            } else {
                println!("deleted group {group} on {stream}");
            }
        }
        GroupCommand::List { stream, opts } => {
            let client = connect(&opts).await?;
            for g in client.list_groups(stream.as_deref()).await? {
                print_info(&g, opts.json);
            }
        }
        GroupCommand::Info {
            stream,
            group,
            opts,
        } => {
            let client = connect(&opts).await?;
            print_info(&client.group_info(&stream, &group).await?, opts.json);
        }
        GroupCommand::ReplayParked {
            stream,
            group,
            count,
            opts,
        } => {
            let client = connect(&opts).await?;
            let n = client.replay_parked(&stream, &group, count).await?;
            if opts.json {
                println!("{}", json!({"stream": stream, "group": group, "queued": n}));
            } else {
                println!("{n} parked message(s) queued for redelivery");
            }
        }
        GroupCommand::Consume {
            stream,
            group,
            capacity,
            count,
            no_ack,
            opts,
        } => {
            let client = connect(&opts).await?;
            let mut consumer = client
                .consume_group_named(&stream, &group, capacity, "strata-cli")
                .await?;
            let mut seen = 0u64;
            while let Some(m) = consumer.next().await {
                match m? {
                    GroupMessage::Event(e) => {
                        print_event(&e.event, opts.json);
                        if !no_ack {
                            consumer.ack(&[e.event.id]).await?;
                        }
                        seen += 1;
                        if count > 0 && seen >= count {
                            break;
                        }
                    }
                    GroupMessage::Rejected { reason, .. } => eprintln!("strata: {reason}"),
                }
            }
            // Give the acks a moment to leave before the connection closes.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Ok(0)
}
