//! The per-stream index, derived from the log.
//!
//! In memory: the state of every stream (last revision, tombstone, metadata) and the index
//! entries (revision -> position) not yet written to sled. In sled, one tree:
//! - `e | name_len:u16 BE | name | chunk:u64 BE` -> positions of revisions
//!   `chunk*256 ..`: the first as `u64 LE`, each next as a varint distance from the one before
//!   (see `chunk`; revisions are dense, so a chunk is a plain sequence; the last chunk of a
//!   stream grows as events arrive)
//! - `s | name` -> `last_revision+1:u64 | flags:u8 | metadata_position+1:u64` (BE)
//! - `c` -> `checkpoint:u64 BE`: every event before this log position is in sled.
//! - `d` -> the category rule the derived streams were built with (see `derived`); an index
//!   built under another rule (or with them off) is rebuilt from the log.
//!
//! Derived streams (`$ce-…`, `$et-…`) are kept exactly like other streams: revision -> position
//! entries appended as their events are indexed, so they share the flush and the checkpoint.
//!
//! A background flusher moves entries to sled in large atomic batches behind the log; readers
//! look in memory first and in sled for older revisions, so they always see every committed event.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::derived::{CategoryRule, CATEGORY_PREFIX, EVENT_TYPE_PREFIX, STREAMS_STREAM};
use crate::error::{Error, Result};
use crate::metadata::StreamMetadata;

mod chunk;
mod derived;
mod flush;

const KEY_CHECKPOINT: &[u8] = b"c";
const KEY_FORMAT: &[u8] = b"v";
const KEY_DERIVED: &[u8] = b"d";
/// The base position of the newest segment the log had: evidence, at the next open, of a
/// newest segment that went missing.
const KEY_NEWEST_SEGMENT: &[u8] = b"n";
/// 3: chunks hold position distances as varints (see `chunk`).
const INDEX_FORMAT: u64 = 3;
const FLAG_TOMBSTONED: u8 = 1;
/// Revisions per sled index value.
const CHUNK: u64 = 256;

/// What indexing an event of a metadata stream `$$<s>` does to `s`.
#[derive(Debug, Clone)]
pub enum Effect {
    Metadata(Arc<StreamMetadata>),
    Tombstone,
}

#[derive(Debug, Clone, Default)]
pub struct StreamState {
    pub last_revision: Option<u64>,
    pub tombstoned: bool,
    pub metadata: Option<Arc<StreamMetadata>>,
    pub metadata_position: Option<u64>,
    /// Revision of `unflushed[0]`.
    unflushed_base: u64,
    /// Positions of revisions not yet in sled (a suffix of the stream).
    unflushed: Vec<u64>,
    dirty: bool,
}

impl StreamState {
    /// The first revision reads may return, after truncate-before and max-count.
    pub fn first_visible(&self) -> u64 {
        let Some(last) = self.last_revision else {
            return 0;
        };
        let meta = self.metadata.as_deref();
        let tb = meta.and_then(|m| m.truncate_before).unwrap_or(0);
        let by_count = meta
            .and_then(|m| m.max_count)
            .map_or(0, |c| (last + 1).saturating_sub(c));
        tb.max(by_count)
    }

    /// Records that `revision` (the next one) is at `position`.
    fn push(&mut self, revision: u64, position: u64) {
        if self.unflushed.is_empty() {
            self.unflushed_base = revision;
        }
        self.unflushed.push(position);
        self.last_revision = Some(revision);
        self.dirty = true;
    }

    /// True when the stream has events and at least one is not truncated away.
    pub fn has_visible(&self) -> bool {
        self.last_revision
            .is_some_and(|last| self.first_visible() <= last)
    }
}

/// One index update: an event was committed at `position`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub stream: Arc<str>,
    pub revision: u64,
    pub position: u64,
    /// For events of `$$<s>`: what they do to `s`.
    pub effect: Option<Effect>,
    /// The event type, for the derived streams (`None`: the event is listed in none).
    pub event_type: Option<Arc<str>>,
}

