//! `coexist worker`: consumes its share of the inbound partitions, decides each item with the
//! engine over Redis, publishes the events with confirms, and acknowledges the delivery only
//! when every event of it is confirmed.
//!
//! - **Effectively once.** An item's outcome is committed to Redis with its events before they
//!   are published; killed anywhere after that, the redelivery finds them and publishes the same
//!   events (same ids) instead of deciding again. Once published, a redelivery yields nothing.
//! - **Order.** A business number (and so each of its conversations) always maps to one
//!   partition, a partition has one active consumer (single-active-consumer queues), and within
//!   it each number has a lane: its deliveries are handled one after the other, while other
//!   numbers' run side by side.
//! - **Failures.** Transient ones (Redis or RabbitMQ unreachable) are retried with backoff for as
//!   long as they last: the item waits, and nothing reaches the AI agent meanwhile. An item that
//!   keeps failing otherwise is dead-lettered to `{ns}.dead` with headers naming the error.
//! - **Sharing.** See [`membership`]: W workers own about N/W partitions each; a dead worker's
//!   move within about 11 s, a new worker gets its share within about 2 s.
//! - **Timeouts.** Every second the worker claims due pause deadlines (each claimed by exactly one
//!   worker) and publishes their `conversation.released` (`reason: timeout`).
//! - **Supervision.** Its tasks (partition manager, sweeper, marks, broker link, admin address)
//!   are watched: one that ends by itself stops the worker, and [`Worker::stopped`] names it;
//!   `coexist worker` then exits non-zero. It is ready only while it consumes every partition it
//!   owns, and owns at least one.
//! - **Shutdown.** On SIGTERM it stops taking deliveries, finishes and acknowledges the one in
//!   hand per business number, returns the rest to the queues, leaves the membership and exits.
//!   Dropping a [`Worker`] stops it the same way.
//!
//! One job per file: this one starts and stops a worker; `partitions.rs` follows the partition
//! layout (carrying a change of the count through, [`crate::services::layout`]) and decides
//! which partitions it consumes; `lanes.rs` consumes one partition, a lane per business number;
//! `handle.rs` decides an item, publishes and acknowledges it; `sweep.rs` releases due pauses;
//! [`membership`] shares the partitions among workers.

mod acks;
pub(crate) mod handle;
pub(crate) mod lanes;
pub(crate) mod marks;
pub mod membership;
pub(crate) mod partitions;
pub(crate) mod sweep;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{started, Part};
use crate::adapters::broker::{Link, Topology};
use crate::adapters::redis::partitions::{Partitions, Record};
use crate::adapters::redis::RedisStore;
use crate::core::apply::Applier;
use crate::core::time::Clock;
use crate::runtime::config::Config;
use crate::runtime::http::Check;
use crate::runtime::supervise::{Ended, Handle};
use crate::services::numbers;
use membership::Membership;

/// A running worker. Dropping it stops it.
pub struct Worker {
    pub id: String,
    /// The bound admin address (`/healthz`, `/readyz`, `/metrics`).
    pub admin_addr: SocketAddr,
    owned: watch::Receiver<Vec<u16>>,
    handle: Handle,
}

impl Worker {
    /// The partitions it consumes now.
    pub fn owned(&self) -> Vec<u16> {
        self.owned.borrow().clone()
    }

    /// Stops gracefully and waits until it has.
    pub async fn stop(self) {
        self.handle.stop().await
    }

    /// Resolves when it has stopped: after its stop token was cancelled (`Ok`), or because one
    /// of its tasks ended by itself (`Err`, naming it).
    pub async fn stopped(self) -> Result<(), Ended> {
        self.handle.stopped().await
    }
}

/// How a worker is started beyond its configuration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where it reads the time (the wall clock unless a test says otherwise).
    pub clock: Clock,
    /// A fault to inject, by task name (tests of the supervision; `coexist` sets it only in
    /// debug builds, from `COEXIST_FAULT`): that task panics after its first round.
    pub fault: Option<String>,
}

/// What the worker's tasks share.
struct Shared {
    id: String,
    topology: Topology,
    /// The partition layout's record, and the latest reading of it (by the layout task).
    partitions: Partitions,
    layout: watch::Receiver<Option<Record>>,
    applier: Applier<RedisStore>,
    link: Arc<Link>,
    clock: Clock,
    /// Cancelled when the worker stops: ends retrying, consuming and sweeping.
    stop: CancellationToken,
    redis_ok: AtomicBool,
    /// For each partition this worker owns, whether its consumer is consuming now.
    consuming: Mutex<Vec<Arc<AtomicBool>>>,
    log_content: bool,
    /// Where finished deliveries are acknowledged, gathered (`publish_gather`).
    acks: acks::Acks,
    /// Finished items whose marks are written in batches.
    marks: marks::Marks,
    /// The numbers' activity times, written in batches.
    activity: Arc<numbers::Activity>,
    fault: Option<String>,
}

impl Shared {
    /// The injected fault of task `name`, if any (see [`Options::fault`]).
    fn fault(&self, name: &str) {
        if self.fault.as_deref() == Some(name) {
            panic!("fault injected into the {name} task");
        }
    }

