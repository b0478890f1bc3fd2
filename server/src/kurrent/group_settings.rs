//! KurrentDB's persistent-subscription messages as Strata's group settings and back:
//! strategies, the settings shared by create and update, filters, positions and group info.

use strata_kurrentdb_proto::event_store::client::persistent_subscriptions as kp;
use strata_persistent::{
    ConsumerStrategy, FilterSpec, GroupInfo, GroupStatus, SettingsPatch, StartFrom, Target,
};
use tonic::Status;

use super::to_commit;

/// An unknown strategy is refused with INTERNAL, as KurrentDB does (its clients map that code
/// to their own error type).
pub(super) fn strategy(name: &str, named: i32) -> Result<ConsumerStrategy, Status> {
    if name.is_empty() {
        return match named {
            0 => Ok(ConsumerStrategy::DispatchToSingle),
            1 => Ok(ConsumerStrategy::RoundRobin),
            2 => Ok(ConsumerStrategy::Pinned),
            n => Err(Status::internal(format!(
                "named_consumer_strategy {n} is not a consumer strategy (0: DispatchToSingle, 1: RoundRobin, 2: Pinned)"
            ))),
        };
    }
    ConsumerStrategy::parse(name).ok_or_else(|| {
        Status::internal(format!(
            "consumer strategy {name:?} is not supported: use RoundRobin, DispatchToSingle, Pinned or PinnedByCorrelation"
        ))
    })
}

pub(super) fn strategy_name(s: ConsumerStrategy) -> &'static str {
    match s {
        ConsumerStrategy::RoundRobin => "RoundRobin",
        ConsumerStrategy::DispatchToSingle => "DispatchToSingle",
        ConsumerStrategy::Pinned => "Pinned",
        ConsumerStrategy::PinnedByCorrelation => "PinnedByCorrelation",
    }
}

/// The fields shared by the create and update settings messages.
pub(super) struct Common {
    pub(super) message_timeout_ms: Option<u64>,
    pub(super) checkpoint_after_ms: Option<u64>,
    pub(super) max_retry_count: i32,
    pub(super) max_checkpoint_count: i32,
    pub(super) max_subscriber_count: i32,
    pub(super) live_buffer_size: i32,
    pub(super) read_batch_size: i32,
    pub(super) min_checkpoint_count: i32,
    pub(super) history_buffer_size: i32,
    pub(super) extra_statistics: bool,
    pub(super) resolve_links: bool,
}

pub(super) fn ms_or_ticks(ms: Option<i32>, ticks: Option<i64>) -> Option<u64> {
    match (ms, ticks) {
        (Some(ms), _) => Some(ms.max(0) as u64),
        (None, Some(t)) => Some((t.max(0) / 10_000) as u64),
        (None, None) => None,
    }
}

pub(super) fn patch(c: &Common) -> SettingsPatch {
    let positive = |v: i32| (v > 0).then_some(v as u32);
    SettingsPatch {
        filter: None,
        strategy: None,
        max_retry_count: Some(c.max_retry_count.max(0) as u32),
        message_timeout_ms: c.message_timeout_ms,
        max_in_flight_per_consumer: None,
        live_buffer_size: positive(c.live_buffer_size),
        read_batch_size: positive(c.read_batch_size),
        checkpoint_after_count: positive(c.max_checkpoint_count),
        checkpoint_after_ms: c.checkpoint_after_ms.map(|ms| ms.max(1)),
        max_consumers: Some(c.max_subscriber_count.max(0) as u32),
        checkpoint_min_count: positive(c.min_checkpoint_count),
        start_from: None,
        history_buffer_size: positive(c.history_buffer_size),
        extra_statistics: Some(c.extra_statistics),
        resolve_links: Some(c.resolve_links),
    }
}

/// The create and update requests carry the same settings in two generated types.
macro_rules! common_of {
    ($s:expr, $module:ident) => {{
        use kp::$module::settings::{CheckpointAfter, MessageTimeout};
        let s = $s;
        Common {
            message_timeout_ms: match s.message_timeout {
                Some(MessageTimeout::MessageTimeoutMs(ms)) => ms_or_ticks(Some(ms), None),
                Some(MessageTimeout::MessageTimeoutTicks(t)) => ms_or_ticks(None, Some(t)),
                None => None,
            },
            checkpoint_after_ms: match s.checkpoint_after {
                Some(CheckpointAfter::CheckpointAfterMs(ms)) => ms_or_ticks(Some(ms), None),
                Some(CheckpointAfter::CheckpointAfterTicks(t)) => ms_or_ticks(None, Some(t)),
                None => None,
            },
            max_retry_count: s.max_retry_count,
            max_checkpoint_count: s.max_checkpoint_count,
            max_subscriber_count: s.max_subscriber_count,
            live_buffer_size: s.live_buffer_size,
            read_batch_size: s.read_batch_size,
            min_checkpoint_count: s.min_checkpoint_count,
            history_buffer_size: s.history_buffer_size,
            extra_statistics: s.extra_statistics,
            resolve_links: s.resolve_links,
        }
    }};
}

