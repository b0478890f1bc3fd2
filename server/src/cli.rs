//! The command-line client: `strata append|read|subscribe|delete|tombstone|metadata|streams|info|health|group|user`.
//!
//! Exit codes: 0 success, 1 other error, 2 usage, 3 wrong expected revision, 4 stream not
//! found (stream or group), 5 stream deleted, 6 server unavailable or unreachable, 7 invalid
//! argument, 9 group already exists, 10 access denied or not authenticated.

use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::json;
use strata_client::{
    Error, EventData, ExpectedRevision, Filter, ReadFrom, ReadOptions, RecordedEvent,
    StreamMetadata, SubscribeFrom, SubscriptionMessage,
};
use uuid::Uuid;

mod cluster;
mod group;
mod multi;
mod opts;
mod server;
mod user;

use opts::connect;
pub use opts::ClientOpts;

pub const EXIT_WRONG_EXPECTED_REVISION: i32 = 3;
pub const EXIT_NOT_FOUND: i32 = 4;
pub const EXIT_DELETED: i32 = 5;
pub const EXIT_UNAVAILABLE: i32 = 6;
pub const EXIT_INVALID: i32 = 7;
pub const EXIT_EXISTS: i32 = 9;
pub const EXIT_DENIED: i32 = 10;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Append one event to a stream.
    Append(AppendArgs),
    /// Append to several streams atomically (events and checks from a JSON document).
    AppendMulti(multi::AppendMultiArgs),
    /// Read a stream or $all.
    Read(ReadArgs),
    /// Subscribe to a stream or $all: history, then live events until interrupted.
    Subscribe(SubscribeArgs),
    /// Soft-delete a stream (a later append recreates it).
    Delete(DeleteArgs),
    /// Delete a stream forever.
    Tombstone(DeleteArgs),
    /// Get or set stream metadata.
    #[command(subcommand)]
    Metadata(MetadataCommand),
    /// List streams.
    Streams(StreamsArgs),
    /// Show server information.
    Info(server::InfoArgs),
    /// Check the server's gRPC health (exit 0 when serving, 6 otherwise).
    Health(server::InfoArgs),
    /// Manage persistent subscription groups, or consume from one.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Manage users of a secure server (admins), or change your own password.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Show a cluster as one of its nodes sees it, or move its leadership.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    stream: String,
    /// Event type.
    #[arg(long = "type")]
    event_type: String,
    /// Event data (JSON unless --binary).
    #[arg(long, default_value = "{}")]
    data: String,
    /// Event metadata.
    #[arg(long, default_value = "")]
    metadata: String,
    /// Event ID (a UUID); random by default. Reusing one makes a retry idempotent.
    #[arg(long)]
    id: Option<Uuid>,
    /// Expected revision: any, no-stream, exists, or a revision number.
    #[arg(long, default_value = "any", value_parser = parse_expected)]
    expected: ExpectedRevision,
    /// Store the data as opaque bytes rather than JSON.
    #[arg(long)]
    binary: bool,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// $all: only streams whose names start with this (repeatable).
    #[arg(long)]
    stream_prefix: Vec<String>,
    /// $all: only event types starting with this (repeatable).
    #[arg(long)]
    type_prefix: Vec<String>,
    /// $all: only events of this category, read from the category index (repeatable;
    /// the server needs --derived-streams).
    #[arg(long)]
    category: Vec<String>,
    /// $all: only events of exactly this type, read from the event-type index (repeatable;
    /// the server needs --derived-streams).
    #[arg(long)]
    event_type: Vec<String>,
    /// $all: only stream names matching this regular expression.
    #[arg(long)]
    stream_regex: Option<String>,
    /// $all: only event types matching this regular expression.
    #[arg(long)]
    type_regex: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> Result<Option<Filter>, String> {
        let mut filters = Vec::new();
        if !self.stream_prefix.is_empty() {
            filters.push(Filter::stream_prefix(self.stream_prefix.clone()));
        }
        if !self.category.is_empty() || !self.event_type.is_empty() {
            filters.push(Filter::indexed(&self.category, &self.event_type));
        }
        if !self.type_prefix.is_empty() {
            filters.push(Filter::event_type_prefix(self.type_prefix.clone()));
        }
        if let Some(r) = &self.stream_regex {
            filters.push(Filter::stream_regex(r.clone()));
        }
        if let Some(r) = &self.type_regex {
            filters.push(Filter::event_type_regex(r.clone()));
        }
        match filters.len() {
            0 => Ok(None),
            1 => Ok(filters.pop()),
            _ => Err(
                "give one filter: a prefix list or a regex, on stream names or event types, or \
                 categories and event types (--category, --event-type)"
                    .into(),
            ),
        }
    }
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// A stream name, or $all.
    stream: String,
    /// start, end, or a revision (streams) / position ($all).
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    backwards: bool,
    /// At most this many events (0: all).
    #[arg(long, default_value_t = 0)]
    count: u64,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// A stream name, or $all.
    stream: String,
    /// start, end, or the revision (streams) / position ($all) to start after.
    #[arg(long, default_value = "start")]
    from: String,
    /// Exit after this many events (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    count: u64,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    stream: String,
    /// Expected revision: any, no-stream, exists, or a revision number.
    #[arg(long, default_value = "any", value_parser = parse_expected)]
    expected: ExpectedRevision,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Subcommand)]