    /// Ready: both servers reachable, and it consumes every partition it owns (at least one).
    /// A shortfall of Redis replicas is said, not failed.
    fn readiness(&self) -> Vec<(&'static str, Check)> {
        let consuming = self.consuming.lock().expect("consuming");
        let idle = consuming
            .iter()
            .filter(|c| !c.load(Ordering::SeqCst))
            .count();
        let partitions = match (consuming.len(), idle) {
            (0, _) => Check::NotReady("owns no partition".into()),
            (_, 0) => Check::Ok,
            (n, idle) => {
                Check::NotReady(format!("{idle} of the {n} partitions it owns not consumed"))
            }
        };
        // A change of count in progress is said (items of the new partitions wait for the old).
        let partitions = match (&partitions, self.layout.borrow().as_ref()) {
            (Check::Ok, Some(r)) if r.change.is_some() => Check::Degraded(r.describe()),
            _ => partitions,
        };
        let redis = match (
            self.redis_ok.load(Ordering::SeqCst),
            self.applier.store().replicas_short(),
        ) {
            (false, _) => Check::NotReady("cannot reach Redis".into()),
            (true, Some(why)) => Check::Degraded(why),
            (true, None) => Check::Ok,
        };
        vec![
            ("rabbitmq", self.link.check()),
            ("redis", redis),
            ("partitions", partitions),
        ]
    }
}

/// Starts a worker with the wall clock; see [`start_with`].
pub async fn start(config: &Config, shutdown: &CancellationToken) -> std::io::Result<Worker> {
    start_with(config, shutdown, Options::default()).await
}

/// Starts a worker: connects (retrying until the servers answer or shutdown), serves its admin
/// address, and consumes until `shutdown` is cancelled or the worker is stopped or dropped, or
/// one of its tasks ends by itself (then it stops, and [`Worker::stopped`] names the task).
pub async fn start_with(
    config: &Config,
    shutdown: &CancellationToken,
    options: Options,
) -> std::io::Result<Worker> {
    crate::runtime::metrics::handle(); // the recorder must exist before the first count
    let id = worker_id();
    let topology = Topology::new(&config.namespace, config.partitions);
    let mut part = Part::new("worker supervisor", shutdown);
    let stop = part.stop().clone();
    // The link outlives the work: it closes only after every lane has finished and acknowledged
    // what it held (closing it first would send that work back to be delivered again).
    let link = part.link(config, format!("coexist-worker-{id}"), &topology);
    let store = started!(
        part,
        RedisStore::open_until(
            &config.redis,
            &config.namespace,
            config.redis_replicas,
            &stop,
        )
        .await
    );
    // The worker decides by Redis's clock, the one that expires pause keys (docs/contract.md,
    // "One clock"): aligned before the first decision, then every second.
    let aligning = crate::runtime::retry::until_ok(
        "reading Redis's clock",
        &stop,
        |_, _| false,
        || store.align(&options.clock),
    );
    started!(
        part,
        aligning
            .await
            .map_err(|_| std::io::Error::other("Redis: stopped before it answered"))
    );
    // Like the link, the marks outlive the lanes: the last items' marks are written at the end.
    let marks_layer = part.layer();
    let (marks, marker) = marks::Marks::spawn(store.clone(), marks_layer.stop.clone());
    part.add_to(&marks_layer, "marks", marker);
    // The registry is read before the first decision, then followed (docs/contract.md, "Numbers").
    let (shelf, following) = started!(part, numbers::shelf(&store, config, &stop).await);
    let activity = Arc::new(numbers::Activity::default());
    let writer = activity.clone();
    let (activity_store, activity_stop) = (store.clone(), marks_layer.stop.clone());
    part.add_to(
        &marks_layer,
        "number activity",
        tokio::spawn(async move { writer.run(activity_store, activity_stop).await }),
    );
    part.spawn("number registry", following);
    let partitions = Partitions::new(store.connection(), &config.namespace);
    let (layout_tx, layout_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        id: id.clone(),
        topology,
        partitions,
        layout: layout_rx,
        applier: Applier::new(store.clone(), shelf).with_trail(config.trail_entries),
        link,
        clock: options.clock,
        stop: stop.clone(),
        redis_ok: AtomicBool::new(true),
        consuming: Mutex::default(),
        log_content: config.log_content,
        acks: acks::Acks::spawn(config.publish_gather),
        marks,
        activity,
        fault: options.fault,
    });
    let ready_shared = shared.clone();
    let ready: crate::runtime::http::Readiness = Arc::new(move || ready_shared.readiness());
    let admin = crate::runtime::http::serve(
        config.admin_listen,
        crate::runtime::http::admin_routes(ready),
        crate::runtime::http::Limits::new(config, crate::runtime::metrics::ADMIN_CUTS),
        stop.clone(),
    )
    .await;
    let (admin_addr, admin) = started!(part, admin);
    let (owned_tx, owned_rx) = watch::channel(Vec::new());
    let membership = Membership::new(store.connection(), &config.namespace, id.clone());
    // Stopping, in order: the work, then the marks of what it finished, then the link that
    // acknowledged it.
    part.spawn(
        "partition manager",
        partitions::manage(shared.clone(), membership, owned_tx),
    );
    part.spawn(
        "partition layout",
        partitions::follow_layout(shared.clone(), layout_tx),
    );
    part.spawn("timeout sweeper", sweep::run(shared.clone()));
    part.spawn("clock alignment", align_clock(shared.clone()));
    part.add("admin server", admin);
    tracing::info!(worker = %id, admin = %admin_addr, "worker started");
    Ok(Worker {
        id,
        admin_addr,
        owned: owned_rx,
        handle: part.supervise(),
    })
}

/// Keeps the worker's clock aligned with Redis's, every [`membership::TICK`]; a failed reading
/// keeps the last correction.
async fn align_clock(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(membership::TICK) => {}
            () = shared.stop.cancelled() => return,
        }
        if let Err(e) = shared.applier.store().align(&shared.clock).await {
            tracing::debug!(error = %e, "reading Redis's clock failed; keeping the last correction");
        }
        metrics::gauge!(crate::runtime::metrics::CLOCK_OFFSET)
            .set(shared.clock.offset_ms() as f64 / 1000.0);
    }
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
