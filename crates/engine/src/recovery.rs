//! Opening a log: checking segment headers and continuity, re-indexing the log after the index
//! checkpoint, and cutting a torn tail.
//!
//! The rule: only the end of the last segment can legitimately be damaged (a crash during a
//! write). A bad record there, with no valid record anywhere after it, is a torn tail and is cut
//! back to the end of the last complete append. Any other bad record is corruption: opening
//! fails with the file and byte offset.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::index::{Effect, Entry, Index};
use crate::io::Fs;
use crate::metadata::{StreamMetadata, METADATA_EVENT_TYPE, TOMBSTONE_EVENT_TYPE};
use crate::recent_ids::{RecentIds, Seen};
use crate::record::{check_frame, parse_header, stream_of, type_of, EVENT_FIXED, FRAME_OVERHEAD};
use crate::segment::{self, check_header, Cursor, Log, Segment, Step, HEADER_LEN};

/// Block size for the recovery scan.
pub(crate) const SCAN_CHUNK: usize = 4 * 1024 * 1024;
/// Index entries applied per call while re-indexing.
pub(crate) const APPLY_BATCH: usize = 64 * 1024;

/// Re-indexing what follows the checkpoint at open: events go into the recent-ID window and,
/// in runs of about [`APPLY_BATCH`] that end where an append (or entry) is complete, into the
/// index.
pub(crate) struct Reindex<'a> {
    index: &'a Index,
    recent: RecentIds,
    ready: Vec<Entry>,
    reindexed: u64,
}

impl<'a> Reindex<'a> {
    pub(crate) fn new(index: &'a Index, window: usize) -> Self {
        Reindex {
            index,
            recent: RecentIds::new(window),
            ready: Vec::with_capacity(APPLY_BATCH),
            reindexed: 0,
        }
    }

    pub(crate) fn add(&mut self, entry: Entry, id: uuid::Uuid) {
        self.recent.insert(
            id,
            Seen {
                stream: entry.stream.clone(),
                revision: entry.revision,
                position: entry.position,
            },
        );
        self.ready.push(entry);
    }

    /// Everything added so far is complete up to `end`.
    pub(crate) fn complete(&mut self, end: u64) {
        if self.ready.len() >= APPLY_BATCH {
            self.flush(end);
        }
    }

    fn flush(&mut self, end: u64) {
        self.reindexed += self.ready.len() as u64;
        self.index.apply(&self.ready, end);
        self.ready.clear();
    }

    /// Applies the rest, complete up to `end`.
    pub(crate) fn finish(mut self, end: u64) -> (RecentIds, u64) {
        self.flush(end);
        (self.recent, self.reindexed)
    }
}

/// What opening the store found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Committed end of the log after recovery.
    pub log_end: u64,
    /// Position the index was complete up to when opened (0: rebuilt from scratch).
    pub index_checkpoint: u64,
    /// Events re-indexed from the log after the checkpoint.
    pub reindexed_events: u64,
    /// Bytes cut from the end of the last segment (a torn or incomplete final write).
    pub truncated_bytes: u64,
    /// True when the index was dropped because it was ahead of the log.
    pub index_reset: bool,
    pub duration: Duration,
}

pub(crate) struct Recovered {
    pub log: Log,
    pub active: Arc<Segment>,
    pub recent: RecentIds,
    pub report: RecoveryReport,
    /// Where the next record goes (past the commit point on a cluster node holding
    /// uncommitted entries; `report.log_end` otherwise).
    pub write_end: u64,
    /// On a cluster node: the entry map and the last committed entry.
    pub entries: Option<(crate::replica::EntryMap, Option<u64>)>,
}

/// What the scan after the index checkpoint found.
pub(crate) struct Scan {
    pub recent: RecentIds,
    /// End of the last complete append (entry, on a cluster node): the log is cut here.
    pub complete_end: u64,
    /// End of what may be indexed and read (the commit point on a cluster node).
    pub visible_end: u64,
    pub damage: Option<segment::ScanError>,
    pub reindexed: u64,
    pub entries: Option<(crate::replica::EntryMap, Option<u64>)>,
}

/// How the log is laid out.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    Single,
    /// A cluster node's log, with the commit point saved last (if any).
    Replicated(Option<u64>),
}

