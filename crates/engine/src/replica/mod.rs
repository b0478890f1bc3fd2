//! A cluster node's view of the log: a sequence of replicated entries (see
//! `docs/replication.md`). Nothing here knows the consensus library; the replication crate
//! drives these operations.
//!
//! In this mode ([`Config::replicated`](crate::Config)) the log holds an entry-header record
//! before the records of each entry, every node writes the same bytes at the same positions,
//! and nothing after the **commit point** is indexed or visible to readers. The writer thread
//! no longer writes: it hands each batch to a [`Proposer`], which gets it committed and
//! applied (through [`Engine::append_entries`] and [`Engine::commit_entries`]) before the
//! appenders are answered.

pub mod header;

mod files;
mod map;
pub(crate) mod recover;

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::appender::Appender;
use crate::engine::{Engine, Shared};
use crate::error::{Error, Result};
use crate::recent_ids::{IdKey, Seen};
use crate::record::{check_frame, parse_header, FRAME_OVERHEAD};
use crate::segment::{Cursor, Step};

pub use header::{EntryId, EntryPayload, LogEntry};
pub(crate) use map::EntryMap;

/// Why a proposed batch was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This node cannot take writes: another node leads (the text says which). Nothing was
    /// written; the appends should go to the leader.
    NotLeader(String),
    /// The batch may or may not commit later (no leader known, leadership lost, no quorum
    /// within the timeout): a retry, with the same event IDs, is safe.
    NotAcknowledged(String),
}

impl Refusal {
    pub(crate) fn into_error(self) -> Error {
        match self {
            Refusal::NotLeader(reason) => Error::NotLeader { reason },
            Refusal::NotAcknowledged(reason) => Error::NotAcknowledged { reason },
        }
    }
}

/// Gets a writer batch committed by the cluster.
pub trait Proposer: Send + Sync {
    /// Called before the writer plans a batch (checks expected revisions against the
    /// index): returns once this node leads and has applied every entry of earlier leaders,
    /// so that the index it plans against is the whole committed history. A refusal is the
    /// answer to the request that would start the batch.
    fn prepare(&self) -> std::result::Result<(), Refusal>;

    /// Replicates `body` (a writer batch: framed event records) as one data entry. Returns
    /// once the entry is committed and applied on this node, with the log position where its
    /// body starts. Called on the writer thread, one batch at a time; may block.
    fn propose(&self, body: Bytes) -> std::result::Result<u64, Refusal>;
}

/// The entry log: the end of the log and the entry map, behind one lock so that appends,
/// truncations, commits and entry reads happen in the order they are called.
pub(crate) struct EntryLog {
    inner: Mutex<Inner>,
}

pub(crate) struct Inner {
    appender: Appender,
    map: EntryMap,
    /// The last entry applied to the index (and visible to readers).
    committed: Option<u64>,
}

