//! Moving index entries and stream states from memory to sled, in atomic batches that also
//! move the checkpoint.

use super::*;

impl Index {
    /// Writes every unflushed entry and changed state to sled in one atomic batch, with the
    /// checkpoint. Returns the number of entries written.
    pub fn flush(&self) -> Result<u64> {
        if self.memory_only {
            return Ok(0);
        }
        let _one_at_a_time = self.flush_lock.lock().expect("flush lock");
        // Copy what is to be written under the lock; build the batch outside it.
        let mut work: Vec<FlushWork> = Vec::new();
        let end = {
            let mut streams = self.streams.write().expect("index lock");
            for (name, st) in streams.iter_mut() {
                if !st.dirty {
                    continue;
                }
                let mut v = [0u8; 17];
                v[0..8].copy_from_slice(&st.last_revision.map_or(0, |r| r + 1).to_be_bytes());
                v[8] = if st.tombstoned { FLAG_TOMBSTONED } else { 0 };
                v[9..17].copy_from_slice(&st.metadata_position.map_or(0, |p| p + 1).to_be_bytes());
                work.push(FlushWork {
                    name: name.clone(),
                    base: st.unflushed_base,
                    positions: st.unflushed.clone(),
                    state: v,
                });
                st.dirty = false;
            }
            self.indexed_end()
        };
        if end == self.checkpoint() && work.is_empty() {
            return Ok(0);
        }
        let result = self.write_batch(&work, end);
        if let Err(e) = result {
            // Leave the entries in memory and mark the streams dirty again: nothing is lost.
            let mut streams = self.streams.write().expect("index lock");
            for w in &work {
                if let Some(st) = streams.get_mut(&w.name) {
                    st.dirty = true;
                }
            }
            return Err(e);
        }
        let mut count = 0;
        let mut streams = self.streams.write().expect("index lock");
        for w in work {
            let n = w.positions.len();
            count += n as u64;
            if let Some(st) = streams.get_mut(&w.name) {
                st.unflushed.drain(..n);
                st.unflushed_base += n as u64;
                if !st.unflushed.is_empty() {
                    st.dirty = true;
                }
            }
        }
        drop(streams);
        self.unflushed.fetch_sub(count, Ordering::Relaxed);
        self.checkpoint.store(end, Ordering::Release);
        Ok(count)
    }

    fn write_batch(&self, work: &[FlushWork], end: u64) -> Result<()> {
        let mut batch = sled::Batch::default();
        for FlushWork {
            name,
            base,
            positions,
            state,
        } in work
        {
            let mut rev = *base;
            let mut rest = &positions[..];
            while !rest.is_empty() {
                let chunk = rev / CHUNK;
                let offset = rev % CHUNK;
                let take = ((CHUNK - offset) as usize).min(rest.len());
                let key = chunk_key(name, chunk);
                // The chunk's first `offset` entries are kept (re-encoded: any past them in
                // sled are replaced), then the new ones follow.
                let kept = if offset > 0 {
                    let old = self
                        .db
                        .get(&key)
                        .map_err(|e| self.err(e))?
                        .unwrap_or_default();
                    let mut old = chunk::decode(&old).ok_or_else(|| {
                        self.err(sled::Error::Unsupported(format!(
                            "index chunk {chunk} of stream {name} is malformed"
                        )))
                    })?;
                    old.truncate(offset as usize);
                    old
                } else {
                    Vec::new()
                };
                let mut value = Vec::with_capacity(8 + (kept.len() + take) * 2);
                chunk::extend(&mut value, None, &kept);
                chunk::extend(&mut value, kept.last().copied(), &rest[..take]);
                batch.insert(key, value);
                rev += take as u64;
                rest = &rest[take..];
            }
            batch.insert(state_key(name), &state[..]);
        }
        batch.insert(KEY_CHECKPOINT, &end.to_be_bytes());
        self.db.apply_batch(batch).map_err(|e| self.err(e))
    }
}
