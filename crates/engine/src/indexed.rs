//! `$all` reads answered from the derived streams instead of a scan of the log. A filter is
//! answered this way when the events it matches are exactly those listed in a few derived
//! streams, so the read costs in proportion to the matches:
//!
//! - a stream-name prefix `$idx-ce-<category>` or `$idx-et-<event type>` (KurrentDB's
//!   secondary-index filters) names one derived stream;
//! - a stream-name prefix `<category><separator>`, under the first-separator rule, matches
//!   exactly the streams of that category;
//! - an event-type prefix not starting with `$` matches exactly the events listed in the
//!   `$et-` streams of the types starting with it.
//!
//! Every entry is returned, as a scan would return it, whether or not its event is still
//! readable in its own stream. Other filters (regular expressions, other prefixes) scan.

use crate::derived::{CategoryRule, CATEGORY_PREFIX, EVENT_TYPE_PREFIX};
use crate::engine::Shared;
use crate::error::{Error, Result};
use crate::filter::{EventFilter, FilterOn, Matcher};
use crate::reader::RANDOM_CHUNK;
use crate::segment::{Cursor, Step};
use crate::types::{AllFrom, AllSlice, Direction, RecordedEvent};

/// Stream-name filter prefixes starting with this name a derived index.
pub const INDEX_FILTER_PREFIX: &str = "$idx-";
/// How many log bytes an indexed read counts as one record passed over: such a read skips
/// the records that do not match without looking at them, and reports this estimate as
/// `records_scanned`, so that subscriptions still checkpoint as the log moves.
const BYTES_PER_SKIPPED_RECORD: u64 = 256;
/// At most this many derived streams are merged to answer one filter; a filter that would
/// need more scans the log (or, naming indexes with `$idx-`, is refused).
pub const MAX_INDEX_SOURCES: usize = 64;

/// The derived streams whose union is exactly what `filter` matches; `None`: scan the log.
/// `event_types(prefix)` lists the `$et-` streams whose type starts with `prefix`.
pub(crate) fn sources(
    filter: &EventFilter,
    rule: Option<&CategoryRule>,
    event_types: impl Fn(&str) -> Vec<String>,
) -> Result<Option<Vec<String>>> {
    let Matcher::Prefixes(prefixes) = &filter.matcher else {
        return Ok(None);
    };
    let names_index = filter.on == FilterOn::StreamName
        && prefixes.iter().any(|p| p.starts_with(INDEX_FILTER_PREFIX));
    let Some(rule) = rule else {
        return if names_index {
            Err(Error::DerivedStreamsOff {
                what: format!("the filter {}…", INDEX_FILTER_PREFIX),
            })
        } else {
            Ok(None)
        };
    };
    let mut sources = Vec::new();
    for p in prefixes {
        match filter.on {
            FilterOn::StreamName => {
                if let Some(name) = p.strip_prefix(INDEX_FILTER_PREFIX) {
                    let derived = format!("${name}");
                    let key = derived
                        .strip_prefix(CATEGORY_PREFIX)
                        .or_else(|| derived.strip_prefix(EVENT_TYPE_PREFIX));
                    if key.is_none_or(str::is_empty) {
                        return Err(Error::invalid(
                            "filter",
                            format!(
                                "{p:?} names no index: use {INDEX_FILTER_PREFIX}ce-<category> or \
                                 {INDEX_FILTER_PREFIX}et-<event type>"
                            ),
                        ));
                    }
                    sources.push(derived);
                } else if let Some(category) = category_of_prefix(rule, p) {
                    sources.push(format!("{CATEGORY_PREFIX}{category}"));
                } else if names_index {
                    return Err(Error::invalid(
                        "filter",
                        format!(
                            "a filter naming indexes ({INDEX_FILTER_PREFIX}…) may hold only \
                             prefixes an index answers; {p:?} is not one (use a separate read)"
                        ),
                    ));
                } else {
                    return Ok(None);
                }
            }
            FilterOn::EventType => {
                if p.is_empty() || p.starts_with('$') {
                    return Ok(None);
                }
                sources.extend(event_types(p));
            }
        }
        if sources.len() > MAX_INDEX_SOURCES {
            break;
        }
    }
    sources.sort_unstable();
    sources.dedup();
    if sources.len() > MAX_INDEX_SOURCES {
        if names_index {
            return Err(Error::invalid(
                "filter",
                format!("a filter may name at most {MAX_INDEX_SOURCES} indexes"),
            ));
        }
        return Ok(None);
    }
    Ok(Some(sources))
}

