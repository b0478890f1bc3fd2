//! `event_store.client.persistent_subscriptions.PersistentSubscriptions`, mapped onto
//! Strata's consumer groups.

use std::sync::Arc;
use std::time::Duration;

use strata_kurrentdb_proto::event_store::client::{self as kc, persistent_subscriptions as kp};
use strata_persistent::{Delivery, Groups, NackAction, Settings, StartFrom, Target};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::group_settings::*;
use super::status::from_strata;
use super::{from_commit, stream_name, to_commit, uuid_from};
use crate::status::from_persistent;

pub struct KurrentPersistent {
    groups: Arc<Groups>,
    shutdown: watch::Receiver<bool>,
}

impl KurrentPersistent {
    pub fn new(groups: Arc<Groups>, shutdown: watch::Receiver<bool>) -> Self {
        KurrentPersistent { groups, shutdown }
    }
}

/// A record of a consumer group's delivery, as KurrentDB sends it.
fn recorded(p: super::EventParts) -> kp::read_resp::read_event::RecordedEvent {
    p.into()
}

fn err(e: strata_persistent::Error) -> Status {
    from_strata(from_persistent(e))
}

/// Create and update: KurrentDB refuses settings that are inconsistent with each other (a
/// history buffer smaller than a read batch) with INTERNAL, which its clients report as their
/// own error type; the message says what to change.
fn settings_err(e: strata_persistent::Error) -> Status {
    match e {
        strata_persistent::Error::InvalidArgument {
            field: "history_buffer_size",
            ..
        } => Status::internal(e.to_string()),
        e => err(e),
    }
}

fn target_of(id: Option<&kc::StreamIdentifier>, all: bool) -> Result<Target, Status> {
    if all {
        return Ok(Target::All);
    }
    // KurrentDB clients also name the log "$all" in a stream identifier (e.g. to list its groups).
    Ok(Target::parse(&stream_name(id)?))
}

/// Managing consumer groups takes `$ops` or `$admins`.
fn operator<T>(request: &Request<T>) -> Result<(), Status> {
    if crate::auth::access(request).is_operator() {
        Ok(())
    } else {
        Err(super::status::access_denied())
    }
}

