//! Stream reads (through the index) and `$all` reads (straight through the segments).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::derived::{DerivedEvent, DerivedSlice, EVENT_TYPE_PREFIX};
use crate::engine::Shared;
use crate::error::{Error, Result};
use crate::filter::EventFilter;
use crate::record::{decode_event, parse_header, stream_of, type_of, FRAME_OVERHEAD};
use crate::replica::header::is_entry_header;
use crate::segment::{Cursor, Item, Step};
use crate::types::{AllFrom, AllSlice, Direction, RecordedEvent, StreamFrom, StreamSlice};

/// Block size for reads that jump between positions (stream reads).
pub(crate) const RANDOM_CHUNK: usize = 64 * 1024;
/// Block size for sequential `$all` reads.
const SEQUENTIAL_CHUNK: usize = 1024 * 1024;

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// What an event counts against a read's byte budget: its bodies, names and a fixed allowance
/// for the fields around them (close to its size in a response message).
pub fn event_cost(e: &RecordedEvent) -> usize {
    e.data.len() + e.metadata.len() + e.stream.len() + e.event_type.len() + 100
}

pub(crate) fn decode(item: &Item) -> Result<RecordedEvent> {
    decode_event(&item.block, item.payload.clone(), item.position).map_err(|e| Error::Corruption {
        file: "log".into(),
        offset: item.position,
        reason: format!(
            "undecodable record at log position {}: {e:?}",
            item.position
        ),
    })
}

/// Whether a stream is tombstoned, its first visible revision, and the oldest visible
/// timestamp (from `$maxAge`).
type Visibility = (bool, u64, Option<i64>);

impl Shared {
    /// The event at a position known to hold one (from the index).
    pub(crate) fn read_at(&self, cursor: &mut Cursor<'_>, position: u64) -> Result<RecordedEvent> {
        match cursor.at(position)? {
            Step::Record(item) => decode(&item),
            Step::End => Err(Error::Corruption {
                file: self.log.dir.clone(),
                offset: position,
                reason: format!(
                    "the index points at log position {position}, past the end of the log"
                ),
            }),
            Step::Bad(e) => Err(e.into_error()),
        }
    }

    /// A stream read. `raw` ignores the stream's retention metadata (`$tb`, `$maxCount`,
    /// `$maxAge`): every event ever written to it is visible.
    pub(crate) fn read_stream(
        &self,
        stream: &str,
        from: StreamFrom,
        direction: Direction,
        max: usize,
        raw: bool,
        max_bytes: usize,
    ) -> Result<StreamSlice> {
        // Derived streams list other streams' events, whose own revisions are not theirs:
        // they are read through `Engine::read_derived`, which gives both.
        if crate::derived::is_derived(stream) {
            return Err(Error::StreamNotFound {
                stream: stream.into(),
            });
        }
        let slice = self.read_stream_revisions(stream, from, direction, max, raw, max_bytes)?;
        Ok(StreamSlice {
            events: slice.events.into_iter().map(|d| d.event).collect(),
            next_revision: slice.next_revision,
            last_revision: slice.last_revision,
        })
    }

    /// What decides whether events of `stream` are still readable there.
    fn visibility(&self, stream: &str) -> Visibility {
        self.index.with_stream(stream, |st| match st {
            None => (true, 0, None),
            Some(st) => {
                let max_age = st.metadata.as_ref().and_then(|m| m.max_age);
                let oldest = max_age.map(|age| now_ns().saturating_sub(age.as_nanos() as i64));
                (st.tombstoned, st.first_visible(), oldest)
            }
        })
    }

