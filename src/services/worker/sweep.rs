//! The timeout sweeper (R7): every [`SWEEP_EVERY`] it claims the pause deadlines that came due
//! (each claimed by exactly one worker) and publishes their `conversation.released`.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;

/// How often due pause deadlines are claimed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often (in sweeps) the pauses in force are counted for `/metrics`.
const COUNT_EVERY: u64 = 5;
/// Deadlines claimed at once.
const BATCH: usize = 100;

/// Runs until the worker stops.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut round = 0u64;
    loop {
        round += 1;
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shared.stop.cancelled() => return,
        }
        if !shared.link.is_connected() {
            continue;
        }
        if round % COUNT_EVERY == 1 {
            if let Ok(n) = shared
                .applier
                .store()
                .paused_count(shared.clock.now())
                .await
            {
                metrics::gauge!(crate::runtime::metrics::PAUSED).set(n as f64);
            }
        }
        let released = shared.applier.release_due(shared.clock.now(), BATCH).await;
        shared.fault("timeout sweeper");
        match released {
            Ok(released) => {
                for applied in released {
                    crate::runtime::metrics::applied(&applied);
                    if shared.publish_and_acknowledge(&applied).await.is_err() {
                        return; // interrupted: the unacknowledged claims come due again
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "claiming due timeouts failed; retrying"),
        }
    }
}
