//! Engine settings, the write-path observer hook, and what the engine reports about itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::io::{Fs, OsFs};

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After its batch is written and fdatasync'ed: survives power loss. The default.
    #[default]
    Fsync,
    /// After its batch is written to the OS page cache: survives a crash of the process, not of
    /// the machine. For development and tests only.
    NoSync,
}

/// Engine settings.
#[derive(Clone)]
pub struct Config {
    /// Holds `log/` (segments) and `index/` (sled).
    pub dir: PathBuf,
    pub durability: Durability,
    /// A segment is closed once the next batch would take it past this size.
    pub segment_size: u64,
    /// Largest encoded size of one append.
    pub max_append_size: usize,
    /// sled page cache.
    pub index_cache_bytes: u64,
    /// Event IDs remembered to recognise `Any`/`StreamExists` retries.
    pub idempotency_window: usize,
    /// How often index entries move from memory to sled.
    pub index_flush_interval: Duration,
    /// Writes queued before callers wait.
    pub queue_depth: usize,
    /// The file-system seam (tests inject failures here).
    pub fs: Arc<dyn Fs>,
    /// Told about every group commit and append, for metrics.
    pub observer: Option<Arc<dyn CommitObserver>>,
    /// Open a store even when it holds evidence that acknowledged data is gone (the index
    /// checkpoint or the last segment it recorded lies past the end of the log). Off by
    /// default: such a store refuses to open, saying what is missing.
    pub accept_data_loss: bool,
    /// Keep the derived streams `$ce-<category>` and `$et-<event type>`, with this rule for
    /// categories; `None` (the default for now: they cost appends 20-30% in-process and no
    /// server API serves them yet): keep none. Changing it rebuilds the index at the next open.
    pub derived: Option<crate::derived::CategoryRule>,
    /// Open the store as a cluster node: the log is a sequence of replicated entries and
    /// appends go through a [`Proposer`](crate::replica::Proposer) (see
    /// [`crate::replica`]). A store is one or the other for its whole life.
    pub replicated: bool,
}

/// Receives write-path measurements (a metrics exporter implements it). Called on the writer
/// thread and on append callers' tasks: keep it cheap and non-blocking.
pub trait CommitObserver: Send + Sync {
    /// A group commit became durable: `events` events from `requests` requests, `bytes` bytes
    /// written by one write (+ fdatasync in durable mode) that took `write`.
    fn batch_committed(&self, events: u64, requests: u64, bytes: u64, write: Duration);
    /// An append finished (successfully or not) `elapsed` after it was submitted.
    fn append_finished(&self, elapsed: Duration, ok: bool);
}

impl Config {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Config {
            dir: dir.into(),
            durability: Durability::Fsync,
            segment_size: 256 * 1024 * 1024,
            max_append_size: 1024 * 1024,
            index_cache_bytes: 64 * 1024 * 1024,
            idempotency_window: 100_000,
            index_flush_interval: Duration::from_millis(200),
            queue_depth: 4096,
            fs: Arc::new(OsFs),
            observer: None,
            accept_data_loss: false,
            derived: None,
            replicated: false,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .field("segment_size", &self.segment_size)
            .field("max_append_size", &self.max_append_size)
            .field("index_cache_bytes", &self.index_cache_bytes)
            .field("idempotency_window", &self.idempotency_window)
            .field("accept_data_loss", &self.accept_data_loss)
            .field("replicated", &self.replicated)
            .finish_non_exhaustive()
    }
}

/// What [`Engine::verify`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub bytes: u64,
    pub segments: usize,
}

/// Counters for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStats {
    pub log_end: u64,
    pub segment_count: usize,
    pub stream_count: usize,
    pub index_checkpoint: u64,
    pub index_unflushed: u64,
    pub log_bytes: u64,
    pub index_bytes: u64,
    /// `Some(reason)` when a failed write made the store read-only.
    pub read_only: Option<String>,
    /// Group commits (one write + one fdatasync each) since open.
    pub batches_committed: u64,
    /// Events written since open.
    pub events_committed: u64,
    /// Write requests (appends, deletes, metadata) answered by those batches.
    pub requests_committed: u64,
}
