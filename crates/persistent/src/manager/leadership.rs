//! Consumer groups on a cluster: they run on the leader only. Their settings, checkpoints and
//! parked messages are events in the replicated log, so a node that becomes leader loads them
//! from its committed log and resumes every group from its last checkpoint (a message acked
//! after that checkpoint may be delivered again, none is skipped); a node that stops leading
//! stops its groups and tells their consumers to reconnect to the new leader.

use std::sync::Arc;

use strata_engine::Engine;
use tokio::sync::Mutex;

use super::{load_all, stop, Groups, Handle, Registry, DEFAULT_MAX_GROUPS};
use crate::group::StopReason;
use crate::memory::BufferMemory;
use crate::Result;

impl Groups {
    /// Groups for a cluster node: none run until [`Groups::activate`]; until then every
    /// request is refused as "not the leader".
    pub fn standby(engine: Arc<Engine>) -> Arc<Groups> {
        Arc::new(Groups {
            engine,
            registry: Mutex::new(Registry {
                groups: Default::default(),
                config_last: None,
                closed: false,
                standby: true,
            }),
            max_groups: DEFAULT_MAX_GROUPS.into(),
            memory: Arc::new(BufferMemory::default()),
        })
    }

    /// This node leads, with every committed entry applied: load every group from the log
    /// and start it from its checkpoint. Returns how many started (0 if they already run).
    pub async fn activate(&self) -> Result<usize> {
        let mut reg = self.registry.lock().await;
        if reg.closed || !reg.standby {
            return Ok(0);
        }
        let (groups, config_last) = load_all(&self.engine, &self.memory)?;
        let started = groups.len();
        reg.groups = groups;
        reg.config_last = config_last;
        reg.standby = false;
        tracing::info!(
            groups = started,
            "this node leads: persistent subscription groups started"
        );
        Ok(started)
    }

    /// This node no longer leads: stop every group (their checkpoints are not written: this
    /// node can no longer write) and end their consumers with [`crate::Error::LeaderChanged`].
    pub async fn stand_down(&self) {
        let handles: Vec<Handle> = {
            let mut reg = self.registry.lock().await;
            if reg.standby {
                return;
            }
            reg.standby = true;
            reg.config_last = None;
            reg.groups.drain().map(|(_, h)| h).collect()
        };
        let n = handles.len();
        for h in handles {
            stop(h, StopReason::LeaderChanged).await;
        }
        tracing::info!(
            groups = n,
            "this node no longer leads: persistent subscription groups stopped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Settings, StartFrom, Target};
    use strata_engine::{Config, Error as EngineError};

    fn is_not_leader(e: &Error) -> bool {
        matches!(e, Error::Engine(EngineError::NotLeader { .. }))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn groups_run_only_between_activate_and_stand_down() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(Config::new(dir.path())).unwrap());
        let target = Target::Stream("orders-1".into());
        let settings = Settings {
            start_from: StartFrom::Start,
            ..Settings::default()
        };
        // A group stored in the log by an earlier leader.
        let leader = Groups::open(engine.clone()).unwrap();
        leader
            .create(target.clone(), "billing", settings.clone())
            .await
            .unwrap();
        leader.shutdown().await;

        let groups = Groups::standby(engine.clone());
        let refused = groups
            .create(target.clone(), "other", settings.clone())
            .await
            .unwrap_err();
        assert!(is_not_leader(&refused), "{refused:?}");
        assert!(is_not_leader(&groups.list(None).await.unwrap_err()));
        let connect = groups.connect(&target, "billing", "c", 10).await;
        assert!(is_not_leader(&connect.err().unwrap()));

        assert_eq!(groups.activate().await.unwrap(), 1);
        assert_eq!(
            groups.activate().await.unwrap(),
            0,
            "a second activation changes nothing"
        );
        assert_eq!(groups.list(None).await.unwrap().len(), 1);
        let mut consumer = groups.connect(&target, "billing", "c", 10).await.unwrap();

        groups.stand_down().await;
        match consumer.events.next().await {
            Some(Err(Error::LeaderChanged)) => {}
            other => panic!("a consumer of a deposed leader got {other:?}"),
        }
        assert!(is_not_leader(
            &groups.info(&target, "billing").await.unwrap_err()
        ));
        // Leading again: the group is back, from the log.
        assert_eq!(groups.activate().await.unwrap(), 1);
        groups.connect(&target, "billing", "c", 10).await.unwrap();
        groups.shutdown().await;
    }
}
