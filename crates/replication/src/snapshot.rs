//! Snapshots. A node's state is its committed log (the index is derived from it), so a
//! snapshot up to entry S is the log itself up to S: building one copies nothing, and the
//! log it "covers" is never deleted. What a snapshot changes is how a node that is far behind
//! catches up: instead of AppendEntries calls (a few entries each, openraft's bookkeeping per
//! call), the leader streams its committed entries from the first one the node has not
//! committed, the node stages them in one file, and installs them in one pass.
//!
//! Installing is crash-safe at every step: a staging file left by a crash is replaced by the
//! next transfer, and entries appended from it before a crash are the leader's committed
//! entries, which the node's log may hold uncommitted like any others.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use strata_engine::replica::{EntryId, LogEntry};
use strata_engine::Engine;

/// The data of a snapshot.
#[derive(Debug)]
pub enum SnapshotData {
    /// This node's own committed log up to the snapshot's last entry (what a leader sends
    /// from).
    Log,
    /// Entries received from the leader, staged in a file (what a follower installs).
    Received(Received),
}

/// A complete staged transfer.
#[derive(Debug)]
pub struct Received {
    path: PathBuf,
    /// The index of the first and last entries in the file (`None`: the file is empty).
    range: Option<(u64, u64)>,
}

/// Where a node stages a snapshot it receives, under its data directory.
pub fn staging_path(data_dir: &Path) -> PathBuf {
    data_dir.join("raft").join("snapshot.incoming")
}

/// Removes a staging file left by a transfer that did not finish.
pub fn remove_leftover(data_dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(staging_path(data_dir)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes received entries to the staging file: each as a 4-byte length and the entry as the
/// log holds it, checked (header, consecutive indexes) as it arrives.
pub struct Staging {
    path: PathBuf,
    out: BufWriter<File>,
    range: Option<(u64, u64)>,
    /// The snapshot's last entry: nothing past it is accepted.
    last: u64,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Staging {
    /// Starts a staging file (replacing any earlier one) for a snapshot ending at entry
    /// `last`.
    pub fn create(data_dir: &Path, last: u64) -> io::Result<Self> {
        let path = staging_path(data_dir);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        Ok(Staging {
            path,
            out,
            range: None,
            last,
        })
    }

    /// Adds one entry.
    pub fn push(&mut self, entry: &Bytes) -> io::Result<()> {
        let decoded = LogEntry::decode(entry.clone()).map_err(invalid)?;
        let index = decoded.id.index;
        if let Some((_, prev)) = self.range {
            if index != prev + 1 {
                return Err(invalid(format!(
                    "snapshot entry {index} does not follow entry {prev}"
                )));
            }
        }
        if index > self.last {
            return Err(invalid(format!(
                "snapshot entry {index} is past the snapshot's last entry {}",
                self.last
            )));
        }
        let len = u32::try_from(entry.len())
            .map_err(|_| invalid(format!("snapshot entry {index} is over 4 GiB")))?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(entry)?;
        self.range = Some((self.range.map_or(index, |(first, _)| first), index));
        Ok(())
    }

    /// Makes the file durable and checks that it reaches the snapshot's last entry.
    pub fn finish(self) -> io::Result<Received> {
        if let Some((_, end)) = self.range {
            if end != self.last {
                return Err(invalid(format!(
                    "the snapshot transfer ended at entry {end}, before its last entry {}",
                    self.last
                )));
            }
        }
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        Ok(Received {
            path: self.path,
            range: self.range,
        })
    }
}

/// What a node being sent a snapshot needs first: the index of the first entry it has not
/// committed (committed entries are the same on every node, so they are never sent).
pub fn first_needed(engine: &Engine) -> io::Result<u64> {
    Ok(engine
        .committed_entry()
        .map_err(|e| io::Error::other(e.to_string()))?
        .map_or(0, |c| c.index + 1))
}

/// This node's entries from `from`, up to `last`, each encoded as the log holds it; stops
/// once `max_bytes` are read (always reads at least one entry while any is left).
pub fn read_encoded(
    engine: &Engine,
    from: u64,
    last: u64,
    max_bytes: usize,
) -> io::Result<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut total = 0;
    let mut next = from;
    while next <= last && (out.is_empty() || total < max_bytes) {
        let to = (next + 16).min(last + 1);
        let entries = engine
            .read_entries(next, to)
            .map_err(|e| io::Error::other(e.to_string()))?;
        if entries.is_empty() {
            return Err(io::Error::other(format!(
                "entry {next} of the snapshot is not in this node's log"
            )));
        }
        for e in entries {
            let mut buf = Vec::with_capacity(e.encoded_len() as usize);
            e.encode(&mut buf);
            total += buf.len();
            out.push(Bytes::from(buf));
            next = e.id.index + 1;
            if total >= max_bytes {
                break;
            }
        }
    }
    Ok(out)
}

/// Largest total of entry bytes appended to the log at once while installing.
const INSTALL_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Makes the log hold and commit every entry up to `last` (the snapshot's last entry), using
/// the staged entries for what it does not hold. Blocking.
pub fn install(engine: &Engine, received: &Received, last: EntryId) -> io::Result<()> {
    let err = |e: strata_engine::Error| io::Error::other(e.to_string());
    let committed = engine.committed_entry().map_err(err)?;
    if committed.is_some_and(|c| c.index >= last.index) {
        return remove(received);
    }
    if engine.entry_id(last.index).map_err(err)? == Some(last) {
        // The log already holds the snapshot's entries (they match up to the last one).
        engine.commit_entries(last.index).map_err(err)?;
        return remove(received);
    }
    // Everything after the commit point is replaced: committed entries are the same on every
    // node, and the rest of this node's log conflicts with the snapshot.
    engine
        .truncate_entries_after(committed.map(|c| c.index))
        .map_err(err)?;
    // The first entry the log needs (a log starts at entry 0).
    let mut next = committed.map_or(0, |c| c.index + 1);
    let Some((first, end)) = received.range else {
        return Err(invalid(format!(
            "the snapshot up to entry {} came without entries, and this node holds entries only up to {:?}",
            last.index,
            committed.map(|c| c.index)
        )));
    };
    if first > next || end != last.index {
        return Err(invalid(format!(
            "the snapshot holds entries {first}..={end}, but this node needs {next}..={}",
            last.index
        )));
    }
    let mut input = BufReader::with_capacity(1 << 20, File::open(&received.path)?);
    let mut batch = Vec::new();
    let mut bytes = 0;
    loop {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        input.read_exact(&mut buf)?;
        let entry = LogEntry::decode(Bytes::from(buf)).map_err(invalid)?;
        if entry.id.index < next {
            continue; // committed here already
        }
        next = entry.id.index + 1;
        bytes += entry.encoded_len() as usize;
        batch.push(entry);
        if bytes >= INSTALL_BATCH_BYTES {
            engine.append_entries(&batch).map_err(err)?;
            batch.clear();
            bytes = 0;
        }
    }
    if !batch.is_empty() {
        engine.append_entries(&batch).map_err(err)?;
    }
    engine.sync_entries().map_err(err)?;
    if engine.entry_id(last.index).map_err(err)? != Some(last) {
        return Err(invalid(format!(
            "after installing the snapshot, entry {} is not the snapshot's last entry",
            last.index
        )));
    }
    engine.commit_entries(last.index).map_err(err)?;
    remove(received)
}

fn remove(received: &Received) -> io::Result<()> {
    match std::fs::remove_file(&received.path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
