//! The group's periodic work: gone consumers, timed-out and delayed messages, checkpoints and
//! trimming replayed parked messages.

use super::*;

impl Group {
    pub(super) async fn on_tick(&mut self) {
        let now = Instant::now();
        if std::mem::take(&mut self.read_failed) {
            self.at_end = false;
        }
        // Consumers whose channel closed.
        let gone: Vec<u64> = self
            .consumers
            .iter()
            .filter(|c| c.tx.is_closed())
            .map(|c| c.id)
            .collect();
        for id in gone {
            self.leave(id).await;
        }
        // Timed-out messages.
        let mut expired: Vec<(u64, Uuid)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline.is_some_and(|d| d <= now))
            .map(|(id, f)| (f.msg.event.position, *id))
            .collect();
        // Redelivered in event order.
        expired.sort_unstable();
        for (_, id) in expired {
            if let Some(f) = self.in_flight.remove(&id) {
                if let Some(c) = self.consumer_mut(f.consumer) {
                    c.in_flight = c.in_flight.saturating_sub(1);
                }
                let mut msg = f.msg;
                msg.last_reason = Some("message timeout".into());
                self.retry_later(msg, Duration::ZERO).await;
            }
        }
        // Delayed retries that are due.
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= now {
                let (_, msg) = self.delayed.swap_remove(i);
                if msg.parked_rev.is_none()
                    && msg.seq.is_some_and(|s| !self.outstanding.contains(&s))
                {
                    continue;
                }
                self.retry.push_back(msg);
            } else {
                i += 1;
            }
        }
        for c in &mut self.consumers {
            let elapsed = now.duration_since(c.window_start);
            if elapsed >= Duration::from_secs(1) {
                c.rate = c.window_acks as f64 / elapsed.as_secs_f64();
                c.window_acks = 0;
                c.window_start = now;
            }
        }
        self.trim_parked().await;
    }

    pub(super) fn settled_up_to(&self) -> u64 {
        self.outstanding.first().copied().unwrap_or(self.next_read)
    }

    pub(super) async fn maybe_checkpoint(&mut self, force: bool) {
        let cp = self.settled_up_to();
        if self.written_checkpoint == Some(cp) {
            return;
        }
        let due = self.settled_since_checkpoint >= self.settings.checkpoint_after_count as u64
            || (self.settled_since_checkpoint
                >= u64::from(self.settings.checkpoint_min_count.max(1))
                && self.last_checkpoint_at.elapsed() >= self.settings.checkpoint_after());
        if !(due || force) {
            return;
        }
        match store::write_checkpoint(&self.engine, &self.target, &self.name, self.incarnation, cp)
            .await
        {
            Ok(()) => {
                self.written_checkpoint = Some(cp);
                self.settled_since_checkpoint = 0;
                self.last_checkpoint_at = Instant::now();
            }
            Err(e) => {
                tracing::warn!(target_stream = %self.target, group = %self.name, error = %e,
                    "writing the checkpoint failed; will retry");
                self.last_checkpoint_at = Instant::now();
            }
        }
    }

    /// Hides replayed parked messages that are settled.
    pub(super) async fn trim_parked(&mut self) {
        let before = self
            .replaying
            .first()
            .copied()
            .unwrap_or(self.replay_next)
            .min(self.replay_next);
        if before <= self.parked_start {
            return;
        }
        match store::trim_parked(&self.engine, &self.target, &self.name, before).await {
            Ok(()) => self.parked_start = before,
            Err(e) => tracing::warn!(target_stream = %self.target, group = %self.name, error = %e,
                "trimming replayed parked messages failed; will retry"),
        }
    }
}
