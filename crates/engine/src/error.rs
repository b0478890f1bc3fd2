//! The engine's error type. Every variant names what was wrong (stream, revision, file, offset)
//! so that the server can pass the message to a user unchanged.

use std::path::PathBuf;

use uuid::Uuid;

use crate::types::{CurrentRevision, ExpectedRevision};

/// Errors returned by [`crate::Engine`] operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The expected-revision check of an append, delete or metadata write failed.
    #[error("wrong expected revision for stream '{stream}': expected {expected}, but the stream {actual}")]
    WrongExpectedRevision {
        stream: String,
        expected: ExpectedRevision,
        actual: CurrentRevision,
    },

    /// The stream has no events (never written, soft-deleted, or truncated away).
    #[error("stream '{stream}' not found")]
    StreamNotFound { stream: String },

    /// The stream was tombstoned (hard-deleted); it can never be read or written again.
    #[error("stream '{stream}' is deleted (tombstoned): it can no longer be read or written")]
    StreamDeleted { stream: String },

    /// A request argument is invalid; `field` names it.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },

    /// The encoded size of one append is over the configured maximum.
    #[error(
        "append to stream '{stream}' is {size} bytes, over the maximum append size of {max} bytes"
    )]
    AppendTooLarge {
        stream: String,
        size: usize,
        max: usize,
    },

    /// The encoded size of a multi-stream append is over the configured maximum append size.
    #[error("multi-stream append is {size} bytes, over the maximum append size of {max} bytes; split it into smaller appends")]
    MultiAppendTooLarge { size: usize, max: usize },

    /// Checks of a multi-stream append failed; nothing was written.
    #[error("consistency checks failed, nothing was written: {}", violations.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; "))]
    ChecksFailed {
        violations: Vec<crate::multi::CheckViolation>,
    },

    /// Something that needs the derived streams (`$ce-…`, `$et-…` and the `$idx-` filters
    /// answered from them) on a store that does not keep them.
    #[error("{what} needs the derived streams, which this store does not keep (turn them on)")]
    DerivedStreamsOff { what: String },

    /// Names starting with `$` belong to the system.
    #[error("stream name '{stream}' is reserved: names starting with '$' belong to the system (use the metadata, delete and tombstone operations)")]
    ReservedStream { stream: String },

    /// Some events of an append were already written and some were not: retrying would
    /// duplicate events, so nothing is written.
    #[error("append to stream '{stream}' partially overlaps events already written: event {event_id} {detail}; nothing was written")]
    IdempotencyConflict {
        stream: String,
        event_id: Uuid,
        detail: String,
    },

    /// A log record failed its checks (CRC, framing, header).
    #[error("corrupt log: {} at byte offset {offset}: {reason}", file.display())]
    Corruption {
        file: PathBuf,
        offset: u64,
        reason: String,
    },

    /// The store holds evidence that data it acknowledged is gone (a segment file missing, or
    /// the index recording more of the log than is there). Opening refuses such a store unless
    /// the caller accepts the loss.
    #[error("acknowledged data is missing from the log in {}: {reason}", dir.display())]
    DataLoss { dir: PathBuf, reason: String },

    /// A read asked for a `$all` position that is not the start of a record.
    #[error("position {position} is not the start of a record in the log")]
    InvalidPosition { position: u64 },

    /// A write or fsync failed earlier (or damage was found in the log); the engine accepts no
    /// more writes until reopened.
    #[error("the store is read-only: {reason}; reads still work, reopen the store to recover")]
    ReadOnly { reason: String },

    /// A cluster node could not get an append committed by a majority: it is not the leader,
    /// lost leadership, or the cluster has no quorum. The append may still be committed later;
    /// a retry is safe (event IDs make it idempotent).
    #[error("the append was not acknowledged by the cluster: {reason}; retry it (its event IDs make a retry safe)")]
    NotAcknowledged { reason: String },

    /// A cluster node that does not lead was asked to write; nothing was written.
    #[error("this node cannot take writes: {reason}")]
    NotLeader { reason: String },

    /// An operating-system I/O error.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The index (sled) reported an error.
    #[error("index error in {}: {source}", path.display())]
    Index {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },

    /// The store was opened as a single node but belongs to a cluster node, or the other way
    /// round.
    #[error("the store in {} cannot be opened this way: {reason}", dir.display())]
    WrongMode { dir: PathBuf, reason: String },

    /// Another process holds the data directory.
    #[error("data directory {} is locked by another process", dir.display())]
    Locked { dir: PathBuf },

    /// The engine has been shut down.
    #[error("the store is shutting down")]
    Closed,
}

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}
