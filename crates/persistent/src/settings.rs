//! A group's identity and settings. Defaults follow KurrentDB's server defaults, so its users
//! find what they expect; the limits keep one group from holding unbounded memory.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_engine::{EventFilter, FilterOn};

use crate::error::{Error, Result};

/// What a group consumes: one stream, or the whole log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    Stream(String),
    All,
}

impl Target {
    /// `"$all"` names the whole log; anything else is a stream.
    pub fn parse(name: &str) -> Target {
        if name == "$all" {
            Target::All
        } else {
            Target::Stream(name.to_owned())
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Target::Stream(s) => s,
            Target::All => "$all",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a new group starts. Used once, at creation; afterwards the checkpoint rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartFrom {
    Start,
    /// Only events appended after the group was created. Resolved to a concrete revision or
    /// position when the group is created, so a restart cannot skip events.
    End,
    /// Streams: this revision, inclusive.
    Revision(u64),
    /// `$all`: the event at this log position, inclusive.
    Position(u64),
}

/// How a group spreads messages over its consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ConsumerStrategy {
    /// Each message to the next consumer (in turn) that has room.
    #[default]
    RoundRobin,
    /// Fill the first consumer that has room, then the next.
    DispatchToSingle,
    /// Events of one stream always go to the same consumer while it stays connected (the
    /// stream name is hashed into 1024 buckets, each owned by one consumer).
    Pinned,
    /// Like `Pinned`, keyed by the `$correlationId` in the event's JSON metadata (the stream
    /// name when it has none).
    PinnedByCorrelation,
}

impl ConsumerStrategy {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerStrategy::RoundRobin => "round-robin",
            ConsumerStrategy::DispatchToSingle => "dispatch-to-single",
            ConsumerStrategy::Pinned => "pinned",
            ConsumerStrategy::PinnedByCorrelation => "pinned-by-correlation",
        }
    }

    /// Accepts our names and KurrentDB's (`RoundRobin`, `DispatchToSingle`, `Pinned`,
    /// `PinnedByCorrelation`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "roundrobin" => Some(ConsumerStrategy::RoundRobin),
            "dispatchtosingle" => Some(ConsumerStrategy::DispatchToSingle),
            "pinned" => Some(ConsumerStrategy::Pinned),
            "pinnedbycorrelation" => Some(ConsumerStrategy::PinnedByCorrelation),
            _ => None,
        }
    }
}

/// A `$all` filter, in a form that can be stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterSpec {
    /// True: on the event type; false: on the stream name.
    pub on_event_type: bool,
    pub prefixes: Vec<String>,
    /// Used when `prefixes` is empty.
    pub regex: String,
}

impl FilterSpec {
    pub fn build(&self) -> Result<EventFilter> {
        let on = if self.on_event_type {
            FilterOn::EventType
        } else {
            FilterOn::StreamName
        };
        let built = if self.prefixes.is_empty() {
            EventFilter::regex(on, &self.regex)
        } else {
            EventFilter::prefixes(on, self.prefixes.clone())
        };
        built.map_err(|e| Error::invalid("filter", e.to_string()))
    }
}

/// A group's settings. Every field has a default (see [`Settings::default`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub start_from: StartFrom,
    /// `$all` groups only.
    pub filter: Option<FilterSpec>,
    pub strategy: ConsumerStrategy,
    /// Deliveries after the first before a message is parked. 10.
    pub max_retry_count: u32,
    /// A message not acked or nacked within this many milliseconds is retried. 30 000;
    /// 0 disables the timeout.
    pub message_timeout_ms: u64,
    /// Upper bound on the messages one consumer holds unacknowledged (it may ask for fewer
    /// when it connects). 500.
    pub max_in_flight_per_consumer: u32,
    /// Messages read ahead and waiting for a consumer. 500.
    pub live_buffer_size: u32,
    /// Events per storage read. 20.
    pub read_batch_size: u32,
    /// Write the checkpoint after this many messages were settled... 1000.
    pub checkpoint_after_count: u32,
    /// ...or after this many milliseconds with at least one settled. 2000.
    pub checkpoint_after_ms: u64,
    /// 0: unlimited.
    pub max_consumers: u32,
    /// A time-based checkpoint waits for at least this many settled messages. 1.
    pub checkpoint_min_count: u32,
    /// Where `StartFrom::End` pointed when the group was created or its start was last set.
    pub resolved_start: Option<u64>,
    /// Kept for KurrentDB clients, which read their settings back; they change nothing here
    /// (Strata has no link events to resolve, and history is read straight from the log).
    pub history_buffer_size: u32,
    pub extra_statistics: bool,
    pub resolve_links: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            start_from: StartFrom::End,
            filter: None,
            strategy: ConsumerStrategy::RoundRobin,
            max_retry_count: 10,
            message_timeout_ms: 30_000,
            max_in_flight_per_consumer: 500,
            live_buffer_size: 500,
            read_batch_size: 20,
            checkpoint_after_count: 1000,
            checkpoint_after_ms: 2000,
            max_consumers: 0,
            checkpoint_min_count: 1,
            resolved_start: None,
            history_buffer_size: 500,
            extra_statistics: false,
            resolve_links: false,
        }
    }
}

