//! The partition manager: every [`membership::TICK`] it heartbeats, works out which partitions
//! this worker owns, and starts and stops their consumers to match.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lapin::Connection;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::membership::{self, Membership};
use super::{lanes, Shared};

/// A partition being consumed.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// The connection it consumes on.
    conn: Arc<Connection>,
    /// Whether its consumer is registered with the broker now.
    consuming: Arc<AtomicBool>,
}

/// How often (in rounds of [`membership::TICK`]) the backlog of the partitions owned and of the
/// dead letters is read for `/metrics`.
const BACKLOG_EVERY: u64 = 5;

/// Reads the messages waiting in the partitions this worker owns, and in the dead-letter queue
/// (passive declares, bounded): `coexist_inbound_backlog{partition}`,
/// `coexist_dead_letters_waiting`.
async fn backlog(shared: &Shared, owned: &[u16]) {
    use lapin::options::QueueDeclareOptions;
    let Some(conn) = shared.link.connection().await else {
        return;
    };
    let read = async {
        let ch = conn.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        for &p in owned {
            let q = ch
                .queue_declare(
                    shared.topology.partition_queue(p).into(),
                    passive,
                    Default::default(),
                )
                .await?;
            metrics::gauge!(crate::runtime::metrics::INBOUND_BACKLOG, "partition" => p.to_string())
                .set(q.message_count() as f64);
        }
        let dead = ch
            .queue_declare(shared.topology.dead().into(), passive, Default::default())
            .await?;
        metrics::gauge!(crate::runtime::metrics::DEAD_LETTERS_WAITING)
            .set(dead.message_count() as f64);
        let _ = ch.close(200, "read".into()).await;
        Ok::<_, lapin::Error>(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), read).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "reading the backlog failed"),
        Err(_) => tracing::debug!("reading the backlog took too long"),
    }
}

/// Runs until the worker stops; then stops every consumer, waits for them, and leaves.
pub(super) async fn manage(
    shared: Arc<Shared>,
    membership: Membership,
    owned_tx: watch::Sender<Vec<u16>>,
) {
    let mut running: HashMap<u16, Running> = HashMap::new();
    let mut stopping: Vec<JoinHandle<()>> = Vec::new();
    let mut wanted: Vec<u16> = Vec::new();
    let mut round = 0u64;
    // A new broker connection is put to use at once (at start-up, after a loss), not a tick later.
    let mut connections = shared.link.connections();
    loop {
        connections.mark_unchanged();
        round += 1;
        match membership.beat().await {
            Ok(live) => {
                shared.redis_ok.store(true, Ordering::SeqCst);
                wanted = membership::owned(&shared.id, &live, shared.topology.partitions);
            }
            Err(e) => {
                // Keep what it has: without Redis nothing can be decided anyway.
                shared.redis_ok.store(false, Ordering::SeqCst);
                tracing::warn!(error = %e, "cannot reach Redis for the membership; keeping current partitions");
            }
        }
        running.retain(|p, r| {
            let alive = !r.task.is_finished();
            if !alive {
                tracing::info!(
                    partition = p,
                    "partition consumer ended; it restarts when the broker is back"
                );
            }
            alive
        });
        // A consumer on a connection the link has given up holds its partition while it waits
        // for deliveries that will never come (a lost connection does not always end the
        // consumer's stream): stop it, so it restarts on the link's current connection.
        let current = shared.link.connection().await;
        let stale: Vec<u16> = running
            .iter()
            .filter(|(_, r)| !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &r.conn)))
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            let r = running.remove(&p).expect("present");
            tracing::info!(
                partition = p,
                "the connection was lost; consuming again on the new one"
            );
            r.stop.cancel();
            stopping.push(r.task);
        }
        let leaving: Vec<u16> = running
            .keys()
            .copied()
            .filter(|p| !wanted.contains(p))
            .collect();
        for p in leaving {
            let r = running.remove(&p).expect("present");
            tracing::info!(partition = p, "handing partition over");
            r.stop.cancel();
            stopping.push(r.task);
        }
        stopping.retain(|t| !t.is_finished());
        if let Some(conn) = shared.link.connection().await {
            for &p in &wanted {
                running.entry(p).or_insert_with(|| {
                    let stop = shared.stop.child_token();
                    let consuming = Arc::new(AtomicBool::new(false));
                    let task = lanes::consume(
                        shared.clone(),
                        p,
                        conn.clone(),
                        stop.clone(),
                        consuming.clone(),
                    );
                    Running {
                        stop,
                        task: tokio::spawn(task),
                        conn: conn.clone(),
                        consuming,
                    }
                });
            }
        }
        let mut now_owned: Vec<u16> = running.keys().copied().collect();
        now_owned.sort();
        *shared.consuming.lock().expect("consuming") =
            running.values().map(|r| r.consuming.clone()).collect();
        shared.fault("partition manager");
        metrics::gauge!(crate::runtime::metrics::PARTITIONS_OWNED).set(now_owned.len() as f64);
        let consuming = running
            .values()
            .filter(|r| r.consuming.load(Ordering::SeqCst))
            .count();
        metrics::gauge!(crate::runtime::metrics::PARTITIONS_CONSUMING).set(consuming as f64);
        metrics::gauge!(crate::runtime::metrics::PARTITIONS).set(shared.topology.partitions as f64);
        if round % BACKLOG_EVERY == 1 {
            backlog(&shared, &now_owned).await;
        }
        owned_tx.send_replace(now_owned);
        tokio::select! {
            _ = tokio::time::sleep(membership::TICK) => {}
            Ok(()) = connections.changed() => {}
            _ = shared.stop.cancelled() => break,
        }
    }
    for (_, r) in running.drain() {
        r.stop.cancel();
        stopping.push(r.task);
    }
    for t in stopping {
        let _ = t.await;
    }
    owned_tx.send_replace(Vec::new());
    shared.consuming.lock().expect("consuming").clear();
    if let Err(e) = membership.leave().await {
        tracing::warn!(error = %e, "could not leave the membership; the others wait for the expiry");
    }
    tracing::info!(worker = %shared.id, "worker stopped");
}
