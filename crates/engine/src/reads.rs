//! The engine's public read operations: stream reads (with or without retention, with a byte
//! budget) and `$all` reads (with filters and scan and byte budgets).

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::filter::EventFilter;
use crate::types::{AllFrom, AllSlice, Direction, StreamFrom, StreamSlice};
use crate::validate::validate_stream_name;

impl Engine {
    /// Reads up to `max` events of a stream. Not-found and deleted streams are errors.
    pub fn read_stream(
        &self,
        stream: &str,
        from: StreamFrom,
        direction: Direction,
        max: usize,
    ) -> Result<StreamSlice> {
        validate_stream_name(stream)?;
        self.shared
            .read_stream(stream, from, direction, max, false, usize::MAX)
    }

    /// Reads a derived stream (`$ce-<category>`, `$et-<event type>`): each event as written,
    /// with its revision in the derived stream (dense, in log order, never reassigned). Events
    /// no longer readable in their own stream (deleted, truncated, aged out) come marked as
    /// not resolvable. The page stops at `max` entries or once their events reach
    /// `max_bytes` (at least one is returned); `next_revision` says where to go on.
    pub fn read_derived(
        &self,
        stream: &str,
        from: StreamFrom,
        direction: Direction,
        max: usize,
        max_bytes: usize,
    ) -> Result<crate::derived::DerivedSlice> {
        validate_stream_name(stream)?;
        if !crate::derived::is_derived(stream) {
            return Err(Error::invalid(
                "stream",
                format!("{stream} is not a derived stream ($ce-<category> or $et-<event type>)"),
            ));
        }
        self.shared
            .read_stream_revisions(stream, from, direction, max, false, max_bytes)
    }

    /// The last revision of a stream or a derived stream (with the errors of a read of it:
    /// not found, deleted).
    pub fn last_revision(&self, stream: &str) -> Result<u64> {
        if crate::derived::is_derived(stream) {
            self.read_derived(stream, StreamFrom::End, Direction::Backwards, 1, 1)
                .map(|s| s.last_revision)
        } else {
            self.read_stream(stream, StreamFrom::End, Direction::Backwards, 1)
                .map(|s| s.last_revision)
        }
    }

    /// Checks that `filter` can be served: one naming indexes (`$idx-ce-…`, `$idx-et-…`)
    /// needs the derived streams and may hold only prefixes an index answers. (Reads check
    /// it too; this lets a consumer group refuse such a filter when it is created.)
    pub fn check_filter(&self, filter: &EventFilter) -> Result<()> {
        crate::indexed::sources(filter, self.shared.index.rule(), |_| Vec::new()).map(|_| ())
    }

    /// [`Engine::read_stream`] that ignores the stream's retention metadata (`$tb`,
    /// `$maxCount`, `$maxAge`): every event ever written is returned. For servers reading their
    /// own system streams, whose contents no client's metadata may hide from them.
    pub fn read_stream_raw(
        &self,
        stream: &str,
        from: StreamFrom,
        direction: Direction,
        max: usize,
    ) -> Result<StreamSlice> {
        validate_stream_name(stream)?;
        self.shared
            .read_stream(stream, from, direction, max, true, usize::MAX)
    }

    /// Reads up to `max` events of the global log, examining at most `max(max, 1) * 32`
    /// records when filtered (see [`AllSlice::next_position`]).
    pub fn read_all(
        &self,
        from: AllFrom,
        direction: Direction,
        max: usize,
        filter: Option<&EventFilter>,
    ) -> Result<AllSlice> {
        let max_scan = if filter.is_some() {
            max.max(1).saturating_mul(32)
        } else {
            max
        };
        self.shared
            .read_all(from, direction, max, filter, max_scan, usize::MAX)
    }

    /// [`Engine::read_stream`] that also stops once the events returned reach `max_bytes`
    /// (at least one event is returned; see [`crate::event_cost`]); `next_revision` then says
    /// where to continue. For servers that must bound what one read holds in memory.
    pub fn read_stream_budget(
        &self,
        stream: &str,
        from: StreamFrom,
        direction: Direction,
        max: usize,
        max_bytes: usize,
    ) -> Result<StreamSlice> {
        validate_stream_name(stream)?;
        self.shared
            .read_stream(stream, from, direction, max, false, max_bytes)
    }

    /// [`Engine::read_all_scan`] that also stops once the events returned reach `max_bytes`
    /// (at least one event is returned); `next_position` then says where to continue.
    pub fn read_all_budget(
        &self,
        from: AllFrom,
        direction: Direction,
        max: usize,
        filter: Option<&EventFilter>,
        max_scan: usize,
        max_bytes: usize,
    ) -> Result<AllSlice> {
        self.shared
            .read_all(from, direction, max, filter, max_scan.max(1), max_bytes)
    }

    /// Like [`Engine::read_all`] with an explicit bound on records examined.
    pub fn read_all_scan(
        &self,
        from: AllFrom,
        direction: Direction,
        max: usize,
        filter: Option<&EventFilter>,
        max_scan: usize,
    ) -> Result<AllSlice> {
        self.shared
            .read_all(from, direction, max, filter, max_scan.max(1), usize::MAX)
    }
}