/// Upper limits that keep one group's memory bounded.
pub const MAX_BUFFER: u32 = 100_000;
pub const MAX_READ_BATCH: u32 = 10_000;
pub const MAX_RETRIES: u32 = 1_000_000;

/// The shortest time a message is left with a consumer before it times out, whatever
/// `message_timeout_ms` says. Clients batch their acknowledgements (the KurrentDB clients for
/// up to 0.2 s) and KurrentDB checks timeouts about once a second, so clients are written for
/// an effective timeout of at least that: a shorter one would redeliver messages that were
/// acknowledged in time.
pub const MIN_MESSAGE_TIMEOUT: Duration = Duration::from_secs(1);

impl Settings {
    pub fn validate(&self, target: &Target) -> Result<()> {
        match (target, self.start_from) {
            (Target::Stream(_), StartFrom::Position(_)) => {
                return Err(Error::invalid(
                    "start_from",
                    "a stream group starts from a revision, not a log position",
                ))
            }
            (Target::All, StartFrom::Revision(_)) => {
                return Err(Error::invalid(
                    "start_from",
                    "a $all group starts from a log position, not a revision",
                ))
            }
            _ => {}
        }
        if let Some(filter) = &self.filter {
            if matches!(target, Target::Stream(_)) {
                return Err(Error::invalid(
                    "filter",
                    "filters apply to $all groups only; a stream group gets every event of its stream",
                ));
            }
            filter.build()?;
        }
        let range = |field: &'static str, v: u64, min: u64, max: u64| {
            if v < min || v > max {
                Err(Error::invalid(
                    field,
                    format!("{v} is outside the allowed range {min}..={max}"),
                ))
            } else {
                Ok(())
            }
        };
        range(
            "max_retry_count",
            self.max_retry_count.into(),
            0,
            MAX_RETRIES.into(),
        )?;
        range(
            "max_in_flight_per_consumer",
            self.max_in_flight_per_consumer.into(),
            1,
            MAX_BUFFER.into(),
        )?;
        range(
            "live_buffer_size",
            self.live_buffer_size.into(),
            1,
            MAX_BUFFER.into(),
        )?;
        range(
            "read_batch_size",
            self.read_batch_size.into(),
            1,
            MAX_READ_BATCH.into(),
        )?;
        if self.history_buffer_size < self.read_batch_size {
            return Err(Error::invalid(
                "history_buffer_size",
                format!(
                    "{} is smaller than read_batch_size ({}): the history buffer must hold at least one read batch",
                    self.history_buffer_size, self.read_batch_size
                ),
            ));
        }
        range(
            "checkpoint_after_count",
            self.checkpoint_after_count.into(),
            1,
            u32::MAX.into(),
        )?;
        range(
            "checkpoint_after_ms",
            self.checkpoint_after_ms,
            1,
            24 * 3600 * 1000,
        )?;
        range(
            "message_timeout_ms",
            self.message_timeout_ms,
            0,
            24 * 3600 * 1000,
        )?;
        Ok(())
    }

    /// How long a delivered message may go unacknowledged before it is delivered again:
    /// `message_timeout_ms`, but never less than [`MIN_MESSAGE_TIMEOUT`]; `None` when 0 (no
    /// timeout).
    pub fn message_timeout(&self) -> Option<Duration> {
        (self.message_timeout_ms > 0)
            .then(|| Duration::from_millis(self.message_timeout_ms).max(MIN_MESSAGE_TIMEOUT))
    }

    pub fn checkpoint_after(&self) -> Duration {
        Duration::from_millis(self.checkpoint_after_ms)
    }
}

/// A partial update: set fields replace the group's current values, unset ones keep them.
/// The start position is not here: it only matters when a group is created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsPatch {
    /// `Some(None)` removes the filter.
    pub filter: Option<Option<FilterSpec>>,
    pub strategy: Option<ConsumerStrategy>,
    pub max_retry_count: Option<u32>,
    pub message_timeout_ms: Option<u64>,
    pub max_in_flight_per_consumer: Option<u32>,
    pub live_buffer_size: Option<u32>,
    pub read_batch_size: Option<u32>,
    pub checkpoint_after_count: Option<u32>,
    pub checkpoint_after_ms: Option<u64>,
    pub max_consumers: Option<u32>,
    pub checkpoint_min_count: Option<u32>,
    /// A new start: only used while the group has no checkpoint (its position is kept).
    pub start_from: Option<StartFrom>,
    pub history_buffer_size: Option<u32>,
    pub extra_statistics: Option<bool>,
    pub resolve_links: Option<bool>,
}

