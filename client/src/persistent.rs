//! Persistent subscriptions: consumer groups coordinated by the server.
//!
//! ```no_run
//! # async fn demo(client: strata_client::Client) -> strata_client::Result<()> {
//! use strata_client::{GroupMessage, GroupSettings, GroupStart};
//! let settings = GroupSettings { start_from: Some(GroupStart::Start), ..Default::default() };
//! client.create_group("orders", "billing", settings).await?;
//! let mut consumer = client.consume_group("orders", "billing", 64).await?;
//! while let Some(message) = consumer.next().await {
//!     if let GroupMessage::Event(e) = message? {
//!         // ... process e.event ...
//!         consumer.ack(&[e.event.id]).await?;
//!     }
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use crate::transport::Transport as Channel;
use strata_proto::v1::{
    self, consume_request, consume_response, group_settings::StartFrom as ProtoStart,
    persistent_subscriptions_client::PersistentSubscriptionsClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Streaming};
use uuid::Uuid;

use crate::{Client, Error, Filter, RecordedEvent, Result};

/// Where a new group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStart {
    Start,
    /// Only events appended after the group is created (the default).
    End,
    /// Stream groups: this revision, inclusive.
    Revision(u64),
    /// `$all` groups: the event at this log position, inclusive.
    Position(u64),
}

/// How a group spreads messages over its consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerStrategy {
    RoundRobin,
    DispatchToSingle,
    /// Events of one stream always go to the same consumer while it stays connected.
    Pinned,
    /// Like `Pinned`, keyed by the `$correlationId` of the event's JSON metadata.
    PinnedByCorrelation,
}

/// A group's settings. `None` takes the server default on create and keeps the current value
/// on update; [`GroupInfo::settings`] has every field set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupSettings {
    pub start_from: Option<GroupStart>,
    /// `$all` groups only. On update, a filter with no prefixes and no regex removes it.
    pub filter: Option<Filter>,
    pub strategy: Option<ConsumerStrategy>,
    pub max_retry_count: Option<u32>,
    /// `Duration::ZERO` disables the timeout.
    pub message_timeout: Option<Duration>,
    pub max_in_flight_per_consumer: Option<u32>,
    pub live_buffer_size: Option<u32>,
    pub read_batch_size: Option<u32>,
    pub checkpoint_after_count: Option<u32>,
    pub checkpoint_after: Option<Duration>,
    /// 0: unlimited.
    pub max_consumers: Option<u32>,
}

impl GroupSettings {
    fn into_proto(self) -> v1::GroupSettings {
        v1::GroupSettings {
            start_from: self.start_from.map(|s| match s {
                GroupStart::Start => ProtoStart::Start(v1::Empty {}),
                GroupStart::End => ProtoStart::End(v1::Empty {}),
                GroupStart::Revision(r) => ProtoStart::Revision(r),
                GroupStart::Position(p) => ProtoStart::Position(p),
            }),
            filter: self.filter.map(Filter::into_proto),
            strategy: match self.strategy {
                None => v1::ConsumerStrategy::Unspecified,
                Some(ConsumerStrategy::RoundRobin) => v1::ConsumerStrategy::RoundRobin,
                Some(ConsumerStrategy::DispatchToSingle) => v1::ConsumerStrategy::DispatchToSingle,
                Some(ConsumerStrategy::Pinned) => v1::ConsumerStrategy::Pinned,
                Some(ConsumerStrategy::PinnedByCorrelation) => {
                    v1::ConsumerStrategy::PinnedByCorrelation
                }
            } as i32,
            max_retry_count: self.max_retry_count,
            message_timeout_ms: self.message_timeout.map(|d| d.as_millis() as u64),
            max_in_flight_per_consumer: self.max_in_flight_per_consumer,
            live_buffer_size: self.live_buffer_size,
            read_batch_size: self.read_batch_size,
            checkpoint_after_count: self.checkpoint_after_count,
            checkpoint_after_ms: self.checkpoint_after.map(|d| d.as_millis() as u64),
            max_consumers: self.max_consumers,
        }
    }