impl EntryLog {
    pub(crate) fn new(appender: Appender, map: EntryMap, committed: Option<u64>) -> Self {
        EntryLog {
            inner: Mutex::new(Inner {
                appender,
                map,
                committed,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Checks an entry from a peer before it is written: a data body must be whole event records,
/// ending with a commit record, so that committing it can never meet garbage.
fn check_entry(e: &LogEntry) -> Result<()> {
    let EntryPayload::Data(body) = &e.payload else {
        return Ok(());
    };
    let bad = |reason: String| {
        Error::invalid(
            "entry",
            format!("entry {} is not a valid writer batch: {reason}", e.id.index),
        )
    };
    let mut at = 0;
    let mut commit = false;
    while at < body.len() {
        let (payload, total) = check_frame(&body[at..]).map_err(|e| bad(format!("{e:?}")))?;
        let h = parse_header(&body[at + payload.start..at + payload.end])
            .map_err(|e| bad(format!("{e:?}")))?;
        commit = h.is_commit();
        at += total;
    }
    if body.is_empty() || !commit {
        return Err(bad("it does not end with a commit record".into()));
    }
    Ok(())
}

impl Engine {
    fn entry_log(&self) -> Result<&EntryLog> {
        self.shared.replica.get().ok_or_else(|| {
            Error::invalid(
                "replication",
                "this store was opened as a single node, not as a cluster node",
            )
        })
    }

    /// Whether the store was opened as a cluster node.
    pub fn is_replicated(&self) -> bool {
        self.shared.replica.get().is_some()
    }

    /// Sets (or clears) what the writer hands batches to. Without one, appends on a cluster
    /// node fail with [`Error::NotAcknowledged`].
    pub fn set_proposer(&self, proposer: Option<Arc<dyn Proposer>>) {
        *self
            .shared
            .proposer
            .write()
            .unwrap_or_else(|p| p.into_inner()) = proposer;
    }

    /// Writes entries after the last one (not yet durable: see [`Engine::sync_entries`]; not
    /// visible to readers before [`Engine::commit_entries`]). The first must follow the last
    /// entry held, unless the log is empty.
    pub fn append_entries(&self, entries: &[LogEntry]) -> Result<()> {
        let log = self.entry_log()?;
        let mut inner = log.lock();
        let mut next = inner.map.next_index();
        for e in entries {
            if next.is_some_and(|n| n != e.id.index) {
                return Err(Error::invalid(
                    "entry",
                    format!(
                        "entry {} cannot follow entry {} (truncate first)",
                        e.id.index,
                        next.unwrap_or(0).saturating_sub(1)
                    ),
                ));
            }
            check_entry(e)?;
            next = Some(e.id.index + 1);
        }
        let mut buf = Vec::new();
        let mut starts = Vec::with_capacity(entries.len());
        let base = inner.appender.write_pos;
        for e in entries {
            starts.push(base + buf.len() as u64);
            e.encode(&mut buf);
        }
        inner
            .appender
            .write(&self.shared, &buf, false)
            .map_err(|reason| Error::ReadOnly { reason })?;
        for (e, start) in entries.iter().zip(starts) {
            inner.map.push(
                e.id,
                start,
                matches!(e.payload, EntryPayload::Membership(_)),
            );
        }
        Ok(())
    }

    /// Makes every entry written so far durable.
    pub fn sync_entries(&self) -> Result<()> {
        let log = self.entry_log()?;
        let mut inner = log.lock();
        inner
            .appender
            .sync(&self.shared)
            .map_err(|reason| Error::ReadOnly { reason })
    }

    /// Removes every entry after `index` (every entry with `None`), durably. Committed
    /// entries are never removed: asking to is a bug in the caller, and turns the store
    /// read-only rather than lose acknowledged data.
    pub fn truncate_entries_after(&self, index: Option<u64>) -> Result<()> {
        let log = self.entry_log()?;
        let mut inner = log.lock();
        if let Some(c) = inner.committed {
            if index.is_none_or(|i| i < c) {
                let reason = self.shared.poison(format!(
                    "refused to truncate the log after entry {index:?}: entries up to {c} are committed"
                ));
                return Err(Error::ReadOnly { reason });
            }
        }
        let end = inner.appender.write_pos;
        let position = match index {
            None => self.shared.log.segments().first().map_or(0, |s| s.base),
            Some(i) => match inner.map.end(i, end) {
                Some(p) => p,
                None if inner.map.last().is_none_or(|l| i > l.index) => return Ok(()),
                None => {
                    return Err(Error::invalid(
                        "entry",
                        format!("entry {i} is before the first entry held"),
                    ))
                }
            },
        };
        if position < end {
            inner
                .appender
                .cut(&self.shared, position)
                .map_err(|reason| Error::ReadOnly { reason })?;
        }
        inner.map.truncate_after(index);
        Ok(())
    }

    /// The ID of the last entry held, committed or not.
    pub fn last_entry(&self) -> Result<Option<EntryId>> {
        Ok(self.entry_log()?.lock().map.last())
    }

    /// The ID of entry `index`, if held.
    pub fn entry_id(&self, index: u64) -> Result<Option<EntryId>> {
        Ok(self.entry_log()?.lock().map.id(index))
    }

    /// The log position where entry `index` ends (the next entry, or the end of the log),
    /// if held.
    pub fn entry_end(&self, index: u64) -> Result<Option<u64>> {
        let inner = self.entry_log()?.lock();
        let end = inner.appender.write_pos;
        Ok(inner.map.end(index, end))
    }

    /// The last committed (applied) entry.
    pub fn committed_entry(&self) -> Result<Option<EntryId>> {
        let inner = self.entry_log()?.lock();
        Ok(inner.committed.and_then(|c| inner.map.id(c)))
    }

    /// Entries `from..to` that are held (fewer at the end of the log).
    pub fn read_entries(&self, from: u64, to: u64) -> Result<Vec<LogEntry>> {
        let log = self.entry_log()?;
        let inner = log.lock();
        let end = inner.appender.write_pos;
        let mut out = Vec::new();
        for index in from..to {
            let (Some(start), Some(stop)) = (inner.map.start(index), inner.map.end(index, end))
            else {
                break;
            };
            let bytes = self.shared.log.read_bytes(start, (stop - start) as usize)?;
            let (payload, total) = check_frame(&bytes).map_err(|e| Error::Corruption {
                file: self.shared.log.dir.clone(),
                offset: start,
                reason: format!("entry {index} at log position {start}: {e:?}"),
            })?;
            let h = header::parse_entry_header(&bytes, payload).map_err(|e| Error::Corruption {
                file: self.shared.log.dir.clone(),
                offset: start,
                reason: format!("entry {index} at log position {start}: {e:?}"),
            })?;
            out.push(h.into_entry(bytes.slice(total..)));
        }
        Ok(out)
    }

    /// The last membership entry at or before `index`.
    pub fn last_membership(&self, index: u64) -> Result<Option<LogEntry>> {
        let found = self.entry_log()?.lock().map.last_membership(index);
        match found {
            Some(m) => Ok(self.read_entries(m, m + 1)?.pop()),
            None => Ok(None),
        }
    }

    /// Where the body of data entry `index` starts (its header record is before it).
    pub fn entry_body_start(&self, index: u64) -> Result<Option<u64>> {
        let inner = self.entry_log()?.lock();
        Ok(inner
            .map
            .start(index)
            .map(|s| s + (FRAME_OVERHEAD + crate::record::EVENT_FIXED) as u64))
    }

    /// Commits every entry up to `index`: indexes the records of its data entries and makes
    /// them visible to readers and subscriptions. Committing what is already committed does
    /// nothing.
    pub fn commit_entries(&self, index: u64) -> Result<()> {
        let log = self.entry_log()?;
        let mut inner = log.lock();
        if inner.committed.is_some_and(|c| c >= index) {
            return Ok(());
        }
        let write_end = inner.appender.write_pos;
        let Some(to) = inner.map.end(index, write_end) else {
            return Err(Error::invalid(
                "entry",
                format!(
                    "cannot commit entry {index}: the log holds entries up to {:?}",
                    inner.map.last().map(|l| l.index)
                ),
            ));
        };
        let from = self.shared.log.committed_end();
        // The log end moves first: a reader that finds an entry in the index must also find
        // its record below the committed end it reads next.
        self.shared.log.set_committed_end(to);
        if let Err(e) = index_range(&self.shared, from, to) {
            let reason = self.shared.poison(format!("committing entry {index}: {e}"));
            return Err(Error::ReadOnly { reason });
        }
        self.shared.publish_end(to);
        inner.committed = Some(index);
        Ok(())
    }

    /// Saves the node's vote (opaque to the engine), durably.
    pub fn save_vote(&self, vote: &[u8]) -> Result<()> {
        self.entry_log()?;
        files::write(&files::path(&self.shared.config.dir, files::VOTE), vote)
    }

    /// The vote saved last, if any.
    pub fn read_vote(&self) -> Result<Option<Vec<u8>>> {
        self.entry_log()?;
        files::read(&files::path(&self.shared.config.dir, files::VOTE))
    }

    /// Saves the cluster's commit point as last heard (it may be ahead of this node's log).
    pub fn save_committed(&self, id: Option<EntryId>) -> Result<()> {
        self.entry_log()?;
        files::write(
            &files::path(&self.shared.config.dir, files::COMMITTED),
            &encode_id(id),
        )
    }

    /// The commit point saved last.
    pub fn read_committed(&self) -> Result<Option<EntryId>> {
        self.entry_log()?;
        read_committed(&self.shared.config.dir)
    }
}

fn encode_id(id: Option<EntryId>) -> Vec<u8> {
    match id {
        None => Vec::new(),
        Some(id) => [id.term, id.node, id.index]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    }
}

/// The commit point saved in `<data-dir>/raft/committed`.
pub(crate) fn read_committed(data_dir: &std::path::Path) -> Result<Option<EntryId>> {
    let path = files::path(data_dir, files::COMMITTED);
    let Some(b) = files::read(&path)? else {
        return Ok(None);
    };
    let v = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    match b.len() {
        0 => Ok(None),
        24 => Ok(Some(EntryId {
            term: v(0),
            node: v(1),
            index: v(2),
        })),
        n => Err(Error::Corruption {
            file: path,
            offset: 0,
            reason: format!("commit point of {n} bytes"),
        }),
    }
}

/// Indexes the event records in `[from, to)` (whole entries), skipping entry headers.
fn index_range(shared: &Shared, from: u64, to: u64) -> Result<()> {
    let mut cursor = Cursor::new(&shared.log, to, crate::recovery::SCAN_CHUNK);
    let mut ready = Vec::new();
    let mut ids = Vec::new();
    let mut next_revision: std::collections::HashMap<Arc<str>, u64> = Default::default();
    let mut pos = from;
    while pos < to {
        let item = match cursor.at(pos)? {
            Step::Record(item) => item,
            Step::End => break,
            Step::Bad(e) => return Err(e.into_error()),
        };
        if header::is_entry_header(&item.block[item.payload.clone()]) {
            if ready.len() >= crate::recovery::APPLY_BATCH {
                shared.index.apply(&ready, item.position);
                ready.clear();
            }
        } else {
            let (entry, id, _) = crate::recovery::entry_of(&item, &shared.log)?;
            // Each event must be its stream's next revision. A batch planned against a stale
            // index would break this; stop rather than index two events at one revision.
            let next = match next_revision.get(&entry.stream) {
                Some(n) => *n,
                None => shared
                    .index
                    .with_stream(&entry.stream, |st| st.and_then(|st| st.last_revision))
                    .map_or(0, |r| r + 1),
            };
            if entry.revision != next {
                return Err(Error::Corruption {
                    file: shared.log.dir.clone(),
                    offset: item.position,
                    reason: format!(
                        "the committed event at log position {} is revision {} of '{}', but the stream's next revision is {next}",
                        item.position, entry.revision, entry.stream
                    ),
                });
            }
            next_revision.insert(entry.stream.clone(), next + 1);
            ids.push((
                IdKey::new(&entry.stream, id),
                Seen {
                    stream: entry.stream.clone(),
                    revision: entry.revision,
                    position: entry.position,
                },
            ));
            ready.push(entry);
        }
        pos = item.position + (item.payload.len() + FRAME_OVERHEAD) as u64;
    }
    shared.index.apply(&ready, to);
    let window = shared.config.idempotency_window;
    let mut committed = shared
        .committed_ids
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    committed.extend(ids);
    let excess = committed.len().saturating_sub(window);
    committed.drain(..excess);
    Ok(())
}

/// Builds a data entry's body the way the writer does, for tests of the replication layer.
#[doc(hidden)]
pub fn test_body(stream: &str, first_revision: u64, events: usize) -> Bytes {
    let mut out = Vec::new();
    for i in 0..events {
        crate::record::encode_event(
            &mut out,
            &crate::record::EventRecord {
                commit: i + 1 == events,
                content_type: crate::types::ContentType::Json,
                stream,
                event_type: "Tested",
                revision: first_revision + i as u64,
                timestamp_ns: 0,
                event_id: uuid::Uuid::new_v4(),
                data: b"{}",
                metadata: &[],
            },
        );
    }
    Bytes::from(out)
}
