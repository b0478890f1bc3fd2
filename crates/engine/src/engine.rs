//! The public engine: configuration, open/close, and the operations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, watch};

pub use crate::config::{CommitObserver, Config, Durability, EngineStats, VerifyReport};
use crate::error::{Error, Result};
use crate::index::{Index, StreamState};
use crate::metadata::{metadata_stream, StreamMetadata};
use crate::record::framed_len;
use crate::recovery::{recover, RecoveryReport};
use crate::segment::Log;
use crate::types::{AppendResult, EventData, ExpectedRevision, StreamInfo};
use crate::validate::{
    prepare_events, validate_stream_name, validate_system_stream, validate_user_stream,
};
use crate::writer::{Op, Reply, Request, Writer};

/// State shared by the engine handle, the writer thread and the index flusher.
pub(crate) struct Shared {
    pub config: Config,
    pub log: Log,
    pub index: Index,
    /// Why the store refuses writes, once it does; watchable so the server can react at once.
    poisoned: watch::Sender<Option<String>>,
    end_tx: watch::Sender<u64>,
    pub counters: Counters,
    /// On a cluster node: the entry log (set once, right after open).
    pub replica: std::sync::OnceLock<crate::replica::EntryLog>,
    /// On a cluster node: the IDs of events committed since the writer last looked, for its
    /// recent-ID window (a new leader must recognise retries of what an old one committed).
    /// Holds at most a window's worth.
    pub committed_ids: std::sync::Mutex<
        std::collections::VecDeque<(crate::recent_ids::IdKey, crate::recent_ids::Seen)>,
    >,
    /// On a cluster node: where the writer sends batches.
    pub proposer: std::sync::RwLock<Option<Arc<dyn crate::replica::Proposer>>>,
}

/// Monotonic counters of the write path.
#[derive(Default)]
pub(crate) struct Counters {
    batches: AtomicU64,
    events: AtomicU64,
    requests: AtomicU64,
}

impl Counters {
    pub(crate) fn record_batch(&self, events: u64, requests: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events, Ordering::Relaxed);
        self.requests.fetch_add(requests, Ordering::Relaxed);
    }
}

impl Shared {
    pub(crate) fn poisoned(&self) -> Option<String> {
        self.poisoned.borrow().clone()
    }

    /// Turns the store read-only; returns the reason.
    pub(crate) fn poison(&self, reason: String) -> String {
        tracing::error!(%reason, "the store is now read-only until reopened");
        let mut first = reason;
        self.poisoned.send_if_modified(|p| match p {
            Some(existing) => {
                first = existing.clone();
                false
            }
            None => {
                *p = Some(first.clone());
                true
            }
        });
        first
    }

    pub(crate) fn proposer(&self) -> Option<Arc<dyn crate::replica::Proposer>> {
        self.proposer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn publish_end(&self, end: u64) {
        self.end_tx.send_replace(end);
    }

    /// The end of what readers see: everything before it is committed *and* indexed, so an
    /// event found in `$all` is also found by a stream read. It is published after the index
    /// is updated and never passes the log's committed end.
    pub(crate) fn visible_end(&self) -> u64 {
        *self.end_tx.borrow()
    }
}

/// An open store. Cheap to share behind an `Arc`; reads are blocking file I/O (call them from
/// `spawn_blocking` in async code); writes are async and group-committed.
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    flusher: Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>,
    report: RecoveryReport,
    _lock: crate::lock::DirLock,
}

fn stream_info_of(name: &str, st: &StreamState) -> StreamInfo {
    StreamInfo {
        name: name.to_owned(),
        last_revision: st.last_revision,
        soft_deleted: st.last_revision.is_some() && !st.has_visible() && !st.tombstoned,
        tombstoned: st.tombstoned,
    }
}