pub enum MetadataCommand {
    /// Show a stream's metadata.
    Get {
        stream: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Replace a stream's metadata.
    Set {
        stream: String,
        /// Keep only the newest N events readable.
        #[arg(long)]
        max_count: Option<u64>,
        /// Hide events older than this many seconds.
        #[arg(long)]
        max_age: Option<u64>,
        /// Hide events before this revision.
        #[arg(long)]
        truncate_before: Option<u64>,
        /// Other keys, as a JSON object.
        #[arg(long)]
        custom: Option<String>,
        /// Expected revision of the metadata stream.
        #[arg(long, default_value = "any", value_parser = parse_expected)]
        expected: ExpectedRevision,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Only names starting with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Include system streams ($-prefixed).
    #[arg(long)]
    system: bool,
    #[command(flatten)]
    opts: ClientOpts,
}

fn parse_expected(s: &str) -> Result<ExpectedRevision, String> {
    match s {
        "any" => Ok(ExpectedRevision::Any),
        "no-stream" => Ok(ExpectedRevision::NoStream),
        "exists" => Ok(ExpectedRevision::StreamExists),
        n => n
            .parse()
            .map(ExpectedRevision::Exact)
            .map_err(|_| format!("{s:?}: use any, no-stream, exists or a revision number")),
    }
}

fn exit_code(e: &Error) -> i32 {
    match e {
        Error::WrongExpectedRevision { .. } | Error::ChecksFailed { .. } => {
            EXIT_WRONG_EXPECTED_REVISION
        }
        Error::StreamNotFound { .. } | Error::GroupNotFound { .. } => EXIT_NOT_FOUND,
        Error::GroupExists { .. } => EXIT_EXISTS,
        Error::StreamDeleted { .. } => EXIT_DELETED,
        Error::Unavailable(_) | Error::Connect(_) | Error::DeadlineExceeded => EXIT_UNAVAILABLE,
        Error::InvalidArgument { .. }
        | Error::AppendTooLarge { .. }
        | Error::Server {
            code: tonic::Code::InvalidArgument,
            ..
        } => EXIT_INVALID,
        Error::AccessDenied { .. } | Error::Unauthenticated(_) => EXIT_DENIED,
        _ => 1,
    }
}

fn data_text(e: &RecordedEvent) -> String {
    String::from_utf8_lossy(&e.data).into_owned()
}

fn event_json(e: &RecordedEvent) -> serde_json::Value {
    let data = if e.is_json {
        serde_json::from_slice(&e.data).unwrap_or_else(|_| json!(data_text(e)))
    } else {
        json!(String::from_utf8_lossy(&e.data))
    };
    let metadata = serde_json::from_slice(&e.metadata)
        .unwrap_or_else(|_| json!(String::from_utf8_lossy(&e.metadata)));
    let created = e
        .created
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut out = json!({
        "stream": e.stream,
        "revision": e.revision,
        "position": e.position,
        "event_id": e.id.to_string(),
        "event_type": e.event_type,
        "content_type": if e.is_json { "json" } else { "binary" },
        "data": data,
        "metadata": metadata,
        "created_unix_nanos": created,
    });
    if let Some(l) = &e.listed_in {
        out["listed_in"] = json!({
            "stream": l.stream,
            "revision": l.revision,
            "entry_id": l.entry_id.map(|id| id.to_string()),
            "unresolved": l.unresolved,
        });
    }
    out
}

fn print_event(e: &RecordedEvent, json_out: bool) {
    if json_out {
        println!("{}", event_json(e));
    } else {
        // Entries of a derived stream lead with their place there.
        let listed = e.listed_in.as_ref().map_or(String::new(), |l| {
            let gone = if l.unresolved { " (event gone)" } else { "" };
            format!("{}@{}{gone} -> ", l.stream, l.revision)
        });
        println!(
            "{listed}{}@{} pos={} {} {} {}",
            e.stream,
            e.revision,
            e.position,
            e.event_type,
            e.id,
            data_text(e)
        );
    }
}

fn read_from(s: Option<&str>, is_all: bool) -> Result<ReadFrom, String> {
    Ok(match s {
        None => ReadFrom::Default,
        Some("start") => ReadFrom::Start,
        Some("end") => ReadFrom::End,
        Some(n) => {
            let n: u64 = n
                .parse()
                .map_err(|_| format!("--from {n:?}: use start, end or a number"))?;
            if is_all {
                ReadFrom::Position(n)
            } else {
                ReadFrom::Revision(n)
            }
        }
    })
}

pub async fn run(cmd: ClientCommand) -> i32 {
    match execute(cmd).await {
        Ok(code) => code,
        Err(Failure::Client(e)) => {
            eprintln!("strata: {e}");
            exit_code(&e)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("strata: {msg}");
            2
        }
    }
}

#[derive(Debug)]
enum Failure {
    Client(Error),
    Usage(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Client(e)
    }
}

/// `strata delete` (soft) and `strata tombstone` (hard).
async fn delete(a: DeleteArgs, hard: bool) -> Result<i32, Failure> {
    let client = connect(&a.opts).await?;
    let pos = if hard {
        client.tombstone_stream(&a.stream, a.expected).await?
    } else {
        client.delete_stream(&a.stream, a.expected).await?
    };
    let kind = if hard { "tombstone" } else { "soft" };
    if a.opts.json {
        println!(
            "{}",
            json!({"stream": a.stream, "deleted": kind, "position": pos})
        );
    } else if hard {
        println!("tombstoned {} at position {pos}", a.stream);
    } else {
        println!("deleted {} (soft) at position {pos}", a.stream);
    }
    Ok(0)
}

async fn execute(cmd: ClientCommand) -> Result<i32, Failure> {
    match cmd {
        ClientCommand::Group(g) => group::execute(g).await,
        ClientCommand::AppendMulti(a) => multi::execute(a).await,
        ClientCommand::User(u) => user::execute(u).await,
        ClientCommand::Append(a) => {
            let client = connect(&a.opts).await?;
            let mut event = if a.binary {
                EventData::binary(a.event_type, a.data.into_bytes())
            } else {
                serde_json::from_str::<serde_json::Value>(&a.data).map_err(|e| {
                    Failure::Usage(format!(
                        "--data is not valid JSON ({e}); use --binary for other data"
                    ))
                })?;
                EventData::json_bytes(a.event_type, a.data.into_bytes())
            };
            if let Some(id) = a.id {
                event = event.id(id);
            }
            if !a.metadata.is_empty() {
                event = event.metadata(a.metadata.into_bytes());
            }
            let id = event.id;
            let r = client.append(&a.stream, a.expected, vec![event]).await?;
            if a.opts.json {
                println!(
                    "{}",
                    json!({"stream": a.stream, "revision": r.revision, "position": r.position, "event_id": id.to_string(), "idempotent_replay": r.idempotent_replay})
                );
            } else {
                let replay = if r.idempotent_replay {
                    " (already written: idempotent retry)"
                } else {
                    ""
                };
                println!(
                    "appended to {}@{} at position {}{replay}",
                    a.stream, r.revision, r.position
                );
            }
            Ok(0)
        }
        ClientCommand::Read(a) => {
            let client = connect(&a.opts).await?;
            let is_all = a.stream == "$all";
            let filter = a.filter.filter().map_err(Failure::Usage)?;
            let mut opts = ReadOptions::default()
                .from(read_from(a.from.as_deref(), is_all).map_err(Failure::Usage)?)
                .max_count(a.count);
            if a.backwards {
                opts = opts.backwards();
            }
            if let Some(f) = filter {
                opts = opts.filter(f);
            }
            let mut events = if is_all {
                client.read_all(opts).await?
            } else {
                client.read_stream(&a.stream, opts).await?
            };
            while let Some(e) = events.next().await {
                print_event(&e?, a.opts.json);
            }
            Ok(0)
        }
        ClientCommand::Subscribe(a) => {
            let client = connect(&a.opts).await?;
            let is_all = a.stream == "$all";
            let from = match a.from.as_str() {
                "start" => SubscribeFrom::Start,
                "end" => SubscribeFrom::End,
                n => {
                    let n: u64 = n.parse().map_err(|_| {
                        Failure::Usage(format!("--from {n:?}: use start, end or a number"))
                    })?;
                    if is_all {
                        SubscribeFrom::AfterPosition(n)
                    } else {
                        SubscribeFrom::AfterRevision(n)
                    }
                }
            };
            let filter = a.filter.filter().map_err(Failure::Usage)?;
            let mut sub = client.subscribe(&a.stream, from, filter).await?;
            let mut seen = 0;
            while let Some(m) = sub.next().await {
                match m? {
                    SubscriptionMessage::Event(e) => {
                        print_event(&e, a.opts.json);
                        seen += 1;
                        if a.count > 0 && seen >= a.count {
                            break;
                        }
                    }
                    SubscriptionMessage::CaughtUp { position } => {
                        if a.opts.json {
                            println!("{}", json!({"caught_up": position}));
                        } else {
                            eprintln!("-- caught up at {position}; waiting for live events");
                        }
                    }
                    SubscriptionMessage::Checkpoint { position } => {
                        if a.opts.json {
                            println!("{}", json!({"checkpoint": position}));
                        }
                    }
                }
            }
            Ok(0)
        }
        ClientCommand::Delete(a) => delete(a, false).await,
        ClientCommand::Tombstone(a) => delete(a, true).await,
        ClientCommand::Metadata(MetadataCommand::Get { stream, opts }) => {
            let client = connect(&opts).await?;
            let (rev, m) = client.get_stream_metadata(&stream).await?;
            let value = json!({
                "stream": stream,
                "metadata_revision": rev,
                "max_count": m.max_count,
                "max_age_seconds": m.max_age.map(|a| a.as_secs()),
                "truncate_before": m.truncate_before,
                "custom": m.custom,
            });
            if opts.json {
                println!("{value}");
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            }
            Ok(0)
        }
        ClientCommand::Metadata(MetadataCommand::Set {
            stream,
            max_count,
            max_age,
            truncate_before,
            custom,
            expected,
            opts,
        }) => {
            let client = connect(&opts).await?;
            let custom = match custom {
                None => serde_json::Value::Null,
                Some(c) => serde_json::from_str(&c)
                    .map_err(|e| Failure::Usage(format!("--custom is not valid JSON: {e}")))?,
            };
            let m = StreamMetadata {
                max_count,
                max_age: max_age.map(Duration::from_secs),
                truncate_before,
                custom,
            };
            let rev = client.set_stream_metadata(&stream, expected, m).await?;
            if opts.json {
                println!("{}", json!({"stream": stream, "metadata_revision": rev}));
            } else {
                println!("metadata of {stream} set (metadata revision {rev})");
            }
            Ok(0)
        }
        ClientCommand::Streams(a) => {
            let client = connect(&a.opts).await?;
            for s in client.list_streams(&a.prefix, a.system).await? {
                if a.opts.json {
                    println!(
                        "{}",
                        json!({"name": s.name, "last_revision": s.last_revision, "soft_deleted": s.soft_deleted, "tombstoned": s.tombstoned})
                    );
                } else {
                    let state = if s.tombstoned {
                        " (tombstoned)"
                    } else if s.soft_deleted {
                        " (deleted)"
                    } else {
                        ""
                    };
                    let last = s.last_revision.map_or("-".to_owned(), |r| r.to_string());
                    println!("{}\tlast revision {last}{state}", s.name);
                }
            }
            Ok(0)
        }
        ClientCommand::Info(a) => server::info(a).await,
        ClientCommand::Health(a) => server::health(a).await,
        ClientCommand::Cluster(c) => cluster::execute(c).await,
    }
}
