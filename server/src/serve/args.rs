//! The options of `strata serve`, and the parsers of their durations and sizes.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DurabilityArg {
    /// Acknowledge an append after fdatasync (survives power loss).
    Fsync,
    /// Acknowledge after the write reaches the OS page cache (survives a process crash, not a
    /// machine crash). For development.
    NoSync,
}

/// When the whole log is checked (framing, CRC, complete appends) at start-up. Opening checks
/// only what follows the index checkpoint, so that it does not take time proportional to the
/// store; this finds damage in the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyArg {
    /// Serve at once and check the whole log in the background; damage turns the store
    /// read-only (health NOT_SERVING) with the file and offset in the log and in every
    /// refused write.
    Background,
    /// Check the whole log before serving (health answers NOT_SERVING meanwhile); damage stops
    /// the server from starting, with the file and offset.
    Startup,
    /// Do not check (`strata verify` on a stopped server still can).
    Off,
}

/// Options of `strata serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory for the log and the index (created if missing).
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "./strata-data")]
    pub data_dir: PathBuf,
    /// Address for gRPC. Port 0 picks a free port; the bound address is logged.
    #[arg(long, env = "STRATA_LISTEN", default_value = "127.0.0.1:2113")]
    pub listen: SocketAddr,
    /// When an append is acknowledged.
    #[arg(long, env = "STRATA_DURABILITY", value_enum, default_value = "fsync")]
    pub durability: DurabilityArg,
    /// Size at which a log segment is closed and a new one started (e.g. 256MiB).
    #[arg(long, env = "STRATA_SEGMENT_SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub segment_size: u64,
    /// Largest accepted append, all its events encoded (e.g. 1MiB).
    #[arg(long, env = "STRATA_MAX_APPEND_SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub max_append_size: u64,
    /// Memory for the index's page cache (e.g. 64MiB).
    #[arg(long, env = "STRATA_INDEX_CACHE_SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub index_cache_size: u64,
    /// Address for the Prometheus endpoint (http://ADDR/metrics), or `off`.
    #[arg(long, env = "STRATA_METRICS_LISTEN", default_value = "off", value_parser = crate::metrics::parse_listen)]
    pub metrics_listen: crate::metrics::ListenAddr,
    /// When the whole log is checked for damage (open itself checks only what follows the
    /// index checkpoint).
    #[arg(
        long,
        env = "STRATA_VERIFY_LOG",
        value_enum,
        default_value = "background"
    )]
    pub verify_log: VerifyArg,
    /// Serve a store even though it holds evidence that acknowledged data is gone (a missing
    /// segment, or an index that recorded more of the log than is left). Without it such a
    /// store refuses to start and says what is missing. With it the index is rebuilt from what
    /// is left, and the lost events' revisions are given to new events.
    #[arg(long, env = "STRATA_ACCEPT_DATA_LOSS")]
    pub accept_data_loss: bool,
    /// Most client connections open at once; one more is closed as soon as it is accepted.
    #[arg(long, env = "STRATA_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Time a new connection has to send the HTTP/2 preface before it is closed (e.g. 10s).
    #[arg(long, env = "STRATA_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: std::time::Duration,
    /// Most persistent subscription groups the server holds; creating one more is refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "STRATA_MAX_GROUPS", default_value_t = strata_persistent::manager::DEFAULT_MAX_GROUPS)]
    pub max_groups: usize,
    /// Memory that all clients together may make the server hold while it waits on them
    /// (read pages and subscription messages not yet taken, appends not yet answered), e.g.
    /// 1GiB. Past it, appends and subscriptions wait and reads wait up to 10 s, then fail with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "STRATA_MEMORY_BUDGET", default_value = "1GiB", value_parser = parse_size)]
    pub memory_budget: u64,
    /// Memory the buffers of all consumer groups together may hold (events read ahead of
    /// their consumers), e.g. 256MiB. Past it, groups stop reading ahead until consumers
    /// acknowledge; a group holding nothing still reads one event at a time.
    #[arg(long, env = "STRATA_GROUP_BUFFER_MEMORY", default_value = "256MiB", value_parser = parse_size)]
    pub group_buffer_memory: u64,
    /// Host name (or address) KurrentDB gossip advertises for this node, e.g. the name in
    /// the server's certificate or the one clients reach it by behind a port mapping. Default:
    /// the host each client asked for (the request's authority), else the address its
    /// connection reached.
    #[arg(long, env = "STRATA_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// Port KurrentDB gossip advertises (default: the port each client asked for, else the
    /// port its connection reached).
    #[arg(long, env = "STRATA_ADVERTISE_PORT")]
    pub advertise_port: Option<u16>,
    /// Keep the derived streams `$ce-<category>` and `$et-<event type>` (read-only, served on
    /// both APIs, admin-only by default like other `$` streams). They are index entries, not
    /// records: the log does not grow, appends cost more index work. Turning it on for an
    /// existing store builds them from the log at start-up.
    #[arg(long, env = "STRATA_DERIVED_STREAMS")]
    pub derived_streams: bool,
    /// Character that ends a stream's category in its name (`order-1` is in `$ce-order`).
    #[arg(long, env = "STRATA_CATEGORY_SEPARATOR", default_value_t = '-')]
    pub category_separator: char,
    /// Take the category up to the last separator instead of the first (`shop-order-1` is
    /// then in `$ce-shop-order`). Changing the rule rebuilds the derived streams at start-up.
    #[arg(long, env = "STRATA_CATEGORY_FROM_LAST")]
    pub category_from_last: bool,
    #[command(flatten)]
    pub security: crate::auth::mode::SecurityArgs,

    #[command(flatten)]
    pub cluster: crate::cluster::ClusterArgs,
}

/// Parses `500ms`, `10s`, `2m` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 500ms, 10s, 2m)"))?;
    let ms = match unit.trim() {
        "ms" => n,
        "" | "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        other => return Err(format!("unknown duration unit {other:?} (use ms, s or m)")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

/// Parses `1024`, `64KiB`, `256MiB`, `1GiB` (also `K`, `M`, `G`, `KB`, `MB`, `GB` as powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 4096, 64KiB, 256MiB, 1GiB)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_size};

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("1h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
