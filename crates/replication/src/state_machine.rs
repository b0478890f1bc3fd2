//! openraft's state machine: the engine's index. Applying committed entries indexes their
//! events and makes them visible ([`Engine::commit_entries`]); the answer to each data entry
//! is the log position where its body starts, which the proposer hands back to the writer.

use std::io;
use std::sync::Arc;

use futures::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{OptionalSend, RaftSnapshotBuilder};
use strata_engine::Engine;

use crate::types::{from_engine, io_err, log_id, LogId, StoredMembership, TypeConfig};

/// The state machine of one node.
pub struct StateMachine {
    engine: Arc<Engine>,
}

impl StateMachine {
    pub fn new(engine: Arc<Engine>) -> Self {
        StateMachine { engine }
    }
}

/// Snapshots are not built (nodes catch up by replaying the log); see `docs/replication.md`.
pub struct NoSnapshots;

fn no_snapshots(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what}: snapshots are not supported yet; nodes catch up by replaying the log"),
    )
}

impl RaftSnapshotBuilder<TypeConfig> for NoSnapshots {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(
        &mut self,
    ) -> io::Result<openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>> {
        Err(no_snapshots("building a snapshot"))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let Some(applied) = engine.committed_entry().map_err(io_err)? else {
                return Ok((None, StoredMembership::default()));
            };
            let membership = match engine.last_membership(applied.index).map_err(io_err)? {
                None => StoredMembership::default(),
                Some(m) => {
                    let e = from_engine(m)?;
                    match e.payload {
                        openraft::EntryPayload::Membership(m) => {
                            StoredMembership::new(Some(e.log_id), m)
                        }
                        _ => return Err(io::Error::other("membership entry of another kind")),
                    }
                }
            };
            Ok((Some(log_id(applied)), membership))
        })
        .await
        .map_err(io_err)?
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

    async fn get_snapshot_builder(&mut self) -> NoSnapshots {
        NoSnapshots
    }

    async fn install_snapshot(
        &mut self,
        _meta: &openraft::type_config::alias::SnapshotMetaOf<TypeConfig>,
        _snapshot: Vec<u8>,
    ) -> io::Result<()> {
        Err(no_snapshots("installing a snapshot"))
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>>> {
        Ok(None)
    }
}
