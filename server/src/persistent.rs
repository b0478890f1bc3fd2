//! The `strata.v1.PersistentSubscriptions` service: consumer groups, mapped onto
//! `strata_persistent::Groups`.

use std::sync::Arc;
use std::time::Duration;

use strata_persistent::{
    ConsumerStrategy, Delivery, FilterSpec, GroupInfo, GroupStatus, Groups, NackAction, Settings,
    SettingsPatch, StartFrom, Target,
};
use strata_proto::v1::{
    self, consume_request, consume_response, group_settings::StartFrom as ProtoStart,
    persistent_subscriptions_server::PersistentSubscriptions,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::status::{from_persistent, invalid, shutting_down};

/// Messages buffered towards one consumer's connection.
const CHANNEL: usize = 256;

pub struct PersistentService {
    groups: Arc<Groups>,
    shutdown: watch::Receiver<bool>,
}

impl PersistentService {
    pub fn new(groups: Arc<Groups>, shutdown: watch::Receiver<bool>) -> Self {
        PersistentService { groups, shutdown }
    }
}

fn target(stream: &str) -> Result<Target, Status> {
    if stream.is_empty() {
        return Err(invalid(
            "stream",
            "must not be empty (use \"$all\" for the log)",
        ));
    }
    Ok(Target::parse(stream))
}

fn strategy_from_proto(s: i32) -> Result<Option<ConsumerStrategy>, Status> {
    match v1::ConsumerStrategy::try_from(s) {
        Ok(v1::ConsumerStrategy::Unspecified) => Ok(None),
        Ok(v1::ConsumerStrategy::RoundRobin) => Ok(Some(ConsumerStrategy::RoundRobin)),
        Ok(v1::ConsumerStrategy::DispatchToSingle) => Ok(Some(ConsumerStrategy::DispatchToSingle)),
        Ok(v1::ConsumerStrategy::Pinned) => Ok(Some(ConsumerStrategy::Pinned)),
        Ok(v1::ConsumerStrategy::PinnedByCorrelation) => {
            Ok(Some(ConsumerStrategy::PinnedByCorrelation))
        }
        Err(_) => Err(invalid(
            "settings.strategy",
            format!("unknown consumer strategy {s}"),
        )),
    }
}

fn strategy_to_proto(s: ConsumerStrategy) -> v1::ConsumerStrategy {
    match s {
        ConsumerStrategy::RoundRobin => v1::ConsumerStrategy::RoundRobin,
        ConsumerStrategy::DispatchToSingle => v1::ConsumerStrategy::DispatchToSingle,
        ConsumerStrategy::Pinned => v1::ConsumerStrategy::Pinned,
        ConsumerStrategy::PinnedByCorrelation => v1::ConsumerStrategy::PinnedByCorrelation,
    }
}

/// `None`: no filter given. `Some(None)`: an empty filter (removes one on update).
fn filter_spec(f: Option<v1::Filter>) -> Result<Option<Option<FilterSpec>>, Status> {
    let Some(f) = f else { return Ok(None) };
    let on_event_type = match v1::FilterOn::try_from(f.on) {
        Ok(v1::FilterOn::StreamName) => false,
        Ok(v1::FilterOn::EventType) => true,
        Err(_) => {
            return Err(invalid(
                "settings.filter.on",
                format!("unknown filter target {}", f.on),
            ))
        }
    };
    match (f.prefixes.is_empty(), f.regex.is_empty()) {
        (true, true) => Ok(Some(None)),
        (false, false) => Err(invalid(
            "settings.filter",
            "set prefixes or regex, not both",
        )),
        _ => Ok(Some(Some(FilterSpec {
            on_event_type,
            prefixes: f.prefixes,
            regex: f.regex,
        }))),
    }
}

fn patch_from_proto(s: &v1::GroupSettings) -> Result<SettingsPatch, Status> {
    Ok(SettingsPatch {
        filter: filter_spec(s.filter.clone())?,
        strategy: strategy_from_proto(s.strategy)?,
        max_retry_count: s.max_retry_count,
        message_timeout_ms: s.message_timeout_ms,
        max_in_flight_per_consumer: s.max_in_flight_per_consumer,
        live_buffer_size: s.live_buffer_size,
        read_batch_size: s.read_batch_size,
        checkpoint_after_count: s.checkpoint_after_count,
        checkpoint_after_ms: s.checkpoint_after_ms,
        max_consumers: s.max_consumers,
        ..SettingsPatch::default()
    })
}

fn settings_from_proto(s: Option<v1::GroupSettings>) -> Result<Settings, Status> {
    let s = s.unwrap_or_default();
    let mut settings = patch_from_proto(&s)?.apply(&Settings::default());
    settings.start_from = match s.start_from {
        None | Some(ProtoStart::End(_)) => StartFrom::End,
        Some(ProtoStart::Start(_)) => StartFrom::Start,
        Some(ProtoStart::Revision(r)) => StartFrom::Revision(r),
        Some(ProtoStart::Position(p)) => StartFrom::Position(p),
    };
    Ok(settings)
}

fn settings_to_proto(s: Settings) -> v1::GroupSettings {
    v1::GroupSettings {
        start_from: Some(match s.start_from {
            StartFrom::Start => ProtoStart::Start(v1::Empty {}),
            StartFrom::End => ProtoStart::End(v1::Empty {}),
            StartFrom::Revision(r) => ProtoStart::Revision(r),
            StartFrom::Position(p) => ProtoStart::Position(p),
        }),
        filter: s.filter.map(|f| v1::Filter {
            on: if f.on_event_type {
                v1::FilterOn::EventType as i32
            } else {
                v1::FilterOn::StreamName as i32
            },
            prefixes: f.prefixes,
            regex: f.regex,
            checkpoint_interval: 0,
        }),
        strategy: strategy_to_proto(s.strategy) as i32,
        max_retry_count: Some(s.max_retry_count),
        message_timeout_ms: Some(s.message_timeout_ms),
        max_in_flight_per_consumer: Some(s.max_in_flight_per_consumer),
        live_buffer_size: Some(s.live_buffer_size),
        read_batch_size: Some(s.read_batch_size),
        checkpoint_after_count: Some(s.checkpoint_after_count),
        checkpoint_after_ms: Some(s.checkpoint_after_ms),
        max_consumers: Some(s.max_consumers),
    }
}

fn info_to_proto(i: GroupInfo) -> v1::GroupInfo {
    v1::GroupInfo {
        stream: i.target.to_string(),
        group: i.group,
        settings: Some(settings_to_proto(i.settings)),
        status: match i.status {
            GroupStatus::Idle => v1::GroupStatus::Idle,
            GroupStatus::CatchingUp => v1::GroupStatus::CatchingUp,
            GroupStatus::Live => v1::GroupStatus::Live,
            GroupStatus::StreamDeleted => v1::GroupStatus::StreamDeleted,
        } as i32,
        consumers: i
            .consumers
            .into_iter()
            .map(|c| v1::ConsumerInfo {
                id: c.id,
                name: c.name,
                capacity: c.capacity,
                in_flight: c.in_flight,
                acked: c.acked,
                nacked: c.nacked,
                ack_rate: c.ack_rate,
                connected_seconds: c.connected_for.as_secs(),
            })
            .collect(),
        last_checkpoint: i.last_checkpoint,
        settled_up_to: i.settled_up_to,
        last_delivered: i.last_delivered,
        read_position: i.read_position,
        in_flight: i.in_flight,
        buffered: i.buffered,
        retry_queued: i.retry_queued,
        parked: i.parked,
        lag: i.lag,
        lag_is_lower_bound: i.lag_is_lower_bound,
    }
}

/// Parses event IDs; the ones that are not UUIDs are returned separately.
fn parse_ids(ids: Vec<String>) -> (Vec<Uuid>, Vec<String>) {
    let mut good = Vec::with_capacity(ids.len());
    let mut bad = Vec::new();
    for s in ids {
        match Uuid::parse_str(&s) {
            Ok(u) => good.push(u),
            Err(_) => bad.push(s),
        }
    }
    (good, bad)
}

fn nack_action(action: i32, delay_ms: u64) -> Result<NackAction, Status> {
    match v1::NackAction::try_from(action) {
        Ok(v1::NackAction::Retry) => Ok(NackAction::Retry {
            delay: Duration::from_millis(delay_ms),
        }),
        Ok(v1::NackAction::Park) => Ok(NackAction::Park),
        Ok(v1::NackAction::Skip) => Ok(NackAction::Skip),
        Ok(v1::NackAction::Stop) => Ok(NackAction::Stop),
        Err(_) => Err(invalid(
            "nack.action",
            format!("unknown nack action {action}"),
        )),
    }
}

type Out = mpsc::Sender<Result<v1::ConsumeResponse, Status>>;

fn response(m: consume_response::Message) -> Result<v1::ConsumeResponse, Status> {
    Ok(v1::ConsumeResponse { message: Some(m) })
}

async fn reject(out: &Out, event_ids: Vec<String>, reason: String) {
    let _ = out
        .send(response(consume_response::Message::Rejected(
            v1::Rejected { event_ids, reason },
        )))
        .await;
}

#[tonic::async_trait]
impl PersistentSubscriptions for PersistentService {
    async fn create_group(
        &self,
        request: Request<v1::CreateGroupRequest>,
    ) -> Result<Response<v1::CreateGroupResponse>, Status> {
        crate::auth::require_operator(&request, "manage consumer groups")?;
        let r = request.into_inner();
        let t = target(&r.stream)?;
        let settings = settings_from_proto(r.settings)?;
        self.groups
            .create(t, &r.group, settings)
            .await
            .map_err(from_persistent)?;
        Ok(Response::new(v1::CreateGroupResponse {}))
    }

    async fn update_group(
        &self,
        request: Request<v1::UpdateGroupRequest>,
    ) -> Result<Response<v1::UpdateGroupResponse>, Status> {
        crate::auth::require_operator(&request, "manage consumer groups")?;
        let r = request.into_inner();
        let t = target(&r.stream)?;
        let patch = patch_from_proto(&r.settings.unwrap_or_default())?;
        let settings = self
            .groups
            .update(&t, &r.group, &patch)
            .await
            .map_err(from_persistent)?;
        Ok(Response::new(v1::UpdateGroupResponse {
            settings: Some(settings_to_proto(settings)),
        }))
    }

    async fn delete_group(
        &self,
        request: Request<v1::DeleteGroupRequest>,
    ) -> Result<Response<v1::DeleteGroupResponse>, Status> {
        crate::auth::require_operator(&request, "manage consumer groups")?;
        let r = request.into_inner();
        let t = target(&r.stream)?;
        self.groups
            .delete(&t, &r.group)
            .await
            .map_err(from_persistent)?;
        Ok(Response::new(v1::DeleteGroupResponse {}))
    }

    async fn list_groups(
        &self,
        request: Request<v1::ListGroupsRequest>,
    ) -> Result<Response<v1::ListGroupsResponse>, Status> {
        crate::auth::require_operator(&request, "list consumer groups")?;
        let r = request.into_inner();
        let t = r.stream.as_deref().map(target).transpose()?;
        let groups = self
            .groups
            .list(t.as_ref())
            .await
            .map_err(from_persistent)?;
        Ok(Response::new(v1::ListGroupsResponse {
            groups: groups.into_iter().map(info_to_proto).collect(),
        }))
    }

    async fn get_group_info(
        &self,
        request: Request<v1::GetGroupInfoRequest>,
    ) -> Result<Response<v1::GroupInfo>, Status> {
        crate::auth::require_operator(&request, "read consumer group information")?;
        let r = request.into_inner();
        let t = target(&r.stream)?;
        let info = self
            .groups
            .info(&t, &r.group)
            .await
            .map_err(from_persistent)?;
        Ok(Response::new(info_to_proto(info)))
    }

    async fn replay_parked(
        &self,
        request: Request<v1::ReplayParkedRequest>,
    ) -> Result<Response<v1::ReplayParkedResponse>, Status> {
        crate::auth::require_operator(&request, "manage consumer groups")?;
        let r = request.into_inner();
        let t = target(&r.stream)?;
        let queued = self
            .groups
            .replay_parked(&t, &r.group, r.max_count)
            .await
            .map_err(from_persistent)?;
        Ok(Response::new(v1::ReplayParkedResponse { queued }))
    }

    type ConsumeStream = ReceiverStream<Result<v1::ConsumeResponse, Status>>;

    async fn consume(
        &self,
        request: Request<Streaming<v1::ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        if *self.shutdown.borrow() {
            return Err(shutting_down());
        }
        let who = crate::auth::access(&request);
        let mut inbound = request.into_inner();
        let open = match inbound.message().await? {
            Some(v1::ConsumeRequest {
                message: Some(consume_request::Message::Open(open)),
            }) => open,
            _ => {
                return Err(invalid(
                    "message",
                    "the first message of Consume must be `open`",
                ))
            }
        };
        let t = target(&open.stream)?;
        // Consuming a group takes read access to its source.
        crate::auth::check_access(&who, strata_auth::Operation::Read, &open.stream)?;
        let name = if open.consumer_name.is_empty() {
            "consumer".to_owned()
        } else {
            open.consumer_name
        };
        let consumer = self
            .groups
            .connect(&t, &open.group, &name, open.capacity)
            .await
            .map_err(from_persistent)?;
        tracing::debug!(group = %open.group, target_stream = %t, consumer = consumer.id, "consumer connected");
        let (out, rx) = mpsc::channel(CHANNEL);
        let _ = out
            .send(response(consume_response::Message::Connected(
                v1::Connected {
                    consumer_id: consumer.id,
                },
            )))
            .await;
        let strata_persistent::Consumer {
            mut events,
            control,
            ..
        } = consumer;

        // Deliveries to the connection. The ack reader below holds only a weak sender, so the
        // response stream ends when this task does.
        let weak_out = out.downgrade();
        let to_client = out;
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    d = events.next() => d,
                    _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => {
                        let _ = to_client.send(Err(shutting_down())).await;
                        return;
                    }
                };
                let m = match next {
                    None => return,
                    Some(Ok(Delivery::Event {
                        event,
                        retry_count,
                        listed,
                    })) => response(consume_response::Message::Event(v1::PersistentEvent {
                        event: Some(crate::convert::delivered_to_proto(event, listed)),
                        retry_count,
                    })),
                    Some(Ok(Delivery::Rejected { event_ids, reason })) => {
                        response(consume_response::Message::Rejected(v1::Rejected {
                            event_ids: event_ids.iter().map(Uuid::to_string).collect(),
                            reason,
                        }))
                    }
                    Some(Err(e)) => {
                        let _ = to_client.send(Err(from_persistent(e))).await;
                        return;
                    }
                };
                if to_client.send(m).await.is_err() {
                    return;
                }
            }
        });

        // Acks and nacks from the connection. When it ends, `control` drops and the consumer
        // leaves the group: its in-flight messages go to the others.
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let Some(out) = weak_out.upgrade() else { break };
                match req.message {
                    Some(consume_request::Message::Ack(a)) => {
                        let (ids, bad) = parse_ids(a.event_ids);
                        if !bad.is_empty() {
                            reject(&out, bad, "ack: these event IDs are not UUIDs".into()).await;
                        }
                        if !ids.is_empty() {
                            control.ack(ids);
                        }
                    }
                    Some(consume_request::Message::Nack(n)) => {
                        let action = match nack_action(n.action, n.retry_delay_ms) {
                            Ok(a) => a,
                            Err(s) => {
                                reject(&out, n.event_ids, s.message().to_owned()).await;
                                continue;
                            }
                        };
                        let (ids, bad) = parse_ids(n.event_ids);
                        if !bad.is_empty() {
                            reject(&out, bad, "nack: these event IDs are not UUIDs".into()).await;
                        }
                        if !ids.is_empty() || action == NackAction::Stop {
                            control.nack(ids, action, n.reason);
                        }
                    }
                    Some(consume_request::Message::Open(_)) | None => {
                        reject(
                            &out,
                            Vec::new(),
                            "this connection is already open; send ack or nack".into(),
                        )
                        .await;
                    }
                }
            }
            drop(control);
        });

        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
