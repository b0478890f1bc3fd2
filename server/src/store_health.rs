//! Watching the store's health while the server runs: the whole-log check after opening
//! (`--verify-log`) and the switch of health to NOT_SERVING once the store turns read-only.

use std::sync::Arc;

use strata_engine::Engine;
use tokio::sync::watch;
use tonic_health::ServingStatus;

pub fn log_verified(report: &strata_engine::VerifyReport, took: std::time::Duration) {
    tracing::info!(
        records = report.records,
        bytes = report.bytes,
        segments = report.segments,
        verify_ms = took.as_millis() as u64,
        "log verified: every record up to the end found at start-up is intact"
    );
}

/// Checks the whole log of a serving store; damage turns it read-only (the watcher then
/// reports NOT_SERVING). Reads of the damaged records fail on their own with the same file
/// and offset.
pub fn verify_in_background(engine: &Engine, stop: &std::sync::atomic::AtomicBool) {
    let started = std::time::Instant::now();
    match engine.verify_until(stop) {
        Ok(report) => log_verified(&report, started.elapsed()),
        Err(strata_engine::Error::Closed) => {
            tracing::info!("log verification stopped: the server is shutting down")
        }
        Err(e) => {
            let reason = format!(
                "the background check of the log found damage: {e}; restore from a backup or \
                 run `strata verify` on the stopped server"
            );
            tracing::error!(error = %e, "log verification failed");
            engine.refuse_writes(reason);
        }
    }
}

/// Services that cannot work while the store refuses writes.
const WRITE_SERVICES: [&str; 3] = ["", "strata.v1.Streams", "strata.v1.PersistentSubscriptions"];

/// Sets health to NOT_SERVING for the write services as soon as the store turns read-only.
pub async fn watch_read_only(
    engine: Arc<Engine>,
    health: tonic_health::server::HealthReporter,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut read_only = engine.watch_read_only();
    drop(engine);
    let reason = tokio::select! {
        r = read_only.wait_for(Option::is_some) => match r {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => return,
        },
        _ = shutdown.wait_for(|s| *s) => return,
    };
    tracing::error!(%reason, "the store is read-only until the server is restarted; health reports NOT_SERVING");
    for name in WRITE_SERVICES {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
}
