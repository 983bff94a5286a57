//! The partition manager: every [`membership::TICK`] it heartbeats, works out which partitions
//! this worker owns in the layout in force, and starts and stops their consumers to match.
//! [`follow_layout`] reads the layout (and takes the step of a change that is due, see
//! [`crate::services::layout`]): during a change a worker consumes its share of the old
//! partitions, and of the new ones only once every old one is drained.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lapin::Connection;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::membership::{self, Membership};
use super::{lanes, Shared};
use crate::adapters::broker::Layout;
use crate::adapters::redis::partitions::Record;

/// Reads the partition layout every [`membership::TICK`], taking the step of a change that is
/// due; at start, a configured count other than the one in force begins a change to it.
pub(super) async fn follow_layout(shared: Arc<Shared>, layout_tx: watch::Sender<Option<Record>>) {
    use crate::services::layout::{tend, Role};
    let mut asked = false;
    // Read again soon while the partitions are not laid out (another process is laying them
    // out under the lock), so the worker consumes as soon as they are.
    let mut soon = false;
    // A new broker connection is used at once (at start-up the first read waits for it).
    let mut connections = shared.link.connections();
    let me = format!("worker-{}", shared.id);
    loop {
        connections.mark_unchanged();
        if let Some(conn) = shared.link.connection().await {
            match tend(
                &shared.partitions,
                &shared.topology,
                &conn,
                &me,
                Role::Change,
            )
            .await
            {
                Ok(record) => {
                    soon = record.awaits_lay_out();
                    if !asked && record.change.is_none() {
                        asked = true;
                        let wanted = shared.topology.partitions;
                        if record.layout.count != wanted {
                            ask_for(&shared, wanted).await;
                        }
                    }
                    let change = record.change.as_ref();
                    metrics::gauge!(crate::runtime::metrics::PARTITIONS)
                        .set(record.layout.count as f64);
                    metrics::gauge!(crate::runtime::metrics::PARTITION_EPOCH)
                        .set(record.layout.epoch as f64);
                    metrics::gauge!(crate::runtime::metrics::PARTITION_CHANGE)
                        .set(if change.is_some() { 1.0 } else { 0.0 });
                    metrics::gauge!(crate::runtime::metrics::PARTITION_CHANGE_DRAINED)
                        .set(change.map_or(0.0, |c| c.sealed as f64));
                    layout_tx.send_if_modified(|old| {
                        let changed = old.as_ref() != Some(&record);
                        *old = Some(record);
                        changed
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the partition layout failed; keeping the last")
                }
            }
        }
        let pause = if soon {
            LAYING_OUT_POLL
        } else {
            membership::TICK
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            Ok(()) = connections.changed() => {}
            _ = shared.stop.cancelled() => return,
        }
    }
}

/// How often the layout is read while another process lays it out.
const LAYING_OUT_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Begins a change to the configured count (a worker started with another count than the one
/// in force).
async fn ask_for(shared: &Shared, count: u16) {
    use crate::adapters::redis::partitions::Began;
    let now = crate::core::time::Millis::now();
    match shared
        .partitions
        .begin(shared.topology.first_layout(), count, "config", now)
        .await
    {
        Ok(Began::Started(r)) => {
            tracing::warn!(layout = %r.describe(), "COEXIST_PARTITIONS differs from the count in force: changing it")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not begin the partition change the configuration asks for")
        }
    }
}

/// Which queues this worker consumes under `record`: its share of the layout in force; during a
/// change, its share of the old partitions, and of the new only once every old one is drained.
fn wanted_under(me: &str, live: &[String], record: &Record) -> Vec<(Layout, u16)> {
    let share = |l: Layout| {
        membership::owned(me, live, l.count)
            .into_iter()
            .map(move |i| (l, i))
    };
    match &record.change {
        // Its queues may not be declared yet: nothing until they are laid out.
        None if record.awaits_lay_out() => Vec::new(),
        None => share(record.layout).collect(),
        Some(c) if c.drained() => share(c.from).chain(share(record.layout)).collect(),
        Some(c) => share(c.from).collect(),
    }
}

/// A partition being consumed.
struct Running {
    partition: u16,
    /// The epoch of the layout its queue belongs to.
    epoch: u32,
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
async fn backlog(shared: &Shared, owned: &[(u16, &str)]) {
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
        for (p, queue) in owned {
            let q = ch
                .queue_declare((*queue).into(), passive, Default::default())
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
    // Each consumer by its queue's name.
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut stopping: Vec<JoinHandle<()>> = Vec::new();
    let mut wanted: Vec<(Layout, u16, String)> = Vec::new();
    let mut layout = shared.layout.clone();
    let mut round = 0u64;
    // A new broker connection is put to use at once (at start-up, after a loss), not a tick later.
    let mut connections = shared.link.connections();
    loop {
        connections.mark_unchanged();
        round += 1;
        match membership.beat().await {
            Ok(live) => {
                shared.redis_ok.store(true, Ordering::SeqCst);
                // Nothing is consumed before the layout is read.
                if let Some(record) = layout.borrow_and_update().as_ref() {
                    wanted = wanted_under(&shared.id, &live, record)
                        .into_iter()
                        .map(|(l, i)| (l, i, l.queue(&shared.topology, i)))
                        .collect();
                }
            }
            Err(e) => {
                // Keep what it has: without Redis nothing can be decided anyway.
                shared.redis_ok.store(false, Ordering::SeqCst);
                tracing::warn!(error = %e, "cannot reach Redis for the membership; keeping current partitions");
            }
        }
        running.retain(|queue, r| {
            let alive = !r.task.is_finished();
            if !alive {
                tracing::info!(
                    queue,
                    "partition consumer ended; it restarts when the broker is back"
                );
            }
            alive
        });
        // A consumer on a connection the link has given up holds its partition while it waits
        // for deliveries that will never come (a lost connection does not always end the
        // consumer's stream): stop it, so it restarts on the link's current connection.
        let current = shared.link.connection().await;
        let stale: Vec<String> = running
            .iter()
            .filter(|(_, r)| !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &r.conn)))
            .map(|(q, _)| q.clone())
            .collect();
        for queue in stale {
            let r = running.remove(&queue).expect("present");
            tracing::info!(
                queue,
                "the connection was lost; consuming again on the new one"
            );
            r.stop.cancel();
            stopping.push(r.task);
        }
        let leaving: Vec<String> = running
            .keys()
            .filter(|q| !wanted.iter().any(|(_, _, w)| w == *q))
            .cloned()
            .collect();
        for queue in leaving {
            let r = running.remove(&queue).expect("present");
            tracing::info!(queue, "handing partition over");
            r.stop.cancel();
            stopping.push(r.task);
        }
        stopping.retain(|t| !t.is_finished());
        if let Some(conn) = shared.link.connection().await {
            for (layout, p, queue) in &wanted {
                running.entry(queue.clone()).or_insert_with(|| {
                    let stop = shared.stop.child_token();
                    let consuming = Arc::new(AtomicBool::new(false));
                    let task = lanes::consume(
                        shared.clone(),
                        *p,
                        queue.clone(),
                        conn.clone(),
                        stop.clone(),
                        consuming.clone(),
                    );
                    Running {
                        partition: *p,
                        epoch: layout.epoch,
                        stop,
                        task: tokio::spawn(task),
                        conn: conn.clone(),
                        consuming,
                    }
                });
            }
        }
        // What it owns, by partition number: in the layout being served.
        let serving = layout.borrow().as_ref().map(|r| r.serving().epoch);
        let mut now_owned: Vec<u16> = running
            .values()
            .filter(|r| Some(r.epoch) == serving)
            .map(|r| r.partition)
            .collect();
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
        if round % BACKLOG_EVERY == 1 {
            let consumed: Vec<(u16, &str)> = running
                .iter()
                .map(|(q, r)| (r.partition, q.as_str()))
                .collect();
            backlog(&shared, &consumed).await;
        }
        owned_tx.send_replace(now_owned);
        tokio::select! {
            _ = tokio::time::sleep(membership::TICK) => {}
            Ok(()) = connections.changed() => {}
            Ok(()) = layout.changed() => {}
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
