//! openraft's log storage over the engine's entry log.
//!
//! Writes reach the engine in the order openraft issues them (it calls from one task).
//! `append` writes the entries at once (so they are readable when it returns) and hands the
//! flush callback to the syncer thread, which fsyncs once for every append queued since its
//! last fsync: group commit across Raft entries.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use strata_engine::Engine;

use crate::types::{
    entry_id, from_engine, io_err, log_id, to_engine, Entry, LogId, TypeConfig, Vote,
};

/// Reads entries and the vote for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    engine: Arc<Engine>,
}

/// The log storage of one node.
pub struct LogStore {
    reader: LogReader,
    syncs: std::sync::mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl LogStore {
    /// A log store over a store opened as a cluster node. Starts the syncer thread, which
    /// ends when the store is dropped.
    pub fn new(engine: Arc<Engine>) -> io::Result<Self> {
        if !engine.is_replicated() {
            return Err(io::Error::other(
                "the store was opened as a single node, not as a cluster node",
            ));
        }
        let (syncs, rx) = std::sync::mpsc::channel::<IOFlushed<TypeConfig>>();
        let syncer = engine.clone();
        std::thread::Builder::new()
            .name("strata-raft-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut done = vec![first];
                    done.extend(rx.try_iter());
                    let result = syncer.sync_entries();
                    for callback in done {
                        callback.io_completed(result.as_ref().map(|_| ()).map_err(io_err));
                    }
                }
            })?;
        Ok(LogStore {
            reader: LogReader { engine },
            syncs,
        })
    }

    fn engine(&self) -> &Arc<Engine> {
        &self.reader.engine
    }
}

/// Runs blocking engine work (fsyncs, reads) off the async threads.
async fn blocking<T: Send + 'static>(
    engine: &Arc<Engine>,
    f: impl FnOnce(&Engine) -> strata_engine::Result<T> + Send + 'static,
) -> io::Result<T> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(io_err)?
        .map_err(io_err)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i + 1,
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        let entries = blocking(&self.engine, move |e| {
            let to = match e.last_entry()? {
                Some(last) => to.min(last.index + 1),
                None => from,
            };
            e.read_entries(from, to)
        })
        .await?;
        entries.into_iter().map(from_engine).collect()
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        match self.engine.read_vote().map_err(io_err)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the saved vote is not readable: {e}"),
                )
            }),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last = self.engine().last_entry().map_err(io_err)?.map(log_id);
        Ok(LogState {
            last_purged_log_id: None,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let bytes = serde_json::to_vec(vote).map_err(io_err)?;
        // Everything appended before the vote is made durable first.
        blocking(self.engine(), move |e| {
            e.sync_entries()?;
            e.save_vote(&bytes)
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let id = committed.map(|c| entry_id(&c));
        blocking(self.engine(), move |e| e.save_committed(id)).await
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.engine().read_committed().map_err(io_err)?.map(log_id))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries
            .into_iter()
            .map(|e| to_engine(&e))
            .collect::<io::Result<Vec<_>>>()?;
        blocking(self.engine(), move |e| e.append_entries(&entries)).await?;
        self.syncs
            .send(callback)
            .map_err(|_| io::Error::other("the log syncer has stopped"))
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> io::Result<()> {
        let index = last.map(|l| l.index);
        blocking(self.engine(), move |e| e.truncate_entries_after(index)).await
    }

    async fn purge(&mut self, _upto: LogId) -> io::Result<()> {
        // The log is the data: nothing is deleted. openraft treats entries up to `upto` as
        // gone, so a node that needs them is sent a snapshot (see `crate::snapshot`). After a
        // restart openraft sees the whole log again, which is the truth.
        Ok(())
    }
}
