//! The window of recently written event IDs that makes `Any`/`StreamExists` retries idempotent.
//! Owned by the writer thread alone; refilled from the log tail on open.
//!
//! Recognition is scoped to the stream, as in KurrentDB: the same event ID appended to a
//! second stream is a new event there, not a retry. Entries are keyed by the ID and a hash of
//! the stream name (seeded per process, so names cannot be chosen offline to collide); a
//! lookup also compares the stored name, so a collision can only make a retry look new.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub stream: Arc<str>,
    pub revision: u64,
    pub position: u64,
}

/// Hashes a UUID by folding its bytes: event IDs are (mostly) random already, so SipHash's
/// protection buys nothing here and cost ~9% of the writer thread's time on large appends.
/// A client that sends non-random IDs only makes this map slower, never wrong.
#[derive(Default)]
pub struct UuidHasher(u64);

impl Hasher for UuidHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(29) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// An event ID within one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdKey {
    id: Uuid,
    stream: u64,
}

impl IdKey {
    pub fn new(stream: &str, id: Uuid) -> Self {
        Self::hashed(stream_hash(stream), id)
    }

    /// With the stream's [`stream_hash`] computed once for all IDs of an append.
    pub fn hashed(stream: u64, id: Uuid) -> Self {
        IdKey { id, stream }
    }
}

/// The seeded hash of a stream name that [`IdKey`]s carry.
pub fn stream_hash(stream: &str) -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    SEED.get_or_init(std::collections::hash_map::RandomState::new)
        .hash_one(stream)
}

type IdMap<V> = HashMap<IdKey, V, BuildHasherDefault<UuidHasher>>;

/// Two generations of IDs: new IDs go into `current`; when it holds `cap`, it becomes
/// `previous` and the old `previous` is dropped whole. So the window always remembers at least
/// the last `cap` IDs (and at most `2 * cap`). Evicting a whole generation at once is much
/// cheaper than removing the oldest ID on every insert: that removal probed a cold part of a
/// large table for every event and was the writer thread's largest cost on batched appends.
pub struct RecentIds {
    cap: usize,
    current: IdMap<Seen>,
    previous: IdMap<Seen>,
}

impl RecentIds {
    pub fn new(cap: usize) -> Self {
        RecentIds {
            cap,
            current: IdMap::default(),
            previous: IdMap::default(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// True once the window holds `cap` IDs (enough for refilling on open).
    pub fn is_full(&self) -> bool {
        self.current.len() + self.previous.len() >= self.cap
    }

    /// Where `id` was written in `stream`, if it is in the window.
    pub fn get(&self, stream: &str, id: Uuid) -> Option<&Seen> {
        self.get_hashed(stream, stream_hash(stream), id)
    }

    /// [`RecentIds::get`] with the stream's hash already computed.
    pub fn get_hashed(&self, stream: &str, hash: u64, id: Uuid) -> Option<&Seen> {
        let key = IdKey::hashed(hash, id);
        self.current
            .get(&key)
            .or_else(|| self.previous.get(&key))
            .filter(|s| &*s.stream == stream)
    }

    /// Records a newly written event (newest end).
    pub fn insert(&mut self, id: Uuid, seen: Seen) {
        self.insert_keyed(IdKey::new(&seen.stream, id), seen)
    }

    /// [`RecentIds::insert`] with the key already made (from `seen.stream` and the ID).
    pub fn insert_keyed(&mut self, key: IdKey, seen: Seen) {
        if self.cap == 0 {
            return;
        }
        if self.current.len() >= self.cap {
            let fresh = IdMap::with_capacity_and_hasher(self.cap, Default::default());
            self.previous = std::mem::replace(&mut self.current, fresh);
        }
        self.current.insert(key, seen);
    }

    /// Records an older event found while walking the log backwards on open (oldest end).
    pub fn insert_older(&mut self, id: Uuid, seen: Seen) {
        if self.is_full() || self.get(&seen.stream, id).is_some() {
            return;
        }
        self.current.insert(IdKey::new(&seen.stream, id), seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(rev: u64) -> Seen {
        Seen {
            stream: "s".into(),
            revision: rev,
            position: rev * 10,
        }
    }

    #[test]
    fn remembers_at_least_the_last_cap_ids_and_forgets_older_generations() {
        let mut w = RecentIds::new(2);
        for n in 1..=5 {
            w.insert(Uuid::from_u128(n), seen(n as u64));
            // The last two are always there.
            for recent in n.saturating_sub(1).max(1)..=n {
                assert_eq!(
                    w.get("s", Uuid::from_u128(recent)),
                    Some(&seen(recent as u64))
                );
            }
            assert!(w.len() <= 4);
        }
        // 1 and 2 were in the generation dropped when 5 arrived.
        assert!(w.get("s", Uuid::from_u128(1)).is_none());
        assert!(w.get("s", Uuid::from_u128(2)).is_none());
        assert_eq!(w.get("s", Uuid::from_u128(3)), Some(&seen(3)));
    }

    #[test]
    fn refill_on_open_stops_when_full_and_keeps_newer_entries() {
        let mut w = RecentIds::new(2);
        w.insert(Uuid::from_u128(10), seen(10));
        w.insert_older(Uuid::from_u128(10), seen(99));
        assert_eq!(w.get("s", Uuid::from_u128(10)), Some(&seen(10)));
        w.insert_older(Uuid::from_u128(9), seen(9));
        assert!(w.is_full());
        w.insert_older(Uuid::from_u128(8), seen(8));
        assert!(w.get("s", Uuid::from_u128(8)).is_none());
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn the_same_id_in_two_streams_is_two_entries() {
        let mut w = RecentIds::new(10);
        let id = Uuid::from_u128(7);
        w.insert(id, seen(1));
        let other = Seen {
            stream: "t".into(),
            revision: 0,
            position: 99,
        };
        w.insert(id, other.clone());
        assert_eq!(w.get("s", id), Some(&seen(1)));
        assert_eq!(w.get("t", id), Some(&other));
        assert!(w.get("u", id).is_none());
    }

    #[test]
    fn a_zero_window_remembers_nothing() {
        let mut w = RecentIds::new(0);
        w.insert(Uuid::from_u128(1), seen(1));
        assert!(w.get("s", Uuid::from_u128(1)).is_none());
    }
}