impl Engine {
    /// Opens the store in `config.dir`, creating it if needed, and recovers it (see
    /// [`RecoveryReport`]). Blocking.
    pub fn open(config: Config) -> Result<Engine> {
        let fs = config.fs.clone();
        fs.create_dir_all(&config.dir)
            .map_err(|e| Error::io(&config.dir, e))?;
        let log_dir = config.dir.join("log");
        fs.create_dir_all(&log_dir)
            .map_err(|e| Error::io(&log_dir, e))?;
        let lock = crate::lock::lock_dirs(&config.dir, &log_dir)?;
        let durable = config.durability == Durability::Fsync;
        let mode = if config.replicated {
            crate::recovery::Mode::Replicated(
                crate::replica::read_committed(&config.dir)?.map(|c| c.index),
            )
        } else {
            crate::recovery::Mode::Single
        };
        let opened = Index::open(
            &config.dir.join("index"),
            config.index_cache_bytes,
            config.derived,
        )
        .and_then(|index| {
            let recovered = recover(
                fs.clone(),
                &log_dir,
                &index,
                durable,
                config.idempotency_window,
                config.accept_data_loss,
                mode,
            )?;
            Ok((index, recovered))
        });
        // An index that cannot be written (a full disk, say) must not keep the data from
        // being read: rebuild it in memory from the log and serve read-only.
        let (index, recovered, read_only) = match opened {
            Ok((index, recovered)) => (index, recovered, None),
            Err(Error::Index { path, source }) => {
                let reason = format!(
                    "the index in {} cannot be written ({source}); serving reads from an index rebuilt in memory, writes are refused until space is freed and the server restarted",
                    path.display()
                );
                tracing::error!("{reason}");
                let index = Index::open_in_memory(config.index_cache_bytes, config.derived)?;
                let recovered = recover(
                    fs,
                    &log_dir,
                    &index,
                    durable,
                    config.idempotency_window,
                    true,
                    mode,
                )?;
                (index, recovered, Some(reason))
            }
            Err(e) => return Err(e),
        };
        let report = recovered.report.clone();
        tracing::info!(
            dir = %config.dir.display(),
            segments = report.segments,
            log_end = report.log_end,
            index_checkpoint = report.index_checkpoint,
            reindexed = report.reindexed_events,
            truncated_bytes = report.truncated_bytes,
            ms = report.duration.as_millis() as u64,
            "store opened"
        );
        let (end_tx, _) = watch::channel(report.log_end);
        let appender = crate::appender::Appender::new(recovered.active, recovered.write_end);
        let (replica, sink) = match recovered.entries {
            Some((map, committed)) => (
                std::sync::OnceLock::from(crate::replica::EntryLog::new(appender, map, committed)),
                crate::writer::Sink::Replicated,
            ),
            None => (
                std::sync::OnceLock::new(),
                crate::writer::Sink::Local(appender),
            ),
        };
        let shared = Arc::new(Shared {
            config: config.clone(),
            log: recovered.log,
            index,
            poisoned: watch::channel(None).0,
            end_tx,
            counters: Counters::default(),
            replica,
            committed_ids: Default::default(),
            proposer: std::sync::RwLock::new(None),
        });
        if let Some(reason) = read_only {
            shared.poison(reason);
        }
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let writer = Writer::new(shared.clone(), rx, sink, recovered.recent);
        let writer = std::thread::Builder::new()
            .name("strata-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io(&config.dir, e))?;
        let (stop_tx, flusher) =
            crate::flusher::spawn(shared.clone()).map_err(|e| Error::io(&config.dir, e))?;
        Ok(Engine {
            shared,
            tx: Some(tx),
            writer: Some(writer),
            flusher: Some((stop_tx, flusher)),
            report,
            _lock: lock,
        })
    }

    /// What recovery found when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    async fn submit(&self, op: Op) -> Result<AppendResult> {
        let (reply, rx) = Reply::channel();
        self.queue(op, reply).await;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Hands a write to the writer thread (waiting for room in its queue); `reply` gets the
    /// result.
    pub(crate) async fn queue(&self, op: Op, reply: Reply) {
        if let Some(reason) = self.shared.poisoned() {
            return reply.send(Err(Error::ReadOnly { reason }));
        }
        let Some(tx) = self.tx.as_ref() else {
            return reply.send(Err(Error::Closed));
        };
        if let Err(mpsc::error::SendError(request)) = tx.send(Request { op, reply }).await {
            request.reply.send(Err(Error::Closed));
        }
    }

    /// Appends events to a user stream, atomically, if the stream is at `expected`.
    ///
    /// Retries are idempotent: with `Exact`/`NoStream`, an append whose event IDs already sit at
    /// the revisions right after `expected` returns the original result and writes nothing;
    /// with `Any`/`StreamExists` the same holds while the IDs are in the recent-ID window. Some
    /// but not all IDs already written is [`Error::IdempotencyConflict`].
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        validate_user_stream(stream)?;
        self.append_unchecked_name(stream, expected, events).await
    }

    /// Like [`Engine::append`] but allows `$`-prefixed streams other than metadata streams
    /// (`$$…`): for servers that keep their own system streams in the log.
    pub async fn append_system(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        validate_system_stream(stream)?;
        self.append_unchecked_name(stream, expected, events).await
    }