fn open_segments(
    fs: &Arc<dyn Fs>,
    dir: &std::path::Path,
    durable: bool,
) -> Result<Vec<Arc<Segment>>> {
    fs.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut bases: Vec<u64> = fs
        .list(dir)
        .map_err(|e| Error::io(dir, e))?
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .collect();
    bases.sort_unstable();
    if let Some(first) = bases.first().filter(|b| **b != 0) {
        return Err(Error::DataLoss {
            dir: dir.to_owned(),
            reason: format!(
                "the first segment, {}, is missing: the oldest segment present is {}, which starts at log position {first}",
                segment::file_name(0),
                segment::file_name(*first)
            ),
        });
    }
    let mut segments = Vec::with_capacity(bases.len());
    for (i, base) in bases.iter().enumerate() {
        let path = dir.join(segment::file_name(*base));
        let file = fs.open(&path, false).map_err(|e| Error::io(&path, e))?;
        let len = file.len().map_err(|e| Error::io(&path, e))?;
        let mut header = vec![0u8; HEADER_LEN as usize];
        let n = file
            .read_full_at(&mut header, 0)
            .map_err(|e| Error::io(&path, e))?;
        header.truncate(n);
        let is_last = i + 1 == bases.len();
        match check_header(&header, &path) {
            Ok(b) if b == *base => {}
            Ok(b) => {
                return Err(Error::Corruption {
                    file: path,
                    offset: 16,
                    reason: format!(
                        "header records base position {b} but the file name says {base}"
                    ),
                })
            }
            // A crash while creating the newest segment leaves a header-only file, possibly torn.
            Err(_) if is_last && len <= HEADER_LEN => {
                tracing::warn!(path = %path.display(), "rewriting the torn header of the newest segment");
                file.set_len(0).map_err(|e| Error::io(&path, e))?;
                file.write_all_at(&segment::encode_header(*base), 0)
                    .map_err(|e| Error::io(&path, e))?;
                if durable {
                    file.sync_data().map_err(|e| Error::io(&path, e))?;
                }
            }
            Err(e) => return Err(e),
        }
        let seg = Arc::new(Segment {
            base: *base,
            path,
            file,
        });
        if let Some(prev) = segments.last() {
            let prev: &Arc<Segment> = prev;
            let prev_len = prev.file.len().map_err(|e| Error::io(&prev.path, e))?;
            let prev_end = prev.base + prev_len.saturating_sub(HEADER_LEN);
            if prev_end < seg.base {
                return Err(Error::DataLoss {
                    dir: dir.to_owned(),
                    reason: format!(
                        "log positions {prev_end} to {} are missing: {} ends at {prev_end}, but the next segment present is {} (segment {} is missing, or the end of {} was cut off)",
                        seg.base,
                        segment::file_name(prev.base),
                        segment::file_name(seg.base),
                        segment::file_name(prev_end),
                        segment::file_name(prev.base),
                    ),
                });
            }
            if prev_end != seg.base {
                return Err(Error::Corruption {
                    file: seg.path.clone(),
                    offset: 0,
                    reason: format!(
                        "segment starts at log position {} but the previous segment ({}) ends at {prev_end}",
                        seg.base,
                        prev.path.display()
                    ),
                });
            }
        }
        segments.push(seg);
    }
    Ok(segments)
}

/// Whether any valid frame starts in `[from, end)` of the segment: tells a torn tail (nothing
/// valid after the damage) from corruption in the middle of written data.
fn valid_frame_after(seg: &Segment, from: u64, end: u64) -> Result<Option<u64>> {
    let len = (end - from) as usize;
    let mut buf = vec![0u8; len];
    let n = seg
        .file
        .read_full_at(&mut buf, seg.offset_of(from))
        .map_err(|e| Error::io(&seg.path, e))?;
    buf.truncate(n);
    for i in 0..buf.len() {
        let rest = &buf[i..];
        if rest.len() < FRAME_OVERHEAD + EVENT_FIXED {
            break;
        }
        if check_frame(rest).is_ok() {
            return Ok(Some(from + i as u64));
        }
    }
    Ok(None)
}

/// What the index knows that the log no longer has: a newest segment it recorded that is
/// gone, or a checkpoint past the end of the log (in either durability mode the index only
/// ever holds committed records, so this means written and acknowledged data was lost).
fn evidence_of_loss(index: &Index, last: &Segment, log_end: u64) -> Result<Option<String>> {
    if let Some(newest) = index.newest_segment()? {
        if newest > last.base {
            return Ok(Some(format!(
                "segment {} is missing: the index recorded it as the newest segment, but the log now ends with {}",
                segment::file_name(newest),
                segment::file_name(last.base)
            )));
        }
    }
    let checkpoint = index.checkpoint();
    if checkpoint > log_end {
        return Ok(Some(format!(
            "the index has every event up to log position {checkpoint}, but the log ends at {log_end}: the last {} bytes of {} (or later segments) are gone",
            checkpoint - log_end,
            segment::file_name(last.base)
        )));
    }
    Ok(None)
}