/// Positions grouped by derived stream (`prefix`, `key`), in order within each group.
#[derive(Default)]
struct Grouped<'a> {
    groups: Vec<(&'static str, &'a str, Vec<u64>)>,
    /// The group used last: consecutive events usually share their category and type.
    last: [usize; 2],
    /// Group indexes by key, once there are too many groups to search.
    many: HashMap<(&'static str, &'a str), usize>,
}

impl<'a> Grouped<'a> {
    const SEARCHED: usize = 16;

    fn add(&mut self, prefix: &'static str, key: &'a str, position: u64) {
        let slot = usize::from(prefix == EVENT_TYPE_PREFIX);
        let same = |g: &(&'static str, &'a str, Vec<u64>)| g.0 == prefix && g.1 == key;
        let found = match self.groups.get(self.last[slot]) {
            Some(g) if same(g) => Some(self.last[slot]),
            _ if self.groups.len() <= Self::SEARCHED => self.groups.iter().position(same),
            _ => self.many.get(&(prefix, key)).copied(),
        };
        let i = match found {
            Some(i) => i,
            None => {
                self.groups.push((prefix, key, Vec::new()));
                let i = self.groups.len() - 1;
                if self.groups.len() > Self::SEARCHED {
                    if self.many.is_empty() {
                        for (j, g) in self.groups.iter().enumerate() {
                            self.many.insert((g.0, g.1), j);
                        }
                    } else {
                        self.many.insert((prefix, key), i);
                    }
                }
                i
            }
        };
        self.groups[i].2.push(position);
        self.last[slot] = i;
    }
}

/// A stream's entries and state, copied for one flush.
struct FlushWork {
    name: Arc<str>,
    /// Revision of `positions[0]`.
    base: u64,
    positions: Vec<u64>,
    /// Encoded `s` value.
    state: [u8; 17],
}

pub struct Index {
    path: PathBuf,
    db: sled::Db,
    /// Kept in memory only (nothing is written to sled): the fallback when the index on disk
    /// cannot be written, e.g. on a full disk.
    memory_only: bool,
    streams: RwLock<HashMap<Arc<str>, StreamState>>,
    /// Every event before this position is in `streams` (memory or sled).
    indexed_end: AtomicU64,
    /// Position up to which sled is complete.
    checkpoint: AtomicU64,
    unflushed: AtomicU64,
    flush_lock: Mutex<()>,
    /// The category rule of the derived streams; `None`: none are kept.
    derived: Option<CategoryRule>,
    /// The names of the derived streams, sorted (for the `$et-` streams of a type prefix).
    derived_names: RwLock<BTreeSet<Arc<str>>>,
}

