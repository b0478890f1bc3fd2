//! One memory bound for the buffers of all groups together.
//!
//! Each group buffers up to `live_buffer_size` events read ahead of its consumers (and as many
//! parked messages being replayed). Per group that is bounded in events, not bytes, and a
//! thousand groups on a stream of large events could hold far more than the machine has. So
//! every buffered message is charged, by its size, to one pool shared by all groups; a group
//! stops reading ahead while the pool is full and resumes as messages are acknowledged,
//! parked or dropped. A group with nothing buffered may still read one event, so no group
//! waits forever on others that nobody consumes: the pool can exceed its limit by at most one
//! event per group.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The pool's limit unless configured otherwise ([`crate::Groups::set_buffer_memory`]).
pub const DEFAULT_BUFFER_MEMORY: usize = 256 << 20;

/// Bytes held by buffered messages of every group, and the limit.
#[derive(Debug)]
pub struct BufferMemory {
    held: AtomicUsize,
    limit: AtomicUsize,
}

impl Default for BufferMemory {
    fn default() -> Self {
        BufferMemory {
            held: AtomicUsize::new(0),
            limit: AtomicUsize::new(DEFAULT_BUFFER_MEMORY),
        }
    }
}

impl BufferMemory {
    pub fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Bytes that may still be charged before the pool is full.
    pub fn room(&self) -> usize {
        self.limit
            .load(Ordering::Relaxed)
            .saturating_sub(self.held())
    }

    /// Charges `bytes` until the returned charge is dropped.
    pub(crate) fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        Charge {
            pool: self.clone(),
            bytes,
        }
    }
}

/// Bytes of one buffered message, given back to the pool when the message goes.
#[derive(Debug)]
pub(crate) struct Charge {
    pool: Arc<BufferMemory>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.pool.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_given_back_when_dropped() {
        let pool = Arc::new(BufferMemory::default());
        pool.set_limit(100);
        let a = pool.charge(60);
        assert_eq!(pool.room(), 40);
        let b = pool.charge(60);
        assert_eq!(pool.room(), 0);
        drop(a);
        assert_eq!(pool.room(), 40);
        drop(b);
        assert_eq!(pool.held(), 0);
    }
}