/// Parses a record's index entry.
pub(crate) fn entry_of(item: &segment::Item, log: &Log) -> Result<(Entry, uuid::Uuid, bool)> {
    let p = &item.block[item.payload.clone()];
    let bad = |r: String| Error::Corruption {
        file: log.dir.clone(),
        offset: item.position,
        reason: format!("record at log position {}: {r}", item.position),
    };
    let h = parse_header(p).map_err(|e| bad(format!("{e:?}")))?;
    let stream = stream_of(p, &h).map_err(|e| bad(format!("{e:?}")))?;
    let event_type = type_of(p, &h).map_err(|e| bad(format!("{e:?}")))?;
    let effect = if stream.starts_with("$$") {
        match event_type {
            METADATA_EVENT_TYPE => {
                let data =
                    crate::record::decode_event(&item.block, item.payload.clone(), item.position)
                        .map_err(|e| bad(format!("{e:?}")))?
                        .data;
                let m = StreamMetadata::from_json(&data).map_err(bad)?;
                Some(Effect::Metadata(Arc::new(m)))
            }
            TOMBSTONE_EVENT_TYPE => Some(Effect::Tombstone),
            _ => None,
        }
    } else {
        None
    };
    Ok((
        Entry {
            stream: Arc::from(stream),
            revision: h.revision,
            position: item.position,
            effect,
            event_type: crate::derived::listed_by_type(stream, event_type)
                .then(|| Arc::from(event_type)),
        },
        h.event_id,
        h.is_commit(),
    ))
}

pub(crate) fn recover(
    fs: Arc<dyn Fs>,
    log_dir: &std::path::Path,
    index: &Index,
    durable: bool,
    window: usize,
    accept_loss: bool,
    mode: Mode,
) -> Result<Recovered> {
    let started = Instant::now();
    let mut segments = open_segments(&fs, log_dir, durable)?;
    let log_dir = log_dir.to_owned();
    if segments.is_empty() {
        let log = Log::new(log_dir.clone(), fs.clone(), Vec::new(), 0);
        log.create_segment(0, durable)?;
        segments = log.segments();
    }
    let last = segments.last().expect("at least one segment").clone();
    let last_len = last.file.len().map_err(|e| Error::io(&last.path, e))?;
    let physical_end = last.base + last_len - HEADER_LEN;
    let first_base = segments[0].base;
    let log = Log::new(log_dir.clone(), fs, segments.clone(), physical_end);

    let mut report = RecoveryReport {
        segments: segments.len(),
        index_checkpoint: index.checkpoint(),
        ..Default::default()
    };
    if let Some(loss) = evidence_of_loss(index, &last, physical_end)? {
        if !accept_loss {
            return Err(Error::DataLoss {
                dir: log_dir.clone(),
                reason: loss,
            });
        }
        tracing::error!(
            checkpoint = index.checkpoint(),
            log_end = physical_end,
            "{loss}; serving what is left because the loss was accepted, and rebuilding the index from the log"
        );
        index.clear()?;
        report.index_reset = true;
        report.index_checkpoint = 0;
    }
    check_layout(&log, first_base, physical_end, mode)?;
    let from = index.checkpoint().max(first_base);
    let scan = match mode {
        Mode::Single => scan_single(&log, index, from, physical_end, window)?,
        Mode::Replicated(saved) => {
            crate::replica::recover::scan(&log, index, first_base, physical_end, saved, window)?
        }
    };
    let Scan {
        mut recent,
        complete_end,
        visible_end,
        damage,
        reindexed,
        entries,
    } = scan;
    report.reindexed_events = reindexed;

    if let Some(e) = damage {
        // Damage is a torn tail only inside the last segment with nothing valid after it.
        if e.position < last.base {
            return Err(e.into_error());
        }
        if let Some(at) = valid_frame_after(&last, e.position + 1, physical_end)? {
            return Err(Error::Corruption {
                reason: format!(
                    "{}; valid records follow at log position {at}, so this is not a torn write",
                    e.reason()
                ),
                file: e.file,
                offset: e.offset,
            });
        }
    }
    if complete_end < physical_end {
        let cut = physical_end - complete_end;
        tracing::warn!(
            path = %last.path.display(),
            offset = last.offset_of(complete_end),
            bytes = cut,
            "cutting a torn or incomplete write from the end of the log"
        );
        last.file
            .set_len(last.offset_of(complete_end))
            .map_err(|e| Error::io(&last.path, e))?;
        if durable {
            last.file
                .sync_data()
                .map_err(|e| Error::io(&last.path, e))?;
        }
        report.truncated_bytes = cut;
    }
    log.set_committed_end(visible_end);
    report.log_end = visible_end;
    index.note_newest_segment(last.base)?;

    // Metadata of streams loaded from sled: parse it from the log.
    let mut meta_cursor = Cursor::new(&log, visible_end, 64 * 1024);
    for (stream, position) in index.metadata_to_load() {
        if let Step::Record(item) = meta_cursor.at(position)? {
            if let (
                Entry {
                    effect: Some(Effect::Metadata(m)),
                    ..
                },
                _,
                _,
            ) = entry_of(&item, &log)?
            {
                index.set_loaded_metadata(&stream, m);
            }
        }
    }

    // Refill the idempotency window from the events before the checkpoint.
    let mut back = index.checkpoint().min(visible_end);
    let mut back_cursor = Cursor::new(&log, visible_end, SCAN_CHUNK);
    while !recent.is_full() && back > first_base {
        match back_cursor.before(back)? {
            Step::Record(item)
                if crate::replica::header::is_entry_header(&item.block[item.payload.clone()]) =>
            {
                back = item.position;
            }
            Step::Record(item) => {
                let (entry, id, _) = entry_of(&item, &log)?;
                back = item.position;
                recent.insert_older(
                    id,
                    Seen {
                        stream: entry.stream,
                        revision: entry.revision,
                        position: entry.position,
                    },
                );
            }
            Step::End => break,
            Step::Bad(e) => return Err(e.into_error()),
        }
    }
    report.duration = started.elapsed();
    Ok(Recovered {
        log,
        active: last,
        recent,
        report,
        write_end: complete_end,
        entries,
    })
}