    async fn append_unchecked_name(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        let (reply, rx) = Reply::channel();
        self.queue_append(stream, expected, events, reply).await;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Like [`Engine::append`], but returns as soon as the append is queued for the writer
    /// (after waiting for room in its queue, which is the backpressure) and hands the result to
    /// `done` instead. Many appends can be in flight from one task this way, and they join the
    /// same group commits.
    ///
    /// `done` is called exactly once: on the writer thread once the append is durable (or
    /// refused there), or on the calling task if the append is rejected before it is queued.
    /// It must be quick and must not block or panic: it runs between group commits.
    pub async fn append_with(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<EventData>,
        done: impl FnOnce(Result<AppendResult>) + Send + 'static,
    ) {
        let reply = Reply::call(done);
        if let Err(e) = validate_user_stream(stream) {
            return reply.send(Err(e));
        }
        self.queue_append(stream, expected, events, reply).await
    }

    async fn queue_append(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<EventData>,
        reply: Reply,
    ) {
        let events = match prepare_events(stream, events, self.shared.config.max_append_size) {
            Ok(events) => events,
            Err(e) => return reply.send(Err(e)),
        };
        let reply = match self.shared.config.observer.clone() {
            None => reply,
            Some(observer) => {
                let started = std::time::Instant::now();
                Reply::call(move |r: Result<AppendResult>| {
                    observer.append_finished(started.elapsed(), r.is_ok());
                    reply.send(r);
                })
            }
        };
        let op = Op::Append {
            stream: stream.into(),
            expected,
            events,
        };
        self.queue(op, reply).await
    }

    /// Soft-deletes a stream: reads say not found; a later append recreates it and its
    /// revisions continue after the last one. Returns the position of the delete record.
    pub async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<AppendResult> {
        validate_user_stream(stream)?;
        self.submit(Op::Delete {
            stream: stream.into(),
            expected,
        })
        .await
    }

    /// Hard-deletes a stream, forever: every later read or write of it fails with
    /// [`Error::StreamDeleted`].
    pub async fn tombstone_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<AppendResult> {
        validate_user_stream(stream)?;
        self.submit(Op::Tombstone {
            stream: stream.into(),
            expected,
        })
        .await
    }

    /// Replaces a stream's metadata. `expected` applies to the metadata stream `$$<stream>`.
    pub async fn set_stream_metadata(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        metadata: StreamMetadata,
    ) -> Result<AppendResult> {
        validate_user_stream(stream)?;
        self.write_metadata(stream, expected, metadata).await
    }

    /// Like [`Engine::set_stream_metadata`] for a system stream (a single leading `$`), for
    /// servers that keep their own system streams in the log and trim them.
    pub async fn set_system_stream_metadata(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        metadata: StreamMetadata,
    ) -> Result<AppendResult> {
        validate_system_stream(stream)?;
        self.write_metadata(stream, expected, metadata).await
    }

    async fn write_metadata(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        metadata: StreamMetadata,
    ) -> Result<AppendResult> {
        metadata
            .validate()
            .map_err(|r| Error::invalid("metadata", r))?;
        let size = framed_len(
            &metadata_stream(stream),
            "$metadata",
            metadata.to_json().len(),
            0,
        );
        if size > self.shared.config.max_append_size {
            return Err(Error::AppendTooLarge {
                stream: metadata_stream(stream),
                size,
                max: self.shared.config.max_append_size,
            });
        }
        self.submit(Op::SetMetadata {
            stream: stream.into(),
            expected,
            metadata,
        })
        .await
    }

    /// A stream's metadata and the revision of `$$<stream>` it came from (`None`: never set).
    pub fn get_stream_metadata(&self, stream: &str) -> Result<(Option<u64>, StreamMetadata)> {
        validate_stream_name(stream)?;
        let meta_name = metadata_stream(stream);
        let (tombstoned, metadata) = self.shared.index.with_stream(stream, |st| {
            st.map_or((false, None), |s| (s.tombstoned, s.metadata.clone()))
        });
        if tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.into(),
            });
        }
        let revision = self
            .shared
            .index
            .with_stream(&meta_name, |st| st.and_then(|s| s.last_revision));
        Ok((revision, metadata.map(|m| (*m).clone()).unwrap_or_default()))
    }

    /// The committed end of the log as readers see it: the position the next append will get
    /// (or later). Events before it are readable through `$all` and their streams alike.
    pub fn log_end(&self) -> u64 {
        self.shared.visible_end()
    }

    /// The change feed: a receiver whose value is the committed log end. Wait for it to pass
    /// a position with `rx.wait_for(|end| *end > p).await`.
    pub fn watch_log_end(&self) -> watch::Receiver<u64> {
        self.shared.end_tx.subscribe()
    }

    /// One stream's summary; `None` when it was never written (and for derived streams, which
    /// [`Engine::read_derived`] reads).
    pub fn stream_info(&self, stream: &str) -> Option<StreamInfo> {
        if crate::derived::is_derived(stream) {
            return None;
        }
        self.shared
            .index
            .with_stream(stream, |st| st.map(|st| stream_info_of(stream, st)))
    }

    /// A stream's metadata as the index holds it (shared, not copied); `None` when never set.
    /// Tombstoned streams keep theirs. For checks on every request (access control).
    pub fn stream_metadata_shared(&self, stream: &str) -> Option<Arc<StreamMetadata>> {
        self.shared
            .index
            .with_stream(stream, |st| st.and_then(|s| s.metadata.clone()))
    }

    /// Every stream with a state (including `$$` metadata streams), in no particular order.
    pub fn list_streams(&self) -> Vec<StreamInfo> {
        self.shared
            .index
            .streams()
            .into_iter()
            .filter(|(name, _)| !crate::derived::is_derived(name))
            .map(|(name, st)| stream_info_of(&name, &st))
            .collect()
    }

    /// Why the store refuses writes, once a write or fsync has failed (until it is reopened).
    pub fn read_only_reason(&self) -> Option<String> {
        self.shared.poisoned()
    }

    /// A receiver whose value becomes `Some(reason)` when the store turns read-only; wait for
    /// it with `rx.wait_for(Option::is_some).await`.
    pub fn watch_read_only(&self) -> watch::Receiver<Option<String>> {
        self.shared.poisoned.subscribe()
    }

    pub fn stats(&self) -> EngineStats {
        let segments = self.shared.log.segments();
        let log_bytes = segments.iter().map(|s| s.file.len().unwrap_or(0)).sum();
        EngineStats {
            log_end: self.log_end(),
            segment_count: segments.len(),
            stream_count: self.shared.index.stream_count(),
            index_checkpoint: self.shared.index.checkpoint(),
            index_unflushed: self.shared.index.unflushed_count(),
            log_bytes,
            index_bytes: self.shared.index.size_on_disk(),
            read_only: self.shared.poisoned(),
            batches_committed: self.shared.counters.batches.load(Ordering::Relaxed),
            events_committed: self.shared.counters.events.load(Ordering::Relaxed),
            requests_committed: self.shared.counters.requests.load(Ordering::Relaxed),
        }
    }

    /// Reads the whole committed log and checks every record's framing and CRC, and that every
    /// append is complete. Returns what was checked, or the first corruption (file and offset).
    /// Blocking; reads everything once, sequentially.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.shared.verify(None)
    }

    /// [`Engine::verify`] that gives up with [`Error::Closed`] soon after `stop` is set (for a
    /// check running beside a server that is shutting down).
    pub fn verify_until(&self, stop: &std::sync::atomic::AtomicBool) -> Result<VerifyReport> {
        self.shared.verify(Some(stop))
    }

    /// Turns the store read-only, as a failed write does: every later write fails with
    /// [`Error::ReadOnly`] carrying `reason`; reads go on. For damage found outside the write
    /// path (e.g. by [`Engine::verify`] on a running store). Returns the reason in force (the
    /// first one, if the store was already read-only).
    pub fn refuse_writes(&self, reason: String) -> String {
        self.shared.poison(reason)
    }

    /// Writes all in-memory index entries to sled now.
    pub fn flush_index(&self) -> Result<()> {
        self.shared.index.flush()?;
        self.shared.index.sync()
    }

    /// Stops accepting writes, lets queued writes finish, flushes the index and closes.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some((stop, handle)) = self.flusher.take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        if self.shared.config.durability == Durability::NoSync {
            for seg in self.shared.log.segments().iter().rev().take(1) {
                seg.file.sync_data().map_err(|e| Error::io(&seg.path, e))?;
            }
        }
        self.shared.index.flush()?;
        self.shared.index.sync()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.tx.is_some() {
            if let Err(e) = self.shutdown() {
                tracing::error!(error = %e, "closing the store failed");
            }
        }
    }
}