    fn from_proto(s: v1::GroupSettings) -> Self {
        GroupSettings {
            start_from: s.start_from.map(|s| match s {
                ProtoStart::Start(_) => GroupStart::Start,
                ProtoStart::End(_) => GroupStart::End,
                ProtoStart::Revision(r) => GroupStart::Revision(r),
                ProtoStart::Position(p) => GroupStart::Position(p),
            }),
            filter: s.filter.map(|f| Filter {
                on_event_type: f.on == v1::FilterOn::EventType as i32,
                prefixes: f.prefixes,
                regex: (!f.regex.is_empty()).then_some(f.regex),
                checkpoint_interval: 0,
            }),
            strategy: match v1::ConsumerStrategy::try_from(s.strategy) {
                Ok(v1::ConsumerStrategy::DispatchToSingle) => {
                    Some(ConsumerStrategy::DispatchToSingle)
                }
                Ok(v1::ConsumerStrategy::Pinned) => Some(ConsumerStrategy::Pinned),
                Ok(v1::ConsumerStrategy::PinnedByCorrelation) => {
                    Some(ConsumerStrategy::PinnedByCorrelation)
                }
                _ => Some(ConsumerStrategy::RoundRobin),
            },
            max_retry_count: s.max_retry_count,
            message_timeout: s.message_timeout_ms.map(Duration::from_millis),
            max_in_flight_per_consumer: s.max_in_flight_per_consumer,
            live_buffer_size: s.live_buffer_size,
            read_batch_size: s.read_batch_size,
            checkpoint_after_count: s.checkpoint_after_count,
            checkpoint_after: s.checkpoint_after_ms.map(Duration::from_millis),
            max_consumers: s.max_consumers,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStatus {
    Idle,
    CatchingUp,
    Live,
    StreamDeleted,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerInfo {
    pub id: u64,
    pub name: String,
    pub capacity: u32,
    pub in_flight: u32,
    pub acked: u64,
    pub nacked: u64,
    pub ack_rate: f64,
    pub connected: Duration,
}

/// A group's state. Positions are revisions for stream groups and log positions for `$all`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    pub stream: String,
    pub group: String,
    pub settings: GroupSettings,
    pub status: GroupStatus,
    pub consumers: Vec<ConsumerInfo>,
    /// The last durably written checkpoint.
    pub last_checkpoint: Option<u64>,
    /// Every event before this is settled (acked, skipped or parked).
    pub settled_up_to: u64,
    pub last_delivered: Option<u64>,
    pub read_position: u64,
    pub in_flight: u64,
    pub buffered: u64,
    pub retry_queued: u64,
    pub parked: u64,
    /// Events between `settled_up_to` and the log end.
    pub lag: u64,
    pub lag_is_lower_bound: bool,
}

impl GroupInfo {
    fn from_proto(i: v1::GroupInfo) -> Self {
        GroupInfo {
            stream: i.stream,
            group: i.group,
            settings: GroupSettings::from_proto(i.settings.unwrap_or_default()),
            status: match v1::GroupStatus::try_from(i.status) {
                Ok(v1::GroupStatus::CatchingUp) => GroupStatus::CatchingUp,
                Ok(v1::GroupStatus::Live) => GroupStatus::Live,
                Ok(v1::GroupStatus::StreamDeleted) => GroupStatus::StreamDeleted,
                _ => GroupStatus::Idle,
            },
            consumers: i
                .consumers
                .into_iter()
                .map(|c| ConsumerInfo {
                    id: c.id,
                    name: c.name,
                    capacity: c.capacity,
                    in_flight: c.in_flight,
                    acked: c.acked,
                    nacked: c.nacked,
                    ack_rate: c.ack_rate,
                    connected: Duration::from_secs(c.connected_seconds),
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
}

/// What to do with a message that could not be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackAction {
    /// Deliver again after `delay` with a higher retry count (parked once retries run out).
    Retry {
        delay: Duration,
    },
    Park,
    /// Treat as done.
    Skip,
    /// Disconnect this consumer; its in-flight messages go to the others.
    Stop,
}

/// An event delivered to a group consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEvent {
    pub event: RecordedEvent,
    /// 0 on the first delivery.
    pub retry_count: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GroupMessage {
    Event(GroupEvent),
    /// The server ignored acks or nacks for these IDs (not in flight in the group).
    Rejected {
        event_ids: Vec<String>,
        reason: String,
    },
}

/// A connected group consumer. Dropping it disconnects; its unacknowledged messages go to
/// the group's other consumers.
pub struct GroupConsumer {
    id: u64,
    requests: mpsc::Sender<v1::ConsumeRequest>,
    responses: Streaming<v1::ConsumeResponse>,
}

impl GroupConsumer {
    /// The server's ID for this consumer (shown in [`GroupInfo::consumers`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next message; `None` when the server ended the stream normally (after a
    /// [`NackAction::Stop`]). Errors end it too: the group was deleted
    /// ([`Error::GroupDeleted`]) or the server is going away ([`Error::Unavailable`]).
    pub async fn next(&mut self) -> Option<Result<GroupMessage>> {
        loop {
            match self.responses.message().await {
                Err(status) => return Some(Err(Error::from(status))),
                Ok(None) => return None,
                Ok(Some(v1::ConsumeResponse { message })) => match message {
                    Some(consume_response::Message::Event(e)) => {
                        let Some(event) = e.event else { continue };
                        return Some(Ok(GroupMessage::Event(GroupEvent {
                            event: RecordedEvent::from_proto(event),
                            retry_count: e.retry_count,
                        })));
                    }
                    Some(consume_response::Message::Rejected(r)) => {
                        return Some(Ok(GroupMessage::Rejected {
                            event_ids: r.event_ids,
                            reason: r.reason,
                        }))
                    }
                    Some(consume_response::Message::Connected(_)) | None => continue,
                },
            }
        }
    }

    async fn send(&self, m: consume_request::Message) -> Result<()> {
        self.requests
            .send(v1::ConsumeRequest { message: Some(m) })
            .await
            .map_err(|_| Error::Unavailable("the consumer's connection is closed".into()))
    }

    /// Acknowledges processed messages.
    pub async fn ack(&self, ids: &[Uuid]) -> Result<()> {
        self.send(consume_request::Message::Ack(consume_request::Ack {
            event_ids: ids.iter().map(Uuid::to_string).collect(),
        }))
        .await
    }

    /// Reports messages that could not be processed.
    pub async fn nack(&self, ids: &[Uuid], action: NackAction, reason: &str) -> Result<()> {
        let (action, delay) = match action {
            NackAction::Retry { delay } => (v1::NackAction::Retry, delay),
            NackAction::Park => (v1::NackAction::Park, Duration::ZERO),
            NackAction::Skip => (v1::NackAction::Skip, Duration::ZERO),
            NackAction::Stop => (v1::NackAction::Stop, Duration::ZERO),
        };
        self.send(consume_request::Message::Nack(consume_request::Nack {
            event_ids: ids.iter().map(Uuid::to_string).collect(),
            action: action as i32,
            reason: reason.to_owned(),
            retry_delay_ms: delay.as_millis() as u64,
        }))
        .await
    }
}

impl Client {
    fn groups(&self) -> PersistentSubscriptionsClient<Channel> {
        PersistentSubscriptionsClient::new(self.channel.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    /// Creates a consumer group on a stream, or on `"$all"`.
    pub async fn create_group(
        &self,
        stream: &str,
        group: &str,
        settings: GroupSettings,
    ) -> Result<()> {
        self.groups()
            .create_group(self.unary(v1::CreateGroupRequest {
                stream: stream.into(),
                group: group.into(),
                settings: Some(settings.into_proto()),
            }))
            .await?;
        Ok(())
    }

    /// Changes the set fields of a group's settings (the start position is ignored). The
    /// group keeps its position and consumers. Returns the resulting settings.
    pub async fn update_group(
        &self,
        stream: &str,
        group: &str,
        settings: GroupSettings,
    ) -> Result<GroupSettings> {
        let r = self
            .groups()
            .update_group(self.unary(v1::UpdateGroupRequest {
                stream: stream.into(),
                group: group.into(),
                settings: Some(settings.into_proto()),
            }))
            .await?;
        Ok(GroupSettings::from_proto(
            r.into_inner().settings.unwrap_or_default(),
        ))
    }

    /// Deletes a group; its consumers are disconnected with [`Error::GroupDeleted`].
    pub async fn delete_group(&self, stream: &str, group: &str) -> Result<()> {
        self.groups()
            .delete_group(self.unary(v1::DeleteGroupRequest {
                stream: stream.into(),
                group: group.into(),
            }))
            .await?;
        Ok(())
    }

    /// Every group, or those of one stream (`"$all"` for `$all` groups).
    pub async fn list_groups(&self, stream: Option<&str>) -> Result<Vec<GroupInfo>> {
        let r = self
            .groups()
            .list_groups(self.unary(v1::ListGroupsRequest {
                stream: stream.map(str::to_owned),
            }))
            .await?;
        Ok(r.into_inner()
            .groups
            .into_iter()
            .map(GroupInfo::from_proto)
            .collect())
    }

    pub async fn group_info(&self, stream: &str, group: &str) -> Result<GroupInfo> {
        let r = self
            .groups()
            .get_group_info(self.unary(v1::GetGroupInfoRequest {
                stream: stream.into(),
                group: group.into(),
            }))
            .await?;
        Ok(GroupInfo::from_proto(r.into_inner()))
    }

    /// Redelivers parked messages (at most `max`); returns how many were queued.
    pub async fn replay_parked(&self, stream: &str, group: &str, max: Option<u64>) -> Result<u64> {
        let r = self
            .groups()
            .replay_parked(self.unary(v1::ReplayParkedRequest {
                stream: stream.into(),
                group: group.into(),
                max_count: max,
            }))
            .await?;
        Ok(r.into_inner().queued)
    }

    /// Joins a group as a consumer that holds at most `capacity` unacknowledged messages.
    pub async fn consume_group(
        &self,
        stream: &str,
        group: &str,
        capacity: u32,
    ) -> Result<GroupConsumer> {
        self.consume_group_named(stream, group, capacity, "").await
    }

    /// Like [`Client::consume_group`], with a name shown in [`GroupInfo::consumers`].
    pub async fn consume_group_named(
        &self,
        stream: &str,
        group: &str,
        capacity: u32,
        name: &str,
    ) -> Result<GroupConsumer> {
        let (requests, rx) = mpsc::channel(64);
        requests
            .send(v1::ConsumeRequest {
                message: Some(consume_request::Message::Open(consume_request::Open {
                    stream: stream.into(),
                    group: group.into(),
                    capacity,
                    consumer_name: name.into(),
                })),
            })
            .await
            .map_err(|_| Error::Unavailable("request channel closed".into()))?;
        let mut responses = self
            .groups()
            .consume(Request::new(ReceiverStream::new(rx)))
            .await?
            .into_inner();
        let id = match responses.message().await? {
            Some(v1::ConsumeResponse {
                message: Some(consume_response::Message::Connected(c)),
            }) => c.consumer_id,
            other => {
                return Err(Error::Server {
                    code: tonic::Code::Internal,
                    message: format!("expected a consumer confirmation, got {other:?}"),
                })
            }
        };
        Ok(GroupConsumer {
            id,
            requests,
            responses,
        })
    }
}
