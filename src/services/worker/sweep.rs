//! The timeout sweeper (R7): every [`SWEEP_EVERY`] it claims the pause deadlines that came due
//! (each claimed by exactly one worker) and sends each to its conversation's partition as a
//! command, where the lane decides the release in order with the items around it; a claim is
//! finished once its command is confirmed in the partition (a sweeper that dies first leaves the
//! claim to come due again after its lease, and the second command is decided once: same key).

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::adapters::broker::Outgoing;
use crate::core::store::{StateStore, CLAIM_LEASE};
use crate::core::unit::Command;

/// How often due pause deadlines are claimed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often (in sweeps) the pauses in force are counted for `/metrics`.
const COUNT_EVERY: u64 = 5;
/// Deadlines claimed at once.
const BATCH: usize = 100;

/// Runs until the worker stops. After a full batch it claims again at once: a burst of
/// deadlines (pauses set in the same minute) is released at the store's pace, not
/// [`BATCH`] a second.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut round = 0u64;
    let mut full = false;
    loop {
        round += 1;
        match std::mem::take(&mut full) {
            true if shared.stop.is_cancelled() => return,
            true => {}
            false => tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = shared.stop.cancelled() => return,
            },
        }
        if !shared.link.is_connected() {
            continue;
        }
        let store = shared.applier.store();
        if round % COUNT_EVERY == 1 {
            if let Ok(n) = store.paused_count(shared.clock.now()).await {
                metrics::gauge!(crate::runtime::metrics::PAUSED).set(n as f64);
            }
        }
        let now = shared.clock.now();
        let claimed = store.claim_due(now, CLAIM_LEASE, BATCH).await;
        shared.fault("timeout sweeper");
        let claims = match claimed {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(error = %e, "claiming due timeouts failed; retrying");
                continue;
            }
        };
        if claims.is_empty() {
            continue;
        }
        let commands: Vec<Outgoing> = claims
            .iter()
            .map(|c| Outgoing::command(&shared.topology, &Command::timeout(&c.deadline, now), None))
            .collect();
        // Not sent: the claims come due again after their lease.
        if let Err(e) = shared.link.publish_all(&commands).await {
            tracing::warn!(error = %e, "sending due timeouts to their partitions failed; retrying after the lease");
            continue;
        }
        for claim in &claims {
            if let Err(e) = store.finish_claim(claim).await {
                tracing::warn!(error = %e, "finishing a timeout's claim failed; it is sent again after its lease (and decided once)");
            }
        }
        full = claims.len() == BATCH;
    }
}
