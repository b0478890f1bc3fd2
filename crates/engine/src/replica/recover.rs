//! Opening a cluster node's log: the entry map is rebuilt by walking the entry headers up to
//! the index checkpoint (one small read per entry, bodies skipped), then every record after
//! the checkpoint is checked; committed entries are re-indexed, later complete entries are
//! kept (they may be committed by the cluster), and a torn last entry is cut.
//!
//! The commit point is the larger of the one saved and the last entry the index holds (the
//! index only ever holds committed entries), but never past the last complete entry: a node
//! never serves what it did not persist.

use super::header::{is_entry_header, parse_entry_header};
use super::map::EntryMap;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::record::{FrameError, FRAME_OVERHEAD};
use crate::recovery::{entry_of, Reindex, Scan, SCAN_CHUNK};
use crate::segment::{Cursor, Item, Log, ScanError, Step};

fn not_an_entry(log: &Log, position: u64, what: &str) -> Error {
    Error::Corruption {
        file: log.dir.clone(),
        offset: position,
        reason: format!(
            "log position {position} should start a replicated entry but holds {what}: this log was not written by a cluster node (cluster mode needs an empty data directory)"
        ),
    }
}

/// The entry header at `item`, checked to be the entry after the map's last one.
fn header_of(log: &Log, item: &Item, map: &EntryMap) -> Result<super::header::EntryHeader> {
    if !is_entry_header(&item.block[item.payload.clone()]) {
        return Err(not_an_entry(log, item.position, "an event record"));
    }
    let h = parse_entry_header(&item.block, item.payload.clone())
        .map_err(|e| not_an_entry(log, item.position, &format!("a bad entry header ({e:?})")))?;
    if let Some(next) = map.next_index() {
        if h.id.index != next {
            return Err(Error::Corruption {
                file: log.dir.clone(),
                offset: item.position,
                reason: format!(
                    "the entry at log position {} has index {}, but {next} was expected",
                    item.position, h.id.index
                ),
            });
        }
    }
    Ok(h)
}

pub(crate) fn scan(
    log: &Log,
    index: &Index,
    first_base: u64,
    physical_end: u64,
    saved_committed: Option<u64>,
    window: usize,
) -> Result<Scan> {
    let checkpoint = index.checkpoint().max(first_base);
    let mut map = EntryMap::default();
    let mut pos = first_base;
    // 1. Up to the checkpoint: headers only.
    let mut cursor = Cursor::new(log, physical_end, 4096);
    while pos < checkpoint {
        let item = match cursor.at(pos)? {
            Step::Record(item) => item,
            Step::End => break,
            Step::Bad(e) => return Err(e.into_error()),
        };
        let h = header_of(log, &item, &map)?;
        map.push(h.id, pos, h.kind == 2);
        pos = item.position + (item.payload.len() + FRAME_OVERHEAD) as u64 + h.body_len;
    }
    if pos != checkpoint {
        return Err(Error::Corruption {
            file: log.dir.clone(),
            offset: pos,
            reason: format!(
                "the index checkpoint {checkpoint} is not at the end of a replicated entry (the entry walk reached {pos})"
            ),
        });
    }
    let indexed = map.last().map(|l| l.index);
    let committed = saved_committed.max(indexed);

    // 2. After it: every record, entry by entry.
    let mut reindex = Reindex::new(index, window);
    let (mut complete_end, mut visible_end) = (pos, pos);
    let mut cursor = Cursor::new(log, physical_end, SCAN_CHUNK);
    let mut damage: Option<ScanError> = None;
    'entries: loop {
        let item = match cursor.at(pos)? {
            Step::Record(item) => item,
            Step::End => break,
            Step::Bad(e) => {
                damage = Some(e);
                break;
            }
        };
        let h = header_of(log, &item, &map)?;
        let body_start = item.position + (item.payload.len() + FRAME_OVERHEAD) as u64;
        let body_end = body_start + h.body_len;
        let in_commit = committed.is_some_and(|c| h.id.index <= c);
        let mut events = Vec::new();
        let mut at = body_start;
        while at < body_end {
            let rec = match cursor.at(at)? {
                Step::Record(rec) => rec,
                Step::End => {
                    damage = Some(torn(log, at));
                    break 'entries;
                }
                Step::Bad(e) => {
                    damage = Some(e);
                    break 'entries;
                }
            };
            if is_entry_header(&rec.block[rec.payload.clone()]) {
                return Err(not_an_entry(
                    log,
                    at,
                    "an entry header inside another entry's body",
                ));
            }
            let next = rec.position + (rec.payload.len() + FRAME_OVERHEAD) as u64;
            if next > body_end {
                return Err(Error::Corruption {
                    file: log.dir.clone(),
                    offset: at,
                    reason: format!(
                        "the record at log position {at} runs past the end of entry {}",
                        h.id.index
                    ),
                });
            }
            if in_commit {
                events.push(entry_of(&rec, log)?);
            }
            at = next;
        }
        map.push(h.id, item.position, h.kind == 2);
        pos = body_end;
        complete_end = body_end;
        if in_commit {
            for (entry, id, _) in events {
                reindex.add(entry, id);
            }
            visible_end = body_end;
            reindex.complete(visible_end);
        }
    }
    let (recent, reindexed) = reindex.finish(visible_end);
    let committed = committed.min(map.last().map(|l| l.index));
    Ok(Scan {
        recent,
        complete_end,
        visible_end,
        damage,
        reindexed,
        entries: Some((map, committed)),
    })
}

fn torn(log: &Log, position: u64) -> ScanError {
    ScanError {
        file: log.dir.clone(),
        offset: position,
        position,
        error: FrameError::Truncated,
    }
}
