//! Strata's storage engine: an append-only segmented event log (the source of truth) with
//! per-stream indexes derived from it. It knows nothing about the network.
//!
//! Module map:
//! - [`engine`]: open/close and the public operations; `config`: its settings and reports.
//! - `validate`: checks on names and events before a write is queued.
//! - `lock`: the exclusive lock on the data and log directories.
//! - [`derived`]: the derived streams `$ce-<category>` and `$et-<event type>`.
//! - `writer`: the single writer thread; expected-revision checks and group commit.
//! - `appender`: writing at the end of the log (the open segment, rollover, sync).
//! - [`replica`]: a cluster node's log as replicated entries (entry map, commit point).
//! - `multi`: multi-stream atomic appends (their types and validation).
//! - `reader`: stream reads (via the index) and `$all` reads (via the segments); `reads`: the
//!   public read operations on [`Engine`].
//! - `flusher`: the thread that moves index entries to sled and watches segment files.
//! - `recovery`: opening a log, re-indexing after the checkpoint, cutting a torn tail.
//! - `segment`: segment files, headers, and the buffered record cursor.
//! - `record`: record framing (length + CRC32) and the event encoding.
//! - `index`: stream states and revision → position entries, in memory and in sled.
//! - [`metadata`]: stream metadata (retention rules) and its JSON form.
//! - [`filter`]: `$all` filters.
//! - `recent_ids`: the window of recent event IDs for idempotent retries.
//! - [`io`]: the file-system seam, with a failure-injecting wrapper for tests.

mod appender;
mod config;
pub mod derived;
pub mod engine;
pub mod error;
pub mod filter;
mod flusher;
mod index;
pub mod indexed;
pub mod io;
mod lock;
pub mod metadata;
mod multi;
mod reader;
mod reads;
mod recent_ids;
mod record;
mod recovery;
pub mod replica;
mod segment;
pub mod types;
mod unlinked;
mod validate;
mod writer;

pub use engine::{CommitObserver, Config, Durability, Engine, EngineStats, VerifyReport};
pub use error::{Error, Result};
pub use filter::{EventFilter, FilterOn};
pub use metadata::StreamMetadata;
pub use multi::{
    CheckViolation, MultiAppend, MultiAppendResult, StreamAppended, StreamCheck, StreamWrite,
};
pub use reader::event_cost;
pub use recovery::RecoveryReport;
pub use types::*;
pub use validate::{MAX_EVENT_TYPE, MAX_STREAM_NAME};

/// On-disk layout constants, for tools and tests that build or inspect files.
pub mod format {
    pub use crate::record::{framed_len as event_size, EVENT_FIXED, FRAME_OVERHEAD};
    pub use crate::segment::{file_name as segment_file_name, HEADER_LEN as SEGMENT_HEADER_LEN};
}
