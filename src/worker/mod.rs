//! `coexist worker`: consumes its share of the inbound partitions, decides each item with the
//! engine over Redis, publishes the events with confirms, and acknowledges the delivery only
//! when every event of it is confirmed.
//!
//! - **Effectively once.** An item's outcome is committed to Redis with its events before they
//!   are published; killed anywhere after that, the redelivery finds them and publishes the same
//!   events (same ids) instead of deciding again. Once published, a redelivery yields nothing.
//! - **Order.** A conversation always maps to one partition, a partition has one active consumer
//!   (single-active-consumer queues), and within it each conversation has a lane: its deliveries
//!   are handled one after the other, while other conversations' run side by side.
//! - **Failures.** Transient ones (Redis or RabbitMQ unreachable) are retried with backoff for as
//!   long as they last: the item waits, and nothing reaches the AI agent meanwhile. An item that
//!   keeps failing otherwise is dead-lettered to `{ns}.dead` with headers naming the error.
//! - **Sharing.** See [`membership`]: W workers own about N/W partitions each; a dead worker's
//!   move within about 11 s, a new worker gets its share within about 2 s.
//! - **Timeouts.** Every second the worker claims due pause deadlines (each claimed by exactly one
//!   worker) and publishes their `conversation.released` (`reason: timeout`).
//! - **Shutdown.** On SIGTERM it stops taking deliveries, finishes and acknowledges the one in
//!   hand per partition, returns the rest to the queues, leaves the membership and exits.

pub mod membership;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::{self, Link, Outgoing, Topology, UNIT_TYPE};
use crate::config::Config;
use crate::engine::event::Outbound;
use crate::engine::Input;
use crate::retry::{until_ok, Shutdown, ShutdownTrigger};
use crate::store::redis::RedisStore;
use crate::store::{Applied, Delivery, Engine};
use crate::time::Millis;
use crate::unit::{Unit, VERSION};
use membership::Membership;

/// Deliveries a partition consumer holds ahead of the one it works on.
const PREFETCH: u16 = 16;
/// Attempts at an item failing for a reason other than an unreachable server before it is
/// dead-lettered.
const MAX_ATTEMPTS: u32 = 5;
/// How often due pause deadlines are claimed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A running worker.
pub struct Worker {
    pub id: String,
    /// The bound admin address (`/healthz`, `/readyz`, `/metrics`).
    pub admin_addr: SocketAddr,
    owned: watch::Receiver<Vec<u16>>,
    trigger: ShutdownTrigger,
    done: JoinHandle<()>,
}

impl Worker {
    /// The partitions it consumes now.
    pub fn owned(&self) -> Vec<u16> {
        self.owned.borrow().clone()
    }

    /// Stops gracefully and waits until it has.
    pub async fn stop(self) {
        self.trigger.trigger();
        let _ = self.done.await;
    }

    /// Resolves when the worker has stopped (after its shutdown signal).
    pub async fn stopped(self) {
        let _ = self.done.await;
    }
}

