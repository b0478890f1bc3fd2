//! The index flusher thread: moves index entries from memory to sled every
//! `index_flush_interval` (and once more when stopped), and checks that no segment file was
//! deleted from under the store.

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::engine::Shared;

/// Starts the flusher; sending on (or dropping) the returned sender stops it after one last
/// flush.
pub(crate) fn spawn(
    flush_shared: Arc<Shared>,
) -> std::io::Result<(std::sync::mpsc::Sender<()>, JoinHandle<()>)> {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let interval = flush_shared.config.index_flush_interval;
    let handle = std::thread::Builder::new()
            .name("strata-index-flush".into())
            .spawn(move || {
              // A flush that keeps failing (a full disk) is logged once, then every 30 s.
              let mut failing: Option<(std::time::Instant, u64)> = None;
              loop {
                let stop = !matches!(stop_rx.recv_timeout(interval), Err(std::sync::mpsc::RecvTimeoutError::Timeout));
                match flush_shared.index.flush() {
                    Ok(_) => {
                        if let Some((_, n)) = failing.take() {
                            tracing::info!(failures = n, "index flush works again");
                        }
                    }
                    Err(e) => {
                        let now = std::time::Instant::now();
                        match &mut failing {
                            Some((logged, n)) if now.duration_since(*logged) < std::time::Duration::from_secs(30) => *n += 1,
                            _ => {
                                let n = failing.map_or(1, |(_, n)| n + 1);
                                tracing::error!(error = %e, failures = n, "index flush failed; entries stay in memory and will be retried (logged at most every 30 s)");
                                failing = Some((now, n));
                            }
                        }
                    }
                }
                let segments = flush_shared.log.segments();
                for (i, seg) in segments.iter().enumerate() {
                    crate::unlinked::check(&flush_shared, seg, i + 1 == segments.len());
                }
                if stop {
                    break;
                }
              }
            })?;
    Ok((stop_tx, handle))
}