    /// [`Shared::read_stream`] with each event's revision in the stream read (which, for a
    /// derived stream, is not the event's own).
    pub(crate) fn read_stream_revisions(
        &self,
        stream: &str,
        from: StreamFrom,
        direction: Direction,
        max: usize,
        raw: bool,
        max_bytes: usize,
    ) -> Result<DerivedSlice> {
        let derived = crate::derived::is_derived(stream);
        let (last, first, max_age) = self.index.with_stream(stream, |st| {
            let st = st.ok_or_else(|| Error::StreamNotFound {
                stream: stream.into(),
            })?;
            if st.tombstoned {
                return Err(Error::StreamDeleted {
                    stream: stream.into(),
                });
            }
            match st.last_revision {
                Some(last) if raw => Ok((last, 0, None)),
                Some(last) if st.has_visible() => Ok((
                    last,
                    st.first_visible(),
                    st.metadata.as_ref().and_then(|m| m.max_age),
                )),
                _ => Err(Error::StreamNotFound {
                    stream: stream.into(),
                }),
            }
        })?;
        let empty = |next| DerivedSlice {
            events: Vec::new(),
            next_revision: next,
            last_revision: last,
        };
        if max == 0 {
            return Ok(empty(None));
        }
        let (lo, hi, next) = match direction {
            Direction::Forwards => {
                let start = match from {
                    StreamFrom::Start => first,
                    StreamFrom::End => return Ok(empty(None)),
                    StreamFrom::Revision(r) => r.max(first),
                };
                if start > last {
                    return Ok(empty(None));
                }
                let hi = last.min(start.saturating_add(max as u64 - 1));
                (start, hi, (hi < last).then_some(hi + 1))
            }
            Direction::Backwards => {
                let start = match from {
                    StreamFrom::Start => first,
                    StreamFrom::End => last,
                    StreamFrom::Revision(r) => r.min(last),
                };
                if start < first {
                    return Ok(empty(None));
                }
                let lo = first.max(start.saturating_sub(max as u64 - 1));
                (lo, start, (lo > first).then(|| lo - 1))
            }
        };
        let mut positions = self.index.positions(stream, lo, hi)?;
        if direction == Direction::Backwards {
            positions.reverse();
        }
        let oldest_ns = max_age.map(|age| now_ns().saturating_sub(age.as_nanos() as i64));
        let mut cursor = Cursor::new(&self.log, self.log.committed_end(), RANDOM_CHUNK);
        let mut events = Vec::with_capacity(positions.len().min(1024));
        let (mut bytes, mut next) = (0usize, next);
        // The visibility of the last source stream seen: a derived stream's consecutive
        // entries are often of one stream (an append's events), so it is looked up once.
        let mut seen: Option<(std::sync::Arc<str>, Visibility)> = None;
        for (i, pos) in positions.into_iter().enumerate() {
            if bytes >= max_bytes {
                // Cut at the byte budget: continue from the first revision not returned.
                let i = i as u64;
                next = Some(match direction {
                    Direction::Forwards => lo + i,
                    Direction::Backwards => hi - i,
                });
                break;
            }
            let e = self.read_at(&mut cursor, pos)?;
            if oldest_ns.is_some_and(|oldest| e.timestamp_ns < oldest) {
                continue;
            }
            let resolvable = !derived || raw || {
                let (gone, first, oldest) = match &seen {
                    Some((name, v)) if **name == *e.stream => *v,
                    _ => {
                        let v = self.visibility(&e.stream);
                        seen = Some((std::sync::Arc::from(e.stream.as_str()), v));
                        v
                    }
                };
                !gone && e.revision >= first && oldest.is_none_or(|o| e.timestamp_ns >= o)
            };
            let revision = match direction {
                Direction::Forwards => lo + i as u64,
                Direction::Backwards => hi - i as u64,
            };
            bytes += event_cost(&e);
            events.push(DerivedEvent {
                revision,
                event: e,
                resolvable,
            });
        }
        Ok(DerivedSlice {
            events,
            next_revision: next,
            last_revision: last,
        })
    }