/// Why an item could not be handled.
#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error("{0}")]
    Store(#[from] crate::store::Error),
    #[error("{0}")]
    Broker(#[from] broker::Error),
}

struct Shared {
    id: String,
    topology: Topology,
    engine: Engine<RedisStore>,
    link: Arc<Link>,
    shutdown: Shutdown,
    redis_ok: AtomicBool,
    log_content: bool,
}

/// Starts a worker: connects (retrying until the servers answer or shutdown), serves its admin
/// address, and consumes until `shutdown`.
pub async fn start(config: &Config, shutdown: Shutdown) -> std::io::Result<Worker> {
    crate::metrics::handle(); // the recorder must exist before the first count
    let id = worker_id();
    let topology = Topology::new(&config.namespace, config.partitions);
    // Stops on the caller's signal as well as on `stop()`.
    let (trigger, own) = Shutdown::new();
    let (forward, mine, outer) = (trigger.clone_trigger(), own.clone(), shutdown);
    tokio::spawn(async move {
        tokio::select! {
            _ = outer.wait() => forward.trigger(),
            _ = mine.wait() => {}
        }
    });
    let shutdown = own;
    // The link outlives the work: it closes only after every lane has finished and acknowledged
    // what it held (closing it first would send that work back to be delivered again).
    let (link_trigger, link_shutdown) = Shutdown::new();
    let link = Link::spawn(
        config.amqp_url.expose().to_owned(),
        format!("coexist-worker-{id}"),
        topology.clone(),
        link_shutdown,
    );
    let redis_url = config.redis_url.expose().to_owned();
    let ns = config.namespace.clone();
    let store = until_ok(
        "connecting to Redis",
        &shutdown,
        |_, _| false,
        || RedisStore::connect(&redis_url, &ns),
    )
    .await
    .map_err(|(e, _)| {
        link_trigger.trigger();
        std::io::Error::other(format!("Redis: {e}"))
    })?;
    let shared = Arc::new(Shared {
        id: id.clone(),
        topology,
        engine: Engine::new(store.clone(), Arc::new(config.rules.clone())),
        link: link.clone(),
        shutdown: shutdown.clone(),
        redis_ok: AtomicBool::new(true),
        log_content: config.log_content,
    });
    let ready_shared = shared.clone();
    let ready: crate::http::Readiness = Arc::new(move || {
        vec![
            ("rabbitmq", ready_shared.link.is_connected()),
            ("redis", ready_shared.redis_ok.load(Ordering::SeqCst)),
        ]
    });
    let (admin_addr, admin) = crate::http::serve(
        config.admin_listen,
        crate::http::admin_routes(ready),
        shutdown.clone(),
    )
    .await?;
    let (owned_tx, owned_rx) = watch::channel(Vec::new());
    let membership = Membership::new(store.connection(), &config.namespace, id.clone());
    let sweeper = tokio::spawn(sweep(shared.clone()));
    let manager = tokio::spawn(manage(shared.clone(), membership, owned_tx));
    let done = tokio::spawn(async move {
        let _ = manager.await;
        let _ = sweeper.await;
        link_trigger.trigger();
        let _ = admin.await;
    });
    tracing::info!(worker = %id, admin = %admin_addr, "worker started");
    Ok(Worker {
        id,
        admin_addr,
        owned: owned_rx,
        trigger,
        done,
    })
}

/// A worker id unique among processes and within one: host, process, instant and a counter.
fn worker_id() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{}-{}-{:x}-{}",
        hostname(),
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

struct Running {
    stop: ShutdownTrigger,
    task: JoinHandle<()>,
}

/// Heartbeats, works out this worker's partitions, and starts and stops their consumers.
async fn manage(shared: Arc<Shared>, membership: Membership, owned_tx: watch::Sender<Vec<u16>>) {
    let mut running: HashMap<u16, Running> = HashMap::new();
    let mut stopping: Vec<JoinHandle<()>> = Vec::new();
    let mut wanted: Vec<u16> = Vec::new();
    loop {
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
        for p in running
            .keys()
            .copied()
            .filter(|p| !wanted.contains(p))
            .collect::<Vec<_>>()
        {
            let r = running.remove(&p).expect("present");
            tracing::info!(partition = p, "handing partition over");
            r.stop.trigger();
            stopping.push(r.task);
        }
        stopping.retain(|t| !t.is_finished());
        if let Some(conn) = shared.link.connection().await {
            for &p in &wanted {
                running.entry(p).or_insert_with(|| {
                    let (stop, stop_signal) = Shutdown::new();
                    Running {
                        stop,
                        task: tokio::spawn(consume(shared.clone(), p, conn.clone(), stop_signal)),
                    }
                });
            }
        }
        let mut now_owned: Vec<u16> = running.keys().copied().collect();
        now_owned.sort();
        metrics::gauge!(crate::metrics::PARTITIONS_OWNED).set(now_owned.len() as f64);
        owned_tx.send_replace(now_owned);
        tokio::select! {
            _ = tokio::time::sleep(membership::TICK) => {}
            _ = shared.shutdown.wait() => break,
        }
    }
    for (_, r) in running.drain() {
        r.stop.trigger();
        stopping.push(r.task);
    }
    for t in stopping {
        let _ = t.await;
    }
    owned_tx.send_replace(Vec::new());
    if let Err(e) = membership.leave().await {
        tracing::warn!(error = %e, "could not leave the membership; the others wait for the expiry");
    }
    tracing::info!(worker = %shared.id, "worker stopped");
}

/// Consumes one partition until told to stop, the shutdown, or a broker failure.
async fn consume(shared: Arc<Shared>, partition: u16, conn: Arc<Connection>, stop: Shutdown) {
    if let Err(e) = consume_inner(&shared, partition, &conn, &stop).await {
        tracing::warn!(partition, error = %e, "partition consumer failed");
    }
}

async fn consume_inner(
    shared: &Arc<Shared>,
    partition: u16,
    conn: &Connection,
    stop: &Shutdown,
) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let tag = format!("{}-p{partition}", shared.id);
    let queue = shared.topology.partition_queue(partition);
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(partition, "consuming");
    // One lane per conversation: a conversation's deliveries are handled one after the other, in
    // the order the partition delivered them; different conversations run side by side.
    let lanes: Arc<std::sync::Mutex<HashMap<String, VecDeque<lapin::message::Delivery>>>> =
        Arc::default();
    let halted = Arc::new(AtomicBool::new(false));
    let mut running = tokio::task::JoinSet::new();
    let result = loop {
        let next = tokio::select! {
            d = consumer.next() => d,
            _ = stop.wait() => break Ok(()),
            _ = shared.shutdown.wait() => break Ok(()),
            Some(joined) = running.join_next(), if !running.is_empty() => match joined {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => break Err(e),
                Err(e) => {
                    // A lane that panicked would hold its conversation forever: give the whole
                    // partition back (its deliveries return to the queue) and let it restart.
                    tracing::error!(partition, error = %e, "a conversation lane failed; restarting the partition");
                    break Ok(());
                }
            },
        };
        if halted.load(Ordering::SeqCst) {
            break Ok(());
        }
        match next {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(delivery)) => {
                let lane = lane_of(&delivery.data);
                let mut map = lanes.lock().expect("lanes");
                match map.get_mut(&lane) {
                    Some(waiting) => waiting.push_back(delivery),
                    None => {
                        map.insert(lane.clone(), VecDeque::new());
                        running.spawn(run_lane(
                            shared.clone(),
                            partition,
                            lane,
                            delivery,
                            lanes.clone(),
                            halted.clone(),
                        ));
                    }
                }
            }
        }
    };
    // Stop taking deliveries, let every lane finish the one in hand; the waiting ones stay
    // unacknowledged and go back to the queue with the channel, in order.
    halted.store(true, Ordering::SeqCst);
    let _ = ch
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await;
    let mut result = result;
    while let Some(joined) = running.join_next().await {
        if let Ok(Err(e)) = joined {
            result = result.and(Err(e));
        }
    }
    let _ = ch.close(200, "partition released".into()).await;
    result
}