impl SettingsPatch {
    pub fn apply(&self, to: &Settings) -> Settings {
        let mut s = to.clone();
        if let Some(f) = &self.filter {
            s.filter = f.clone();
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { s.$f = v; } )* };
        }
        set!(
            strategy,
            max_retry_count,
            message_timeout_ms,
            max_in_flight_per_consumer,
            live_buffer_size,
            read_batch_size,
            checkpoint_after_count,
            checkpoint_after_ms,
            max_consumers,
            checkpoint_min_count,
            start_from,
            history_buffer_size,
            extra_statistics,
            resolve_links
        );
        s
    }
}

/// Group names: what a user can type, and short enough for the system stream names.
pub fn validate_group_name(target: &Target, group: &str) -> Result<()> {
    if group.is_empty() {
        return Err(Error::invalid("group", "must not be empty"));
    }
    if group.chars().any(char::is_control) {
        return Err(Error::invalid(
            "group",
            "must not contain control characters",
        ));
    }
    // The checkpoint stream has the longest name; its metadata stream adds "$$".
    let longest = crate::store::checkpoint_stream(target, group)
        .len()
        .max(crate::store::parked_stream(target, group).len() + 2);
    if longest > strata_engine::MAX_STREAM_NAME {
        return Err(Error::invalid(
            "group",
            format!(
                "stream and group names together are too long: the group's system stream names would exceed {} bytes",
                strata_engine::MAX_STREAM_NAME
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_strategies_parse_both_spellings() {
        Settings::default().validate(&Target::All).unwrap();
        assert_eq!(
            ConsumerStrategy::parse("DispatchToSingle"),
            Some(ConsumerStrategy::DispatchToSingle)
        );
        assert_eq!(
            ConsumerStrategy::parse("round-robin"),
            Some(ConsumerStrategy::RoundRobin)
        );
        assert_eq!(ConsumerStrategy::parse("random"), None);
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let s = Settings {
            read_batch_size: 0,
            ..Settings::default()
        };
        let e = s.validate(&Target::All).unwrap_err().to_string();
        assert!(e.contains("read_batch_size"), "{e}");
        let s = Settings {
            start_from: StartFrom::Position(3),
            ..Settings::default()
        };
        let e = s
            .validate(&Target::Stream("s".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("start_from"), "{e}");
        let s = Settings {
            filter: Some(FilterSpec {
                on_event_type: true,
                prefixes: vec![],
                regex: "(".into(),
            }),
            ..Settings::default()
        };
        assert!(s.validate(&Target::All).is_err());
    }

    #[test]
    fn group_names_that_would_make_system_stream_names_too_long_are_refused() {
        let t = Target::Stream("orders".into());
        let fits = "g".repeat(strata_engine::MAX_STREAM_NAME - checkpoint_overhead("orders"));
        validate_group_name(&t, &fits).unwrap();
        let over = format!("{fits}g");
        let e = validate_group_name(&t, &over).unwrap_err().to_string();
        assert!(e.contains("too long"), "{e}");
        assert!(validate_group_name(&t, "").is_err());
    }

    fn checkpoint_overhead(stream: &str) -> usize {
        crate::store::checkpoint_stream(&Target::Stream(stream.into()), "").len()
    }

    #[test]
    fn a_history_buffer_smaller_than_a_read_batch_is_refused() {
        let s = Settings {
            read_batch_size: 200,
            history_buffer_size: 100,
            ..Settings::default()
        };
        let e = s.validate(&Target::All).unwrap_err().to_string();
        assert!(
            e.contains("history_buffer_size") && e.contains("read_batch_size"),
            "{e}"
        );
        let s = Settings {
            history_buffer_size: 200,
            ..s
        };
        s.validate(&Target::All).unwrap();
    }

    #[test]
    fn message_timeouts_are_at_least_a_second() {
        let with = |ms| Settings {
            message_timeout_ms: ms,
            ..Settings::default()
        };
        assert_eq!(with(0).message_timeout(), None);
        assert_eq!(with(100).message_timeout(), Some(MIN_MESSAGE_TIMEOUT));
        assert_eq!(
            with(2500).message_timeout(),
            Some(Duration::from_millis(2500))
        );
    }

    #[test]
    fn a_patch_changes_only_what_it_sets() {
        let base = Settings::default();
        let p = SettingsPatch {
            max_retry_count: Some(3),
            ..Default::default()
        };
        let s = p.apply(&base);
        assert_eq!(s.max_retry_count, 3);
        assert_eq!(s.read_batch_size, base.read_batch_size);
    }
}