    /// Reads `$all`. At most `max` events are returned and at most `max_scan` records are
    /// examined, so a filtered read that finds nothing still returns promptly with a position
    /// to continue from.
    pub(crate) fn read_all(
        &self,
        from: AllFrom,
        direction: Direction,
        max: usize,
        filter: Option<&EventFilter>,
        max_scan: usize,
        max_bytes: usize,
    ) -> Result<AllSlice> {
        let end = self.visible_end();
        if let Some(f) = filter {
            // Chosen after `end` was read: every event before it is in the derived streams.
            let types = |p: &str| self.index.derived_with_prefix(EVENT_TYPE_PREFIX, p);
            if let Some(sources) = crate::indexed::sources(f, self.index.rule(), types)? {
                return self.read_all_indexed(&sources, from, direction, max, max_bytes, end);
            }
        }
        let start_of_log = self.log.segments().first().map_or(0, |s| s.base);
        let mut pos = match (from, direction) {
            (AllFrom::Start, _) => start_of_log,
            (AllFrom::End, _) => end,
            (AllFrom::Position(p), _) => p.clamp(start_of_log, end.max(start_of_log)),
        };
        let mut events = Vec::new();
        let mut scanned = 0usize;
        let mut cursor = Cursor::new(&self.log, end, SEQUENTIAL_CHUNK);
        let user_position = matches!(from, AllFrom::Position(_));
        let mut is_end = false;
        let mut bytes = 0usize;
        while events.len() < max && scanned < max_scan && bytes < max_bytes {
            let step = match direction {
                Direction::Forwards if pos >= end => Step::End,
                Direction::Forwards => cursor.at(pos)?,
                Direction::Backwards if pos <= start_of_log => Step::End,
                Direction::Backwards => cursor.before(pos)?,
            };
            let item = match step {
                Step::Record(item) => item,
                Step::End => {
                    is_end = true;
                    break;
                }
                Step::Bad(e) if scanned == 0 && user_position => {
                    return Err(Error::InvalidPosition {
                        position: e.position.max(pos),
                    });
                }
                Step::Bad(e) => return Err(e.into_error()),
            };
            scanned += 1;
            let frame_len = (item.payload.len() + FRAME_OVERHEAD) as u64;
            let is_header = is_entry_header(&item.block[item.payload.clone()]);
            let keep = match filter {
                _ if is_header => false,
                None => true,
                Some(f) => {
                    let p = &item.block[item.payload.clone()];
                    let h = parse_header(p).map_err(|e| Error::Corruption {
                        file: self.log.dir.clone(),
                        offset: item.position,
                        reason: format!(
                            "undecodable record at log position {}: {e:?}",
                            item.position
                        ),
                    })?;
                    match (stream_of(p, &h), type_of(p, &h)) {
                        (Ok(s), Ok(t)) => f.matches(s, t)?,
                        _ => false,
                    }
                }
            };
            if keep {
                let e = decode(&item)?;
                bytes += event_cost(&e);
                events.push(e);
            }
            pos = match direction {
                Direction::Forwards => item.position + frame_len,
                Direction::Backwards => item.position,
            };
        }
        if !is_end {
            is_end = match direction {
                Direction::Forwards => pos >= end,
                Direction::Backwards => pos <= start_of_log,
            };
        }
        Ok(AllSlice {
            events,
            next_position: pos,
            is_end,
            records_scanned: scanned,
        })
    }

    /// Checks every record up to the committed end; stops with [`Error::Closed`] once `stop`
    /// is set.
    pub(crate) fn verify(
        &self,
        stop: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<crate::engine::VerifyReport> {
        let end = self.log.committed_end();
        let segments = self.log.segments();
        let mut pos = segments.first().map_or(0, |s| s.base);
        let mut cursor = Cursor::new(&self.log, end, SEQUENTIAL_CHUNK);
        let (mut records, mut open_append) = (0u64, None::<u64>);
        while pos < end {
            if records % 4096 == 0
                && stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
            {
                return Err(Error::Closed);
            }
            let item = match cursor.at(pos)? {
                Step::Record(item) => item,
                Step::End => break,
                Step::Bad(e) => return Err(e.into_error()),
            };
            if is_entry_header(&item.block[item.payload.clone()]) {
                records += 1;
                pos = item.position + (item.payload.len() + FRAME_OVERHEAD) as u64;
                continue;
            }
            let h =
                parse_header(&item.block[item.payload.clone()]).map_err(|e| Error::Corruption {
                    file: self.log.dir.clone(),
                    offset: item.position,
                    reason: format!(
                        "undecodable record at log position {}: {e:?}",
                        item.position
                    ),
                })?;
            open_append = if h.is_commit() {
                None
            } else {
                open_append.or(Some(pos))
            };
            records += 1;
            pos = item.position + (item.payload.len() + FRAME_OVERHEAD) as u64;
        }
        if let Some(start) = open_append {
            return Err(Error::Corruption {
                file: self.log.dir.clone(),
                offset: start,
                reason: format!("the append starting at log position {start} has no commit record"),
            });
        }
        let start = segments.first().map_or(0, |s| s.base);
        Ok(crate::engine::VerifyReport {
            records,
            bytes: end - start,
            segments: segments.len(),
        })
    }
}