/// The conversation a delivery belongs to (its lane), read without decoding the items.
fn lane_of(data: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Head {
        scope: String,
    }
    serde_json::from_slice::<Head>(data)
        .map(|h| h.scope)
        .unwrap_or_default()
}

/// Handles a conversation's deliveries in order until none is waiting, or the partition halts.
async fn run_lane(
    shared: Arc<Shared>,
    partition: u16,
    lane: String,
    first: lapin::message::Delivery,
    lanes: Arc<std::sync::Mutex<HashMap<String, VecDeque<lapin::message::Delivery>>>>,
    halted: Arc<AtomicBool>,
) -> Result<(), lapin::Error> {
    let mut delivery = first;
    loop {
        if !shared.handle(partition, &delivery.data).await {
            // Shut down mid-item: left unacknowledged, it is delivered again, and so is the rest.
            halted.store(true, Ordering::SeqCst);
            return Ok(());
        }
        if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
            halted.store(true, Ordering::SeqCst);
            return Err(e);
        }
        let mut map = lanes.lock().expect("lanes");
        let next = if halted.load(Ordering::SeqCst) {
            None
        } else {
            map.get_mut(&lane).and_then(VecDeque::pop_front)
        };
        match next {
            Some(d) => delivery = d,
            None => {
                map.remove(&lane);
                return Ok(());
            }
        }
    }
}

fn transient(e: &HandleError) -> bool {
    match e {
        HandleError::Broker(_) => true,
        HandleError::Store(crate::store::Error::Redis(r)) => {
            r.is_io_error()
                || r.is_timeout()
                || r.is_connection_dropped()
                || r.is_connection_refusal()
                || matches!(
                    r.code(),
                    Some(
                        "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" | "READONLY"
                    )
                )
        }
        HandleError::Store(_) => false,
    }
}

