//! The registry of groups: one task per group (see `group`), created, changed and removed
//! here, with every change written to the config stream first. On a cluster node the groups
//! run only while the node leads ([`leadership`]).

use std::collections::HashMap;
use std::sync::Arc;

use strata_engine::{AllFrom, Direction, Engine, Error as EngineError};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::error::{Error, Result};
use crate::group::{Command, Group, GroupInfo, StopReason};
use crate::memory::BufferMemory;
use crate::settings::{validate_group_name, Settings, SettingsPatch, StartFrom, Target};
use crate::store::{self, ConfigEvent, ConfigKind};

mod consumer;
mod lag;
mod leadership;

pub use consumer::{Consumer, ConsumerControl, ConsumerEvents};

/// Groups a server holds, at most, unless configured otherwise ([`Groups::set_max_groups`]).
pub const DEFAULT_MAX_GROUPS: usize = 1000;

struct Handle {
    settings: Settings,
    incarnation: u64,
    tx: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
}

/// The running groups, by source and name.
type Running = HashMap<(Target, String), Handle>;

struct Registry {
    groups: Running,
    /// Last revision of the config stream, for the next write's expected revision.
    config_last: Option<u64>,
    closed: bool,
    /// A cluster node that does not lead: no group runs, and every request is refused.
    standby: bool,
}

impl Registry {
    /// Refuses requests once shut down, or while this node does not lead.
    fn usable(&self) -> Result<()> {
        if self.closed {
            return Err(Error::ShuttingDown);
        }
        if self.standby {
            return Err(Error::Engine(EngineError::NotLeader {
                reason: "consumer groups run on the cluster's leader, and this node is not the leader; connect to the leader".into(),
            }));
        }
        Ok(())
    }
}

/// All persistent-subscription groups of one store.
pub struct Groups {
    engine: Arc<Engine>,
    registry: Mutex<Registry>,
    max_groups: std::sync::atomic::AtomicUsize,
    memory: Arc<BufferMemory>,
}

fn not_found(target: &Target, group: &str) -> Error {
    Error::GroupNotFound {
        target: target.to_string(),
        group: group.to_owned(),
    }
}

fn validate_target(target: &Target) -> Result<()> {
    if let Target::Stream(s) = target {
        if s.is_empty() {
            return Err(Error::invalid("stream", "must not be empty"));
        }
        if s.len() > strata_engine::MAX_STREAM_NAME {
            return Err(Error::invalid(
                "stream",
                format!(
                    "is {} bytes, over the limit of {}",
                    s.len(),
                    strata_engine::MAX_STREAM_NAME
                ),
            ));
        }
        if s.starts_with("$persistentsubscription-") || s == store::CONFIG_STREAM {
            return Err(Error::invalid(
                "stream",
                "a group cannot consume the persistent subscriptions' own streams",
            ));
        }
    }
    Ok(())
}

impl Groups {
    /// Loads every group from the config stream and starts its task. Needs a tokio runtime.
    pub fn open(engine: Arc<Engine>) -> Result<Arc<Groups>> {
        let memory = Arc::new(BufferMemory::default());
        let (groups, config_last) = load_all(&engine, &memory)?;
        Ok(Arc::new(Groups {
            engine,
            registry: Mutex::new(Registry {
                groups,
                config_last,
                closed: false,
                standby: false,
            }),
            max_groups: DEFAULT_MAX_GROUPS.into(),
            memory,
        }))
    }

