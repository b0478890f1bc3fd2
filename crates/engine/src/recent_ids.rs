//! The window of recently written event IDs that makes `Any`/`StreamExists` retries idempotent.
//! Owned by the writer thread alone; refilled from the log tail on open.

use std::collections::{HashMap, VecDeque};
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

type IdMap<V> = HashMap<Uuid, V, BuildHasherDefault<UuidHasher>>;

pub struct RecentIds {
    cap: usize,
    map: IdMap<Seen>,
    /// Oldest first.
    order: VecDeque<Uuid>,
}

impl RecentIds {
    pub fn new(cap: usize) -> Self {
        RecentIds {
            cap,
            map: IdMap::default(),
            order: VecDeque::new(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_full(&self) -> bool {
        self.map.len() >= self.cap
    }

    pub fn get(&self, id: &Uuid) -> Option<&Seen> {
        self.map.get(id)
    }

    /// Records a newly written event (newest end).
    pub fn insert(&mut self, id: Uuid, seen: Seen) {
        if self.cap == 0 {
            return;
        }
        if self.map.insert(id, seen).is_none() {
            self.order.push_back(id);
        }
        while self.map.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// Records an older event found while walking the log backwards on open (oldest end).
    pub fn insert_older(&mut self, id: Uuid, seen: Seen) {
        if self.is_full() || self.map.contains_key(&id) {
            return;
        }
        self.map.insert(id, seen);
        self.order.push_front(id);
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
    fn evicts_oldest() {
        let mut w = RecentIds::new(2);
        w.insert(Uuid::from_u128(1), seen(1));
        w.insert(Uuid::from_u128(2), seen(2));
        w.insert(Uuid::from_u128(3), seen(3));
        assert!(w.get(&Uuid::from_u128(1)).is_none());
        assert_eq!(w.get(&Uuid::from_u128(3)), Some(&seen(3)));
        w.insert_older(Uuid::from_u128(0), seen(0));
        assert_eq!(w.len(), 2);
    }
}