impl Shared {
    /// Handles one delivery; false when interrupted by shutdown (leave it unacknowledged).
    async fn handle(&self, partition: u16, data: &[u8]) -> bool {
        let unit: Unit = match serde_json::from_slice::<Unit>(data) {
            Ok(u) if u.v == VERSION => u,
            Ok(u) => {
                return self
                    .dead_letter(
                        data.to_vec(),
                        None,
                        &format!("unit version {} is not understood", u.v),
                        1,
                    )
                    .await
            }
            Err(e) => {
                return self
                    .dead_letter(data.to_vec(), None, &format!("unreadable unit: {e}"), 1)
                    .await
            }
        };
        for (i, item) in unit.items.iter().enumerate() {
            let decided = until_ok(
                "deciding an item",
                &self.shutdown,
                |e: &HandleError, attempt| !transient(e) && attempt >= MAX_ATTEMPTS,
                || async {
                    Ok::<_, HandleError>(
                        self.engine.apply(&Input::Item(item), Millis::now()).await?,
                    )
                },
            )
            .await;
            let applied = match decided {
                Ok(a) => a,
                Err(_) if self.shutdown.is_triggered() => return false,
                Err((e, attempts)) => {
                    // Keeps failing: park this item and the rest of the unit, with the reason.
                    tracing::error!(partition, conversation = %self.scope_for_log(&unit), error = %e, attempts, "dead-lettering an item that keeps failing");
                    let rest = Unit {
                        items: unit.items[i..].to_vec(),
                        ..unit.clone()
                    };
                    let body = serde_json::to_vec(&rest).expect("units serialise");
                    return self
                        .dead_letter(body, Some(&rest.id()), &e.to_string(), attempts as i64)
                        .await;
                }
            };
            crate::metrics::applied(&applied);
            if !self.publish_and_acknowledge(&applied).await {
                return false;
            }
            tracing::debug!(partition, conversation = %self.scope_for_log(&unit), rule = applied.rule.map(|r| r.as_str()), events = applied.events.len(), "item decided");
            if applied.delivery != Delivery::Duplicate && !applied.events.is_empty() {
                let secs = (Millis::now().0 - unit.accepted_at.0).max(0) as f64 / 1000.0;
                metrics::histogram!(crate::metrics::LATENCY).record(secs);
            }
        }
        true
    }

    fn scope_for_log(&self, unit: &Unit) -> String {
        if self.log_content {
            unit.scope.to_string()
        } else {
            unit.scope.redacted()
        }
    }

    /// Publishes an applied input's events and records them published; false on shutdown.
    async fn publish_and_acknowledge(&self, applied: &Applied) -> bool {
        if !self.publish(&applied.events).await {
            return false;
        }
        let acked = until_ok(
            "recording events as published",
            &self.shutdown,
            |e: &HandleError, _| !transient(e),
            || async { Ok::<_, HandleError>(self.engine.acknowledge(applied).await?) },
        )
        .await;
        // Not recorded: a redelivery publishes the same events again (same ids), nothing is lost.
        acked.is_ok() || !self.shutdown.is_triggered()
    }

    /// Publishes events (retrying while the broker is away); false on shutdown.
    async fn publish(&self, events: &[Outbound]) -> bool {
        if events.is_empty() {
            return true;
        }
        let messages: Vec<Outgoing> = events
            .iter()
            .map(|e| Outgoing::event(&self.topology, e))
            .collect();
        let published = until_ok(
            "publishing events",
            &self.shutdown,
            |_: &broker::Error, _| false,
            || self.publish_now(&messages),
        )
        .await;
        if published.is_ok() {
            crate::metrics::published(events);
        }
        published.is_ok()
    }

    async fn publish_now(&self, messages: &[Outgoing]) -> Result<(), broker::Error> {
        let publisher = self
            .link
            .publisher()
            .await
            .ok_or(broker::Error::NotConnected)?;
        publisher
            .publish_all(messages)
            .await
            .inspect_err(|_| self.link.report_failure())
    }

    async fn dead_letter(
        &self,
        body: Vec<u8>,
        id: Option<&str>,
        reason: &str,
        attempts: i64,
    ) -> bool {
        let message = Outgoing::dead_letter(
            &self.topology,
            body,
            UNIT_TYPE,
            id,
            reason,
            "worker",
            attempts,
        );
        let ok = until_ok(
            "dead-lettering",
            &self.shutdown,
            |_: &broker::Error, _| false,
            || self.publish_now(std::slice::from_ref(&message)),
        )
        .await
        .is_ok();
        if ok {
            metrics::counter!(crate::metrics::DEAD_LETTERS, "stage" => "worker").increment(1);
        }
        ok
    }
}

/// Claims due pause deadlines and publishes their releases.
async fn sweep(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shared.shutdown.wait() => return,
        }
        if !shared.link.is_connected() {
            continue;
        }
        match shared.engine.release_due(Millis::now(), 100).await {
            Ok(released) => {
                for applied in released {
                    crate::metrics::applied(&applied);
                    if !shared.publish_and_acknowledge(&applied).await {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "claiming due timeouts failed; retrying"),
        }
    }
}
