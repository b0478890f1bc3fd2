//! openraft's state machine: the engine's index. Applying committed entries indexes their
//! events and makes them visible ([`Engine::commit_entries`]); the answer to each data entry
//! is the log position where its body starts, which the proposer hands back to the writer.

use std::io;
use std::sync::Arc;

use futures::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{OptionalSend, RaftSnapshotBuilder};
use strata_engine::Engine;

use crate::snapshot::SnapshotData;
use crate::types::{entry_id, from_engine, io_err, log_id, LogId, StoredMembership, TypeConfig};

/// The state machine of one node.
pub struct StateMachine {
    engine: Arc<Engine>,
}

impl StateMachine {
    pub fn new(engine: Arc<Engine>) -> Self {
        StateMachine { engine }
    }
}

/// Builds snapshots: a description of the committed log, which stays where it is.
pub struct Builder {
    engine: Arc<Engine>,
}

type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// The snapshot of everything this node has committed: the committed entry and the
/// membership in force there. `None` before anything is committed.
fn current(engine: &Engine) -> io::Result<Option<Snapshot>> {
    let (applied, membership) = applied(engine)?;
    Ok(applied.map(|last| openraft::storage::Snapshot {
        meta: openraft::storage::SnapshotMeta {
            last_log_id: Some(last),
            last_membership: membership,
        },
        snapshot: SnapshotData::Log,
    }))
}

/// The last applied entry and the membership in force there.
fn applied(engine: &Engine) -> io::Result<(Option<LogId>, StoredMembership)> {
    let Some(applied) = engine.committed_entry().map_err(io_err)? else {
        return Ok((None, StoredMembership::default()));
    };
    let membership = match engine.last_membership(applied.index).map_err(io_err)? {
        None => StoredMembership::default(),
        Some(m) => {
            let e = from_engine(m)?;
            match e.payload {
                openraft::EntryPayload::Membership(m) => StoredMembership::new(Some(e.log_id), m),
                _ => return Err(io::Error::other("membership entry of another kind")),
            }
        }
    };
    Ok((Some(log_id(applied)), membership))
}

async fn blocking<T: Send + 'static>(
    engine: &Arc<Engine>,
    f: impl FnOnce(&Engine) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(io_err)?
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        blocking(&self.engine, current)
            .await?
            .ok_or_else(|| io::Error::other("no entry is committed yet: nothing to snapshot"))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        blocking(&self.engine, applied).await
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: futures::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut applied = Vec::new();
        while let Some(item) = entries.next().await {
            applied.push(item?);
        }
        let Some(last) = applied.last().map(|(e, _)| e.log_id.index) else {
            return Ok(());
        };
        let engine = self.engine.clone();
        let data: Vec<u64> = applied
            .iter()
            .filter(|(e, r)| r.is_some() && matches!(e.payload, openraft::EntryPayload::Normal(_)))
            .map(|(e, _)| e.log_id.index)
            .collect();
        let starts = tokio::task::spawn_blocking(move || {
            engine.commit_entries(last)?;
            data.iter()
                .map(|&i| engine.entry_body_start(i).map(|s| (i, s.unwrap_or(0))))
                .collect::<strata_engine::Result<std::collections::HashMap<u64, u64>>>()
        })
        .await
        .map_err(io_err)?
        .map_err(io_err)?;
        for (entry, responder) in applied {
            if let Some(r) = responder {
                r.send(starts.get(&entry.log_id.index).copied().unwrap_or(0));
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        Builder {
            engine: self.engine.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &openraft::type_config::alias::SnapshotMetaOf<TypeConfig>,
        snapshot: SnapshotData,
    ) -> io::Result<()> {
        let SnapshotData::Received(received) = snapshot else {
            return Err(io::Error::other(
                "a snapshot to install must hold the entries received from the leader",
            ));
        };
        let Some(last) = meta.last_log_id else {
            return Err(io::Error::other("a snapshot without a last entry"));
        };
        let last = entry_id(&last);
        tracing::info!(
            last = last.index,
            "installing a snapshot received from the leader"
        );
        blocking(&self.engine, move |e| {
            crate::snapshot::install(e, &received, last)
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        blocking(&self.engine, current).await
    }
}