    /// Sets how many groups `create` allows in all (groups already stored all load, even past
    /// it).
    pub fn set_max_groups(&self, max: usize) {
        self.max_groups
            .store(max, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets the memory all groups' buffers together may hold (see [`crate::memory`]).
    pub fn set_buffer_memory(&self, bytes: usize) {
        self.memory.set_limit(bytes);
    }

    /// Bytes all groups' buffers hold now.
    pub fn buffer_memory_held(&self) -> usize {
        self.memory.held()
    }

    /// Creates a group. `StartFrom::End` is resolved now to a concrete revision or position.
    pub async fn create(&self, target: Target, group: &str, mut settings: Settings) -> Result<()> {
        validate_target(&target)?;
        validate_group_name(&target, group)?;
        settings.validate(&target)?;
        if let Target::Stream(s) = &target {
            if strata_engine::derived::is_derived(s) && self.engine.config().derived.is_none() {
                return Err(Error::DerivedStreamsOff { stream: s.clone() });
            }
        }
        self.check_filter(&settings)?;
        self.resolve_start(&target, &mut settings)?;
        let mut reg = self.registry.lock().await;
        reg.usable()?;
        let key = (target.clone(), group.to_owned());
        if reg.groups.contains_key(&key) {
            return Err(Error::GroupExists {
                target: target.to_string(),
                group: group.to_owned(),
            });
        }
        let max = self.max_groups.load(std::sync::atomic::Ordering::Relaxed);
        if reg.groups.len() >= max {
            return Err(Error::TooManyGroups { max });
        }
        // Parked messages of an earlier group of the same name are not this group's.
        let (start, end) = store::parked_range(&self.engine, &target, group)?;
        if end > start {
            store::trim_parked(&self.engine, &target, group, end).await?;
        }
        let change = ConfigEvent {
            target: target.clone(),
            group: group.to_owned(),
            settings: Some(settings.clone()),
        };
        let (rev, incarnation) =
            store::write_config(&self.engine, reg.config_last, ConfigKind::Created, &change)
                .await?;
        reg.config_last = Some(rev);
        match spawn(
            self.engine.clone(),
            self.memory.clone(),
            target.clone(),
            group.to_owned(),
            incarnation,
            settings,
        ) {
            Ok(handle) => {
                reg.groups.insert(key, handle);
                Ok(())
            }
            Err(e) => {
                // Take the create back, so a restart does not meet a group that cannot start.
                let undo = ConfigEvent {
                    target,
                    group: group.to_owned(),
                    settings: None,
                };
                if let Ok((rev, _)) =
                    store::write_config(&self.engine, reg.config_last, ConfigKind::Deleted, &undo)
                        .await
                {
                    reg.config_last = Some(rev);
                }
                Err(e)
            }
        }
    }

    /// Checks the start position and pins `End` to the current end (kept in
    /// `resolved_start`, so a restart cannot skip events).
    fn resolve_start(&self, target: &Target, settings: &mut Settings) -> Result<()> {
        let resolved = match (target, settings.start_from) {
            (Target::All, StartFrom::End) => StartFrom::Position(self.engine.log_end()),
            (Target::Stream(s), StartFrom::End) => {
                match self.engine.last_revision(s) {
                    Ok(last) => StartFrom::Revision(last + 1),
                    Err(EngineError::StreamNotFound { .. }) => {
                        // Never written, or soft-deleted: revisions continue after the last.
                        let last = self
                            .engine
                            .list_streams()
                            .into_iter()
                            .find(|i| &i.name == s)
                            .and_then(|i| i.last_revision);
                        StartFrom::Revision(last.map_or(0, |l| l + 1))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            (Target::All, StartFrom::Position(p)) => {
                let end = self.engine.log_end();
                if p > end {
                    return Err(Error::invalid(
                        "start_from",
                        format!("position {p} is beyond the end of the log ({end})"),
                    ));
                }
                if p < end {
                    match self
                        .engine
                        .read_all(AllFrom::Position(p), Direction::Forwards, 1, None)
                    {
                        Ok(_) => {}
                        Err(EngineError::InvalidPosition { .. }) => {
                            return Err(Error::invalid(
                                "start_from",
                                format!("position {p} is not the start of an event in the log"),
                            ))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                settings.start_from
            }
            (_, start) => start,
        };
        settings.resolved_start = match (settings.start_from, resolved) {
            (StartFrom::End, StartFrom::Position(p) | StartFrom::Revision(p)) => Some(p),
            _ => None,
        };
        Ok(())
    }

    /// Refuses a filter the engine cannot serve (an index filter on a store without them).
    fn check_filter(&self, settings: &Settings) -> Result<()> {
        if let Some(f) = settings.filter.as_ref().map(|f| f.build()).transpose()? {
            self.engine.check_filter(&f)?;
        }
        Ok(())
    }

    /// Changes a group's settings in place: its position, consumers and in-flight messages
    /// are kept. Returns the new settings.
    pub async fn update(
        &self,
        target: &Target,
        group: &str,
        patch: &SettingsPatch,
    ) -> Result<Settings> {
        let mut reg = self.registry.lock().await;
        reg.usable()?;
        let key = (target.clone(), group.to_owned());
        let current = reg
            .groups
            .get(&key)
            .ok_or_else(|| not_found(target, group))?
            .settings
            .clone();
        let mut new = patch.apply(&current);
        new.validate(target)?;
        self.check_filter(&new)?;
        if patch.start_from.is_some() {
            self.resolve_start(target, &mut new)?;
        }
        let change = ConfigEvent {
            target: target.clone(),
            group: group.to_owned(),
            settings: Some(new.clone()),
        };
        let (rev, _) =
            store::write_config(&self.engine, reg.config_last, ConfigKind::Updated, &change)
                .await?;
        reg.config_last = Some(rev);
        let handle = reg.groups.get_mut(&key).expect("checked above");
        handle.settings = new.clone();
        let _ = handle.tx.send(Command::Update {
            settings: new.clone(),
        });
        Ok(new)
    }

    /// Deletes a group: its consumers are disconnected with [`Error::GroupDeleted`], and its
    /// parked messages are dropped.
    pub async fn delete(&self, target: &Target, group: &str) -> Result<()> {
        let mut reg = self.registry.lock().await;
        reg.usable()?;
        let key = (target.clone(), group.to_owned());
        if !reg.groups.contains_key(&key) {
            return Err(not_found(target, group));
        }
        let change = ConfigEvent {
            target: target.clone(),
            group: group.to_owned(),
            settings: None,
        };
        let (rev, _) =
            store::write_config(&self.engine, reg.config_last, ConfigKind::Deleted, &change)
                .await?;
        reg.config_last = Some(rev);
        let handle = reg.groups.remove(&key).expect("checked above");
        stop(handle, StopReason::Deleted).await;
        let (start, end) = store::parked_range(&self.engine, target, group)?;
        if end > start {
            store::trim_parked(&self.engine, target, group, end).await?;
        }
        Ok(())
    }

    /// Connects a consumer that can hold `capacity` unacknowledged messages (capped by the
    /// group's `max_in_flight_per_consumer`).
    pub async fn connect(
        &self,
        target: &Target,
        group: &str,
        name: &str,
        capacity: u32,
    ) -> Result<Consumer> {
        let tx = {
            let reg = self.registry.lock().await;
            reg.usable()?;
            reg.groups
                .get(&(target.clone(), group.to_owned()))
                .ok_or_else(|| not_found(target, group))?
                .tx
                .clone()
        };
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (reply, rx) = oneshot::channel();
        tx.send(Command::Join {
            name: name.to_owned(),
            capacity,
            tx: events_tx,
            reply,
        })
        .map_err(|_| not_found(target, group))?;
        let id = rx.await.map_err(|_| not_found(target, group))??;
        Ok(Consumer {
            id,
            events: ConsumerEvents { rx: events_rx },
            control: ConsumerControl { id, tx },
        })
    }

    /// Queues parked messages for redelivery (at most `max`); returns how many.
    pub async fn replay_parked(
        &self,
        target: &Target,
        group: &str,
        max: Option<u64>,
    ) -> Result<u64> {
        let tx = self.sender(target, group).await?;
        let (reply, rx) = oneshot::channel();
        tx.send(Command::ReplayParked { max, reply })
            .map_err(|_| not_found(target, group))?;
        rx.await.map_err(|_| not_found(target, group))
    }

    /// A group's state, with its lag counted.
    pub async fn info(&self, target: &Target, group: &str) -> Result<GroupInfo> {
        let tx = self.sender(target, group).await?;
        let (reply, rx) = oneshot::channel();
        tx.send(Command::Info { reply })
            .map_err(|_| not_found(target, group))?;
        let info = rx.await.map_err(|_| not_found(target, group))?;
        self.with_lag(info).await
    }

    /// Every group (of one target, if given), sorted by target and name.
    pub async fn list(&self, target: Option<&Target>) -> Result<Vec<GroupInfo>> {
        let senders: Vec<_> = {
            let reg = self.registry.lock().await;
            reg.usable()?;
            reg.groups
                .iter()
                .filter(|((t, _), _)| target.is_none_or(|want| want == t))
                .map(|(_, h)| h.tx.clone())
                .collect()
        };
        let mut out = Vec::with_capacity(senders.len());
        for tx in senders {
            let (reply, rx) = oneshot::channel();
            if tx.send(Command::Info { reply }).is_err() {
                continue;
            }
            if let Ok(info) = rx.await {
                // A lag that cannot be counted (say, a damaged record in the way) must not
                // hide the group, or every other group, from the list.
                let fallback = GroupInfo {
                    lag_is_lower_bound: true,
                    ..info.clone()
                };
                match self.with_lag(info).await {
                    Ok(info) => out.push(info),
                    Err(e) => {
                        tracing::warn!(target_stream = %fallback.target, group = %fallback.group,
                            error = %e, "cannot count the group's lag; listing it without");
                        out.push(fallback);
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.target.name(), &a.group).cmp(&(b.target.name(), &b.group)));
        Ok(out)
    }

    async fn sender(&self, target: &Target, group: &str) -> Result<mpsc::UnboundedSender<Command>> {
        let reg = self.registry.lock().await;
        reg.usable()?;
        Ok(reg
            .groups
            .get(&(target.clone(), group.to_owned()))
            .ok_or_else(|| not_found(target, group))?
            .tx
            .clone())
    }

    /// Restarts every group (KurrentDB's `RestartSubsystem`): each writes its checkpoint, its
    /// consumers are disconnected with [`Error::Restarted`], and it starts again from its
    /// stored settings and checkpoint, so messages in flight are delivered again. Returns how
    /// many groups restarted.
    pub async fn restart(&self) -> Result<usize> {
        let mut reg = self.registry.lock().await;
        reg.usable()?;
        let keys: Vec<(Target, String)> = reg.groups.keys().cloned().collect();
        let mut restarted = 0;
        for key in keys {
            let handle = reg.groups.remove(&key).expect("listed above");
            let (settings, incarnation) = (handle.settings.clone(), handle.incarnation);
            stop(handle, StopReason::Restart).await;
            let (target, group) = key;
            match spawn(
                self.engine.clone(),
                self.memory.clone(),
                target.clone(),
                group.clone(),
                incarnation,
                settings,
            ) {
                Ok(handle) => {
                    reg.groups.insert((target, group), handle);
                    restarted += 1;
                }
                // As at start-up: one group that cannot load must not stop the others.
                Err(e) => tracing::error!(target_stream = %target, %group, error = %e,
                    "persistent subscription group cannot restart; it stays stored but inactive"),
            }
        }
        tracing::info!(groups = restarted, "persistent subscriptions restarted");
        Ok(restarted)
    }

    /// Stops every group, writing final checkpoints; consumers get [`Error::ShuttingDown`].
    pub async fn shutdown(&self) {
        let handles: Vec<Handle> = {
            let mut reg = self.registry.lock().await;
            reg.closed = true;
            reg.groups.drain().map(|(_, h)| h).collect()
        };
        for h in handles {
            stop(h, StopReason::Shutdown).await;
        }
    }
}

async fn stop(handle: Handle, reason: StopReason) {
    let (reply, rx) = oneshot::channel();
    if handle.tx.send(Command::Stop { reason, reply }).is_ok() {
        let _ = rx.await;
    }
    let _ = handle.task.await;
}

/// Loads every group from the config stream and starts its task; returns them with the config
/// stream's last revision. A group that cannot start is logged and left out.
fn load_all(engine: &Arc<Engine>, memory: &Arc<BufferMemory>) -> Result<(Running, Option<u64>)> {
    let (stored, config_last) = store::load_groups(engine)?;
    let mut groups = HashMap::new();
    for g in stored {
        // One group that cannot start must not keep the server (and the others) down.
        match spawn(
            engine.clone(),
            memory.clone(),
            g.target.clone(),
            g.group.clone(),
            g.incarnation,
            g.settings,
        ) {
            Ok(handle) => {
                groups.insert((g.target, g.group), handle);
            }
            Err(e) => tracing::error!(target_stream = %g.target, group = %g.group, error = %e,
                "persistent subscription group cannot start; it stays stored but inactive"),
        }
    }
    if !groups.is_empty() {
        tracing::info!(
            groups = groups.len(),
            "persistent subscription groups loaded"
        );
    }
    Ok((groups, config_last))
}

fn spawn(
    engine: Arc<Engine>,
    memory: Arc<BufferMemory>,
    target: Target,
    group: String,
    incarnation: u64,
    settings: Settings,
) -> Result<Handle> {
    let g = Group::load(engine, memory, target, group, incarnation, settings.clone())?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(g.run(rx));
    Ok(Handle {
        settings,
        incarnation,
        tx,
        task,
    })
}