pub(super) fn all_filter(f: kp::create_req::all_options::FilterOptions) -> Option<FilterSpec> {
    use kp::create_req::all_options::filter_options::Filter;
    let (on_event_type, e) = match f.filter? {
        Filter::StreamIdentifier(e) => (false, e),
        Filter::EventType(e) => (true, e),
    };
    if e.prefix.is_empty() && e.regex.is_empty() {
        return None;
    }
    // Prefixes win over a regex when both are sent.
    let regex = if e.prefix.is_empty() {
        e.regex
    } else {
        String::new()
    };
    Some(FilterSpec {
        on_event_type,
        prefixes: e.prefix,
        regex,
    })
}

pub(super) fn position_text(target: &Target, strata_position: Option<u64>) -> String {
    match (target, strata_position) {
        (Target::Stream(_), Some(r)) => r.to_string(),
        (Target::Stream(_), None) => "-1".into(),
        (Target::All, Some(p)) => format!("C:{c}/P:{c}", c = to_commit(p)),
        (Target::All, None) => "C:-1/P:-1".into(),
    }
}

pub(super) fn info_to_kurrent(i: GroupInfo) -> kp::SubscriptionInfo {
    let s = &i.settings;
    let start_from = match (&i.target, s.start_from) {
        (Target::Stream(_), StartFrom::Start) => "0".to_owned(),
        (Target::All, StartFrom::Start) => "C:0/P:0".to_owned(),
        (Target::Stream(_), StartFrom::End) | (Target::All, StartFrom::End) => {
            position_text(&i.target, None)
        }
        (_, StartFrom::Revision(r)) => r.to_string(),
        (_, StartFrom::Position(p)) => position_text(&Target::All, Some(p)),
    };
    let rate: f64 = i.consumers.iter().map(|c| c.ack_rate).sum();
    let total: u64 = i.consumers.iter().map(|c| c.acked).sum();
    kp::SubscriptionInfo {
        event_source: i.target.to_string(),
        group_name: i.group.clone(),
        status: match i.status {
            GroupStatus::Live => "Live",
            GroupStatus::CatchingUp => "CatchingUp",
            GroupStatus::Idle => "Idle",
            GroupStatus::StreamDeleted => "StreamDeleted",
        }
        .into(),
        connections: i
            .consumers
            .iter()
            .map(|c| kp::subscription_info::ConnectionInfo {
                from: c.name.clone(),
                username: String::new(),
                average_items_per_second: c.ack_rate as i32,
                total_items: c.acked as i64,
                count_since_last_measurement: 0,
                observed_measurements: Vec::new(),
                available_slots: c.capacity.saturating_sub(c.in_flight) as i32,
                in_flight_messages: c.in_flight as i32,
                connection_name: format!("{}#{}", c.name, c.id),
            })
            .collect(),
        average_per_second: rate as i32,
        total_items: total as i64,
        count_since_last_measurement: 0,
        last_checkpointed_event_position: match i.last_checkpoint {
            Some(cp) if cp > 0 => match &i.target {
                Target::Stream(_) => (cp - 1).to_string(),
                Target::All => format!("C:{cp}/P:{cp}"),
            },
            _ => String::new(),
        },
        last_known_event_position: i
            .last_delivered
            .map(|d| position_text(&i.target, Some(d)))
            .unwrap_or_default(),
        resolve_link_tos: s.resolve_links,
        start_from,
        message_timeout_milliseconds: s.message_timeout_ms.min(i32::MAX as u64) as i32,
        extra_statistics: s.extra_statistics,
        max_retry_count: s.max_retry_count.min(i32::MAX as u32) as i32,
        live_buffer_size: s.live_buffer_size as i32,
        buffer_size: s.history_buffer_size as i32,
        read_batch_size: s.read_batch_size as i32,
        check_point_after_milliseconds: s.checkpoint_after_ms.min(i32::MAX as u64) as i32,
        min_check_point_count: s.checkpoint_min_count as i32,
        max_check_point_count: s.checkpoint_after_count.min(i32::MAX as u32) as i32,
        read_buffer_count: i.buffered as i32,
        live_buffer_count: i.buffered as i64,
        retry_buffer_count: i.retry_queued as i32,
        total_in_flight_messages: i.in_flight as i32,
        outstanding_messages_count: i.in_flight as i32,
        named_consumer_strategy: strategy_name(s.strategy).into(),
        max_subscriber_count: s.max_consumers as i32,
        parked_message_count: i.parked as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_strategies_outside_the_enum_are_refused() {
        assert_eq!(strategy("", 0).unwrap(), ConsumerStrategy::DispatchToSingle);
        assert_eq!(strategy("", 1).unwrap(), ConsumerStrategy::RoundRobin);
        assert_eq!(strategy("", 2).unwrap(), ConsumerStrategy::Pinned);
        let err = strategy("", 9).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert!(err.message().contains("named_consumer_strategy 9"));
        assert!(strategy("Nope", 0).is_err());
    }
}