#[tonic::async_trait]
impl kp::persistent_subscriptions_server::PersistentSubscriptions for KurrentPersistent {
    #[allow(deprecated)]
    async fn create(
        &self,
        request: Request<kp::CreateReq>,
    ) -> Result<Response<kp::CreateResp>, Status> {
        use kp::create_req::{
            all_options::{AllOption, FilterOption},
            options::StreamOption,
            stream_options::RevisionOption,
        };
        operator(&request)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("CreateReq.options is required"))?;
        let s = o.settings.clone().unwrap_or_default();
        let mut settings = patch(&common_of!(&s, create_req)).apply(&Settings::default());
        settings.strategy = strategy(&s.consumer_strategy, s.named_consumer_strategy)?;
        #[allow(deprecated)]
        let (target, start) = match o.stream_option {
            Some(StreamOption::Stream(so)) => (
                Target::Stream(stream_name(so.stream_identifier.as_ref())?),
                match so.revision_option {
                    Some(RevisionOption::Revision(r)) => StartFrom::Revision(r),
                    Some(RevisionOption::Start(_)) => StartFrom::Start,
                    Some(RevisionOption::End(_)) | None => StartFrom::End,
                },
            ),
            Some(StreamOption::All(a)) => {
                if let Some(FilterOption::Filter(f)) = a.filter_option {
                    settings.filter = all_filter(f);
                }
                (
                    Target::All,
                    match a.all_option {
                        Some(AllOption::Position(p)) => from_commit(p.commit_position)
                            .map_or(StartFrom::Start, StartFrom::Position),
                        Some(AllOption::Start(_)) => StartFrom::Start,
                        Some(AllOption::End(_)) | None => StartFrom::End,
                    },
                )
            }
            // Older clients: the deprecated stream identifier, from the deprecated revision.
            None => (
                Target::Stream(stream_name(o.stream_identifier.as_ref())?),
                StartFrom::Revision(s.revision),
            ),
        };
        settings.start_from = start;
        self.groups
            .create(target, &o.group_name, settings)
            .await
            .map_err(settings_err)?;
        Ok(Response::new(kp::CreateResp {}))
    }

    async fn update(
        &self,
        request: Request<kp::UpdateReq>,
    ) -> Result<Response<kp::UpdateResp>, Status> {
        use kp::update_req::options::StreamOption;
        operator(&request)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("UpdateReq.options is required"))?;
        #[allow(deprecated)]
        let target = match &o.stream_option {
            Some(StreamOption::Stream(so)) => target_of(so.stream_identifier.as_ref(), false)?,
            Some(StreamOption::All(_)) => Target::All,
            None => target_of(o.stream_identifier.as_ref(), false)?,
        };
        let s = o.settings.unwrap_or_default();
        let mut p = patch(&common_of!(&s, update_req));
        p.strategy = Some(strategy("", s.named_consumer_strategy)?);
        {
            use kp::update_req::{all_options::AllOption, stream_options::RevisionOption};
            p.start_from = match &o.stream_option {
                Some(StreamOption::Stream(so)) => so.revision_option.as_ref().map(|r| match r {
                    RevisionOption::Revision(r) => StartFrom::Revision(*r),
                    RevisionOption::Start(_) => StartFrom::Start,
                    RevisionOption::End(_) => StartFrom::End,
                }),
                Some(StreamOption::All(a)) => a.all_option.as_ref().map(|a| match a {
                    AllOption::Position(p) => {
                        from_commit(p.commit_position).map_or(StartFrom::Start, StartFrom::Position)
                    }
                    AllOption::Start(_) => StartFrom::Start,
                    AllOption::End(_) => StartFrom::End,
                }),
                None => None,
            };
        }
        self.groups
            .update(&target, &o.group_name, &p)
            .await
            .map_err(settings_err)?;
        Ok(Response::new(kp::UpdateResp {}))
    }

    async fn delete(
        &self,
        request: Request<kp::DeleteReq>,
    ) -> Result<Response<kp::DeleteResp>, Status> {
        use kp::delete_req::options::StreamOption;
        operator(&request)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("DeleteReq.options is required"))?;
        let target = match &o.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => target_of(Some(id), false)?,
            Some(StreamOption::All(_)) => Target::All,
            None => return Err(Status::invalid_argument("DeleteReq needs a stream or all")),
        };
        self.groups
            .delete(&target, &o.group_name)
            .await
            .map_err(err)?;
        Ok(Response::new(kp::DeleteResp {}))
    }

    type ReadStream = ReceiverStream<Result<kp::ReadResp, Status>>;

    async fn read(
        &self,
        request: Request<Streaming<kp::ReadReq>>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        use kp::read_req::{options::uuid_option::Content as U, options::StreamOption, Content};
        if *self.shutdown.borrow() {
            return Err(from_strata(crate::status::shutting_down()));
        }
        let who = crate::auth::access(&request);
        let mut input = request.into_inner();
        let o = match input.message().await? {
            Some(kp::ReadReq {
                content: Some(Content::Options(o)),
            }) => o,
            _ => {
                return Err(Status::invalid_argument(
                    "the first ReadReq must carry options",
                ))
            }
        };
        let target = match &o.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => target_of(Some(id), false)?,
            Some(StreamOption::All(_)) => Target::All,
            None => {
                return Err(Status::invalid_argument(
                    "ReadReq.options needs a stream or all",
                ))
            }
        };
        // Consuming a group takes read access to its source.
        let source = match &target {
            Target::All => "$all".to_owned(),
            Target::Stream(s) => s.clone(),
        };
        if !crate::auth::may(&who, strata_auth::Operation::Read, &source) {
            return Err(super::status::access_denied());
        }
        let structured = matches!(
            o.uuid_option.as_ref().and_then(|u| u.content.as_ref()),
            Some(U::Structured(_))
        );
        let capacity = o.buffer_size.max(1) as u32;
        // A group on a derived stream delivers links; the group's setting says whether the
        // linked events come with them.
        let resolve_links = self
            .groups
            .info(&target, &o.group_name)
            .await
            .map_err(err)?
            .settings
            .resolve_links;
        let consumer = self
            .groups
            .connect(&target, &o.group_name, "kurrentdb-client", capacity)
            .await
            .map_err(err)?;
        let (out, rx) = mpsc::channel(256);
        let _ = out
            .send(Ok(kp::ReadResp {
                content: Some(kp::read_resp::Content::SubscriptionConfirmation(
                    kp::read_resp::SubscriptionConfirmation {
                        subscription_id: format!("{}::{}", target, o.group_name),
                    },
                )),
            }))
            .await;
        let strata_persistent::Consumer {
            mut events,
            control,
            ..
        } = consumer;
        let mut shutdown = self.shutdown.clone();
        let refuse = out.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    d = events.next() => d,
                    _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => {
                        let _ = out.send(Err(from_strata(crate::status::shutting_down()))).await;
                        return;
                    }
                };
                let m = match next {
                    None => return,
                    // KurrentDB ignores acks of unknown IDs; so do its clients.
                    Some(Ok(Delivery::Rejected { .. })) => continue,
                    Some(Err(e)) => {
                        let _ = out.send(Err(err(e))).await;
                        return;
                    }
                    Some(Ok(Delivery::Event {
                        event,
                        retry_count,
                        listed,
                    })) => {
                        let e = crate::convert::delivered_to_proto(event, listed);
                        let position = e.position;
                        let (event, link) =
                            super::links::event_and_link(e, structured, resolve_links);
                        use kp::read_resp::read_event::{Count, Position};
                        kp::ReadResp {
                            content: Some(kp::read_resp::Content::Event(
                                kp::read_resp::ReadEvent {
                                    event: event.map(recorded),
                                    link: link.map(recorded),
                                    position: Some(Position::CommitPosition(to_commit(position))),
                                    count: Some(Count::RetryCount(
                                        retry_count.min(i32::MAX as u32) as i32,
                                    )),
                                },
                            )),
                        }
                    }
                };
                if out.send(Ok(m)).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            use kp::read_req::nack::Action;
            loop {
                let req = match crate::status::next_message(&mut input).await {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(status) => {
                        if status.code() != tonic::Code::Cancelled {
                            let _ = refuse.send(Err(status)).await;
                        }
                        break;
                    }
                };
                match req.content {
                    Some(Content::Ack(a)) => {
                        let ids: Vec<_> = a
                            .ids
                            .iter()
                            .filter_map(|u| uuid_from(Some(u)).ok().flatten())
                            .collect();
                        if !ids.is_empty() {
                            control.ack(ids);
                        }
                    }
                    Some(Content::Nack(n)) => {
                        let ids: Vec<_> = n
                            .ids
                            .iter()
                            .filter_map(|u| uuid_from(Some(u)).ok().flatten())
                            .collect();
                        let action = match Action::try_from(n.action) {
                            Ok(Action::Park) => NackAction::Park,
                            Ok(Action::Skip) => NackAction::Skip,
                            Ok(Action::Stop) => NackAction::Stop,
                            Ok(Action::Retry | Action::Unknown) => NackAction::Retry {
                                delay: Duration::ZERO,
                            },
                            Err(_) => {
                                let _ = refuse
                                    .send(Err(Status::invalid_argument(format!(
                                        "nack action {} is not an action (1: park, 2: retry, 3: skip, 4: stop)",
                                        n.action
                                    ))))
                                    .await;
                                break;
                            }
                        };
                        control.nack(ids, action, n.reason);
                    }
                    _ => {}
                }
            }
            drop(control);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_info(
        &self,
        request: Request<kp::GetInfoReq>,
    ) -> Result<Response<kp::GetInfoResp>, Status> {
        use kp::get_info_req::options::StreamOption;
        operator(&request)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("GetInfoReq.options is required"))?;
        let target = match &o.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => target_of(Some(id), false)?,
            Some(StreamOption::All(_)) => Target::All,
            None => return Err(Status::invalid_argument("GetInfoReq needs a stream or all")),
        };
        let info = self
            .groups
            .info(&target, &o.group_name)
            .await
            .map_err(err)?;
        Ok(Response::new(kp::GetInfoResp {
            subscription_info: Some(info_to_kurrent(info)),
        }))
    }

    async fn replay_parked(
        &self,
        request: Request<kp::ReplayParkedReq>,
    ) -> Result<Response<kp::ReplayParkedResp>, Status> {
        use kp::replay_parked_req::options::{StopAtOption, StreamOption};
        operator(&request)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("ReplayParkedReq.options is required"))?;
        let target = match &o.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => target_of(Some(id), false)?,
            Some(StreamOption::All(_)) => Target::All,
            None => {
                return Err(Status::invalid_argument(
                    "ReplayParkedReq needs a stream or all",
                ))
            }
        };
        let max = match o.stop_at_option {
            Some(StopAtOption::StopAt(n)) if n >= 0 => Some(n as u64),
            _ => None,
        };
        self.groups
            .replay_parked(&target, &o.group_name, max)
            .await
            .map_err(err)?;
        Ok(Response::new(kp::ReplayParkedResp {}))
    }

    async fn list(&self, request: Request<kp::ListReq>) -> Result<Response<kp::ListResp>, Status> {
        use kp::list_req::{options::ListOption, stream_option::StreamOption};
        operator(&request)?;
        let o = request.into_inner().options.unwrap_or_default();
        let target = match o.list_option {
            Some(ListOption::ListForStream(s)) => match s.stream_option {
                Some(StreamOption::Stream(id)) => Some(target_of(Some(&id), false)?),
                Some(StreamOption::All(_)) => Some(Target::All),
                None => None,
            },
            _ => None,
        };
        let groups = self.groups.list(target.as_ref()).await.map_err(err)?;
        Ok(Response::new(kp::ListResp {
            subscriptions: groups.into_iter().map(info_to_kurrent).collect(),
        }))
    }

    /// Every group writes its checkpoint and starts again from it; connected consumers are
    /// dropped (UNAVAILABLE) and may reconnect at once. Takes `$ops` or `$admins`.
    async fn restart_subsystem(
        &self,
        request: Request<kc::Empty>,
    ) -> Result<Response<kc::Empty>, Status> {
        operator(&request)?;
        self.groups.restart().await.map_err(err)?;
        Ok(Response::new(kc::Empty {}))
    }
}