fn chunk_key(stream: &str, chunk: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(11 + stream.len());
    k.push(b'e');
    k.extend_from_slice(&(stream.len() as u16).to_be_bytes());
    k.extend_from_slice(stream.as_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

fn state_key(stream: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + stream.len());
    k.push(b's');
    k.extend_from_slice(stream.as_bytes());
    k
}

fn be_u64(v: &[u8]) -> Option<u64> {
    v.get(..8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// How long to wait for a previous instance in this process to let go of sled's file lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Opens the sled database. The engine's own `LOCK` file already keeps other processes out,
/// so a busy sled lock can only mean an engine in this process that was just dropped: sled
/// finishes its background writes on its own threads and releases the lock when the last of
/// them ends. Wait for that instead of failing the reopen.
fn open_db(path: &Path, cache_bytes: u64) -> sled::Result<sled::Db> {
    let started = Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(1000))
            .open();
        match opened {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl Index {
    /// Opens (or creates) the index at `path` and loads every stream's state.
    pub fn open(path: &Path, cache_bytes: u64, derived: Option<CategoryRule>) -> Result<Index> {
        let db = open_db(path, cache_bytes).map_err(|source| Error::Index {
            path: path.to_owned(),
            source,
        })?;
        Self::load(db, path, false, derived)
    }

    /// An empty index that lives in memory and is never written anywhere (entries stay in
    /// memory, the checkpoint stays at 0): for serving a store read-only when its index on
    /// disk cannot be written. Costs about 8 bytes of memory per event.
    pub fn open_in_memory(cache_bytes: u64, derived: Option<CategoryRule>) -> Result<Index> {
        let path = PathBuf::from("(in-memory index)");
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .open()
            .map_err(|source| Error::Index {
                path: path.clone(),
                source,
            })?;
        Self::load(db, &path, true, derived)
    }

    fn load(
        db: sled::Db,
        path: &Path,
        memory_only: bool,
        derived: Option<CategoryRule>,
    ) -> Result<Index> {
        let idx_err = |source| Error::Index {
            path: path.to_owned(),
            source,
        };
        let format = db
            .get(KEY_FORMAT)
            .map_err(idx_err)?
            .and_then(|v| be_u64(&v));
        let mut checkpoint = db
            .get(KEY_CHECKPOINT)
            .map_err(idx_err)?
            .and_then(|v| be_u64(&v))
            .unwrap_or(0);
        if format.is_some_and(|f| f != INDEX_FORMAT) {
            tracing::warn!(
                ?format,
                "index format differs from this build's; rebuilding it from the log"
            );
            db.clear().map_err(idx_err)?;
            checkpoint = 0;
        }
        let rule = CategoryRule::encode(derived.as_ref());
        let built_with = db.get(KEY_DERIVED).map_err(idx_err)?;
        if checkpoint > 0 && built_with.as_deref() != Some(&rule[..]) {
            tracing::warn!(
                "the index's derived streams were built with other settings; rebuilding the index from the log"
            );
            db.clear().map_err(idx_err)?;
            checkpoint = 0;
        }
        db.insert(KEY_FORMAT, &INDEX_FORMAT.to_be_bytes())
            .map_err(idx_err)?;
        db.insert(KEY_DERIVED, rule).map_err(idx_err)?;
        let mut streams = HashMap::new();
        let mut derived_names = BTreeSet::new();
        for kv in db.scan_prefix(b"s") {
            let (k, v) = kv.map_err(idx_err)?;
            let name = std::str::from_utf8(&k[1..]).map_err(|_| {
                idx_err(sled::Error::Unsupported("stream name is not UTF-8".into()))
            })?;
            if v.len() != 17 {
                return Err(idx_err(sled::Error::Unsupported(format!(
                    "bad state for stream {name}"
                ))));
            }
            let last = be_u64(&v[0..8]).unwrap_or(0);
            let meta = be_u64(&v[9..17]).unwrap_or(0);
            let last_revision = last.checked_sub(1);
            let name: Arc<str> = Arc::from(name);
            if crate::derived::is_derived(&name) {
                derived_names.insert(name.clone());
            }
            streams.insert(
                name,
                StreamState {
                    last_revision,
                    tombstoned: v[8] & FLAG_TOMBSTONED != 0,
                    metadata: None,
                    metadata_position: meta.checked_sub(1),
                    unflushed_base: last,
                    unflushed: Vec::new(),
                    dirty: false,
                },
            );
        }
        Ok(Index {
            path: path.to_owned(),
            db,
            memory_only,
            streams: RwLock::new(streams),
            indexed_end: AtomicU64::new(checkpoint),
            checkpoint: AtomicU64::new(checkpoint),
            unflushed: AtomicU64::new(0),
            flush_lock: Mutex::new(()),
            derived,
            derived_names: RwLock::new(derived_names),
        })
    }

    fn err(&self, source: sled::Error) -> Error {
        Error::Index {
            path: self.path.clone(),
            source,
        }
    }

    /// Drops everything: used when the index is found ahead of the log.
    pub fn clear(&self) -> Result<()> {
        self.db.clear().map_err(|e| self.err(e))?;
        self.db
            .insert(KEY_FORMAT, &INDEX_FORMAT.to_be_bytes())
            .map_err(|e| self.err(e))?;
        self.db
            .insert(KEY_DERIVED, CategoryRule::encode(self.derived.as_ref()))
            .map_err(|e| self.err(e))?;
        self.streams.write().expect("index lock").clear();
        self.derived_names.write().expect("index lock").clear();
        self.indexed_end.store(0, Ordering::Release);
        self.checkpoint.store(0, Ordering::Release);
        Ok(())
    }

    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.load(Ordering::Acquire)
    }

    /// The base of the newest segment recorded by [`Index::note_newest_segment`].
    pub fn newest_segment(&self) -> Result<Option<u64>> {
        Ok(self
            .db
            .get(KEY_NEWEST_SEGMENT)
            .map_err(|e| self.err(e))?
            .and_then(|v| be_u64(&v)))
    }

    /// Records (durably) that the log's newest segment starts at `base`. Called once a new
    /// segment file is durable, so the record never names a segment that was not created.
    pub fn note_newest_segment(&self, base: u64) -> Result<()> {
        if self.memory_only || self.newest_segment()? == Some(base) {
            return Ok(());
        }
        self.db
            .insert(KEY_NEWEST_SEGMENT, &base.to_be_bytes())
            .map_err(|e| self.err(e))?;
        self.sync()
    }

    pub fn indexed_end(&self) -> u64 {
        self.indexed_end.load(Ordering::Acquire)
    }

    pub fn unflushed_count(&self) -> u64 {
        self.unflushed.load(Ordering::Relaxed)
    }

    /// Applies committed events and moves `indexed_end` to `end`.
    pub fn apply(&self, entries: &[Entry], end: u64) {
        let mut streams = self.streams.write().expect("index lock");
        let mut added = entries.len() as u64;
        // The derived streams' new entries, grouped per stream (a batch usually touches few),
        // so that each is looked up once per batch rather than once per event.
        let mut derived = Grouped::default();
        for e in entries {
            Self::apply_one(&mut streams, e);
            if let (Some(rule), Some(event_type)) = (&self.derived, &e.event_type) {
                // Categories are of user streams; `event_type` is set only for the events
                // an `$et-` stream lists (see `derived::listed_by_type`).
                if !e.stream.starts_with('$') {
                    if let Some(category) = rule.category(&e.stream) {
                        derived.add(CATEGORY_PREFIX, category, e.position);
                    }
                    if e.revision == 0 {
                        derived.add(STREAMS_STREAM, "", e.position);
                    }
                }
                derived.add(EVENT_TYPE_PREFIX, event_type, e.position);
            }
        }
        let mut name = String::new();
        let mut created = Vec::new();
        for (prefix, key, positions) in derived.groups {
            added += positions.len() as u64;
            if let Some(new) = Self::list(&mut streams, &mut name, prefix, key, &positions) {
                created.push(new);
            }
        }
        if !created.is_empty() {
            // Taken under the streams lock (always in this order).
            self.derived_names
                .write()
                .expect("index lock")
                .extend(created);
        }
        self.unflushed.fetch_add(added, Ordering::Relaxed);
        // Under the streams lock: the flusher takes the streams and `indexed_end` together,
        // and must never write a state that is ahead of the checkpoint it writes with it.
        self.indexed_end.store(end, Ordering::Release);
        drop(streams);
    }

    fn apply_one(streams: &mut HashMap<Arc<str>, StreamState>, e: &Entry) {
        let st = streams.entry(e.stream.clone()).or_default();
        debug_assert_eq!(e.revision, st.unflushed_base + st.unflushed.len() as u64);
        st.push(e.revision, e.position);
        if let Some(effect) = &e.effect {
            let target = e
                .stream
                .strip_prefix("$$")
                .expect("effects come from metadata streams");
            let t = match streams.get_mut(target) {
                Some(t) => t,
                None => streams.entry(Arc::from(target)).or_default(),
            };
            match effect {
                Effect::Metadata(m) => {
                    t.metadata = Some(m.clone());
                    t.metadata_position = Some(e.position);
                }
                Effect::Tombstone => t.tombstoned = true,
            }
            t.dirty = true;
        }
    }

    /// Runs `f` on a stream's state under the read lock.
    pub fn with_stream<R>(&self, stream: &str, f: impl FnOnce(Option<&StreamState>) -> R) -> R {
        f(self.streams.read().expect("index lock").get(stream))
    }

    /// Sets parsed metadata loaded on open.
    pub fn set_loaded_metadata(&self, stream: &str, metadata: Arc<StreamMetadata>) {
        if let Some(st) = self.streams.write().expect("index lock").get_mut(stream) {
            st.metadata = Some(metadata);
        }
    }

    /// Streams whose metadata position is known but whose metadata is not loaded.
    pub fn metadata_to_load(&self) -> Vec<(String, u64)> {
        let streams = self.streams.read().expect("index lock");
        streams
            .iter()
            .filter(|(_, s)| s.metadata.is_none())
            .filter_map(|(n, s)| s.metadata_position.map(|p| (n.to_string(), p)))
            .collect()
    }

    /// All stream names with a state, with a copy of it.
    pub fn streams(&self) -> Vec<(Arc<str>, StreamState)> {
        let streams = self.streams.read().expect("index lock");
        streams
            .iter()
            .map(|(n, s)| {
                let mut s = s.clone();
                s.unflushed = Vec::new();
                (n.clone(), s)
            })
            .collect()
    }

    pub fn stream_count(&self) -> usize {
        self.streams.read().expect("index lock").len()
    }

    /// Positions of revisions `from..=to` of `stream`, ascending.
    pub fn positions(&self, stream: &str, from: u64, to: u64) -> Result<Vec<u64>> {
        if from > to {
            return Ok(Vec::new());
        }
        let (base, mem): (u64, Vec<u64>) = {
            let streams = self.streams.read().expect("index lock");
            let Some(st) = streams.get(stream) else {
                return Ok(Vec::new());
            };
            let base = st.unflushed_base;
            let lo = from.max(base);
            let mem = if to >= lo && lo < base + st.unflushed.len() as u64 {
                let a = (lo - base) as usize;
                let b = ((to - base + 1) as usize).min(st.unflushed.len());
                st.unflushed[a..b].to_vec()
            } else {
                Vec::new()
            };
            (base, mem)
        };
        let mut out = Vec::with_capacity((to - from + 1).min(4096) as usize);
        if from < base {
            let hi = to.min(base - 1);
            for chunk in from / CHUNK..=hi / CHUNK {
                let key = chunk_key(stream, chunk);
                let v = self
                    .db
                    .get(&key)
                    .map_err(|e| self.err(e))?
                    .unwrap_or_default();
                let first = chunk * CHUNK;
                let lo_i = from.max(first) - first;
                let hi_i = hi.min(first + CHUNK - 1) - first;
                let positions = chunk::decode(&v).ok_or_else(|| {
                    self.err(sled::Error::Unsupported(format!(
                        "index chunk {chunk} of stream {stream} is malformed"
                    )))
                })?;
                let have = positions.len() as u64;
                if hi_i >= have {
                    return Err(self.err(sled::Error::ReportableBug(format!(
                        "index chunk {chunk} of stream {stream} holds {have} entries, revision {} expected",
                        first + hi_i
                    ))));
                }
                out.extend_from_slice(&positions[lo_i as usize..=hi_i as usize]);
            }
        }
        out.extend(mem);
        Ok(out)
    }

    /// Makes sled durable on disk.
    pub fn sync(&self) -> Result<()> {
        if self.memory_only {
            return Ok(());
        }
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