/// Refuses a single node's log opened as a cluster node's, and the other way round: the
/// first record says which it is (an entry header starts every cluster node's log).
fn check_layout(log: &Log, first_base: u64, physical_end: u64, mode: Mode) -> Result<()> {
    let mut cursor = Cursor::new(log, physical_end, 4096);
    let Step::Record(item) = cursor.at(first_base)? else {
        return Ok(());
    };
    let entry = crate::replica::header::is_entry_header(&item.block[item.payload.clone()]);
    let reason = match mode {
        Mode::Single if entry => "it was written by a cluster node: start it with the cluster settings",
        Mode::Replicated(_) if !entry => "it was written by a single node, not by a cluster node (cluster mode needs an empty data directory)",
        _ => return Ok(()),
    };
    Err(Error::WrongMode {
        dir: log.dir.clone(),
        reason: reason.into(),
    })
}

/// The scan of a single node's log after the checkpoint: re-indexes every complete append.
fn scan_single(
    log: &Log,
    index: &Index,
    from: u64,
    physical_end: u64,
    window: usize,
) -> Result<Scan> {
    let mut pos = from;
    let mut reindex = Reindex::new(index, window);
    let mut append: Vec<(Entry, uuid::Uuid)> = Vec::new();
    let mut complete_end = pos;
    let mut cursor = Cursor::new(log, physical_end, SCAN_CHUNK);
    let mut damage: Option<segment::ScanError> = None;
    loop {
        match cursor.at(pos)? {
            Step::End => break,
            Step::Bad(e) => {
                damage = Some(e);
                break;
            }
            Step::Record(item) => {
                let (entry, id, commit) = entry_of(&item, log)?;
                pos = item.position + (item.payload.len() + FRAME_OVERHEAD) as u64;
                append.push((entry, id));
                if commit {
                    for (entry, id) in append.drain(..) {
                        reindex.add(entry, id);
                    }
                    complete_end = pos;
                    reindex.complete(complete_end);
                }
            }
        }
    }
    let (recent, reindexed) = reindex.finish(complete_end);

    Ok(Scan {
        recent,
        complete_end,
        visible_end: complete_end,
        damage,
        reindexed,
        entries: None,
    })
}