/// The category whose streams are exactly those starting with `prefix`, if there is one:
/// `prefix` is a category followed by the separator, and categories end at the first one.
fn category_of_prefix<'a>(rule: &CategoryRule, prefix: &'a str) -> Option<&'a str> {
    if rule.from_last {
        return None;
    }
    let category = prefix.strip_suffix(rule.separator)?;
    (!category.is_empty() && !category.starts_with('$') && !category.contains(rule.separator))
        .then_some(category)
}

impl Shared {
    /// A `$all` read of the events listed in `sources` (derived streams), as a filtered scan
    /// would return them; `end` is the visible end read before `sources` were chosen.
    pub(crate) fn read_all_indexed(
        &self,
        sources: &[String],
        from: AllFrom,
        direction: Direction,
        max: usize,
        max_bytes: usize,
        end: u64,
    ) -> Result<AllSlice> {
        let start_of_log = self.log.segments().first().map_or(0, |s| s.base);
        let pos = match from {
            AllFrom::Start => start_of_log,
            AllFrom::End => end,
            AllFrom::Position(p) => p.clamp(start_of_log, end.max(start_of_log)),
        };
        let exhausted = match direction {
            Direction::Forwards => end,
            Direction::Backwards => start_of_log,
        };
        if max == 0 {
            return Ok(AllSlice {
                events: Vec::new(),
                next_position: pos,
                is_end: pos == exhausted,
                records_scanned: 0,
            });
        }
        // Up to max + 1 from each source: the one past the page says where the next starts.
        let want = max.saturating_add(1);
        let mut positions = Vec::new();
        for s in sources {
            positions.extend(self.source_positions(s, direction, pos, want)?);
        }
        positions.retain(|&p| p >= start_of_log && p < end);
        match direction {
            Direction::Forwards => positions.sort_unstable(),
            Direction::Backwards => positions.sort_unstable_by(|a, b| b.cmp(a)),
        }
        positions.dedup();
        let mut cursor = Cursor::new(&self.log, self.log.committed_end(), RANDOM_CHUNK);
        let mut events: Vec<RecordedEvent> = Vec::with_capacity(positions.len().min(max));
        let mut bytes = 0usize;
        let mut next = None;
        for &p in &positions {
            if events.len() == max || bytes >= max_bytes {
                // Forwards: no match lies between the last event returned and `p`;
                // backwards: the next page holds what lies before the last one returned.
                next = Some(match (direction, events.last()) {
                    (Direction::Backwards, Some(e)) => e.position,
                    _ => p,
                });
                break;
            }
            let e = match cursor.at(p)? {
                Step::Record(item) => crate::reader::decode(&item)?,
                Step::End => {
                    return Err(Error::Corruption {
                        file: self.log.dir.clone(),
                        offset: p,
                        reason: format!(
                            "a derived stream points at log position {p}, past the end of the log"
                        ),
                    })
                }
                Step::Bad(e) => return Err(e.into_error()),
            };
            bytes += crate::reader::event_cost(&e);
            events.push(e);
        }
        let next_position = next.unwrap_or(exhausted);
        let passed = (next_position.abs_diff(pos) / BYTES_PER_SKIPPED_RECORD) as usize;
        let records_scanned = passed.max(events.len());
        Ok(AllSlice {
            events,
            next_position,
            is_end: next.is_none(),
            records_scanned,
        })
    }

    /// Up to `n` positions of the derived stream `stream` from `pos` in `direction`
    /// (forwards: at or after it; backwards: before it), nearest first.
    fn source_positions(
        &self,
        stream: &str,
        direction: Direction,
        pos: u64,
        n: usize,
    ) -> Result<Vec<u64>> {
        let Some(last) = self
            .index
            .with_stream(stream, |st| st.and_then(|s| s.last_revision))
        else {
            return Ok(Vec::new());
        };
        // The number of entries before `pos` (positions grow with revisions).
        let (mut lo, mut hi) = (0u64, last + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = self.index.positions(stream, mid, mid)?;
            if at.first().is_some_and(|&p| p < pos) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let n = n as u64;
        Ok(match direction {
            Direction::Forwards if lo > last => Vec::new(),
            Direction::Forwards => {
                self.index
                    .positions(stream, lo, last.min(lo.saturating_add(n - 1)))?
            }
            Direction::Backwards if lo == 0 => Vec::new(),
            Direction::Backwards => {
                let hi = lo - 1;
                let mut v = self.index.positions(stream, hi.saturating_sub(n - 1), hi)?;
                v.reverse();
                v
            }
        })
    }
}
