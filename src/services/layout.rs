//! The partition layout kept in step: its record in Redis ([`Partitions`]) and its queues and
//! bindings in RabbitMQ. Only the holder of the record's lock changes bindings, so no slot is
//! ever bound twice (docs/operations.md, "Changing the partition count").
//!
//! A change from N to M partitions, as the workers carry it out ([`tend`]):
//! 1. `coexist partitions set M` (or a worker started with `COEXIST_PARTITIONS=M`) records it:
//!    epoch E+1 with M partitions, stage `moving`.
//! 2. A worker holding the lock declares the new queues and moves each slot's binding from its
//!    old queue to its new one (unbound first: an item published in between is returned to its
//!    publisher, which publishes it again, so it lands in one queue, never two). Publishers
//!    route by slot and never learn the count: webhooks are accepted throughout.
//! 3. After [`SETTLE`] it puts a seal at the end of each old queue (stage `sealing`).
//! 4. Workers keep consuming the old queues; the worker that reaches a seal waits until every
//!    item before it is decided and acknowledged, then records the partition sealed.
//! 5. Workers consume the new queues only once every old one is sealed, so a number's items in
//!    the new queue are decided after all of its items in the old one: the order holds.
//! 6. The lock holder ends the change and deletes the old queues.
//!
//! A worker killed anywhere loses nothing: its deliveries go back to their queue ahead of the
//! rest (the seal stays last), every step is idempotent, and the lock's lease passes the step on
//! to another worker.

use std::time::Duration;

use lapin::Connection;

use crate::adapters::broker::{Layout, Outgoing, Publisher, Seal, Topology};
use crate::adapters::redis::partitions::{Partitions, Record, Stage};

/// How long the lock on changing bindings is held at most.
const LEASE: Duration = Duration::from_secs(30);
/// How long after the last slot moved the old queues are sealed: publishes routed to an old
/// queue just before its slots moved have reached it by then.
pub const SETTLE: Duration = Duration::from_secs(1);

/// A failure of either server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis: {0}")]
    Connect(String),
    #[error("RabbitMQ: {0}")]
    Broker(#[from] crate::adapters::broker::Error),
}

impl From<lapin::Error> for Error {
    fn from(e: lapin::Error) -> Self {
        Error::Broker(e.into())
    }
}

/// What a process may do to the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Lay out the layout in force when nobody has (the ingress).
    LayOut,
    /// Lay it out again, whoever has, unless a change is in progress (`coexist topology`: a
    /// queue deleted by hand comes back).
    Repair,
    /// Also carry a change through (workers).
    Change,
}

/// Reads the record (made from the configured count when there is none) and takes the step due,
/// if any, under the lock: the record as it stands after.
pub async fn tend(
    partitions: &Partitions,
    topology: &Topology,
    conn: &Connection,
    me: &str,
    role: Role,
) -> Result<Record, Error> {
    let record = partitions.read_or_init(topology.first_layout()).await?;
    if !due(&record, role) {
        return Ok(record);
    }
    if !partitions.lock(me, LEASE.as_millis() as u64).await? {
        return Ok(record);
    }
    let stepped = step(partitions, topology, conn, role).await;
    let unlocked = partitions.unlock(me).await;
    let record = stepped?;
    unlocked?;
    Ok(record)
}

/// Whether `record` asks for a step of `role`.
fn due(record: &Record, role: Role) -> bool {
    match &record.change {
        None => role == Role::Repair || record.awaits_lay_out(),
        Some(c) => role == Role::Change && (c.stage == Stage::Moving || c.drained()),
    }
}

/// The step due, read again under the lock.
async fn step(
    partitions: &Partitions,
    topology: &Topology,
    conn: &Connection,
    role: Role,
) -> Result<Record, Error> {
    let record = partitions.read_or_init(topology.first_layout()).await?;
    if !due(&record, role) {
        return Ok(record);
    }
    let layout = record.layout;
    match &record.change {
        None => {
            layout.lay_out(topology, conn).await?;
            partitions.laid_out(layout.epoch).await?;
            tracing::info!(
                partitions = layout.count,
                epoch = layout.epoch,
                "partitions laid out"
            );
        }
        Some(c) if c.stage == Stage::Moving => {
            let from = c.from;
            tracing::info!(
                from = from.count,
                to = layout.count,
                epoch = layout.epoch,
                "moving every slot to the new partitions"
            );
            layout.rebind_from(&from, topology, conn).await?;
            partitions.laid_out(layout.epoch).await?;
            tokio::time::sleep(SETTLE).await;
            seal_all(topology, conn, from).await?;
            partitions.sealing().await?;
            tracing::info!(from = from.count, "old partitions sealed; draining them");
        }
        Some(c) => {
            let from = c.from;
            if partitions.finish(from.epoch).await? {
                from.delete(topology, conn).await?;
                tracing::info!(
                    partitions = layout.count,
                    epoch = layout.epoch,
                    "partition change done; old queues deleted"
                );
            }
        }
    }
    Ok(partitions.read_or_init(topology.first_layout()).await?)
}

/// Puts a seal at the end of each of `from`'s queues.
async fn seal_all(topology: &Topology, conn: &Connection, from: Layout) -> Result<(), Error> {
    let publisher = Publisher::open(conn).await?;
    let seals: Vec<Outgoing> = (0..from.count)
        .map(|i| {
            Outgoing::seal(
                &from.queue(topology, i),
                Seal {
                    epoch: from.epoch,
                    partition: i,
                },
            )
        })
        .collect();
    publisher.publish_all(&seals).await?;
    let _ = publisher.channel().close(200, "sealed".into()).await;
    Ok(())
}

/// Lays out the partitions in force when the broker link connects, if nobody has (the
/// ingress's link: a namespace's first webhooks find their queues). Redis is reached on first
/// need; unreachable, the link goes on (a worker lays them out).
pub struct LayingOut {
    target: crate::adapters::redis::RedisTarget,
    topology: Topology,
    me: String,
    partitions: tokio::sync::OnceCell<Partitions>,
}

impl LayingOut {
    pub fn new(config: &crate::runtime::config::Config, me: String) -> Self {
        LayingOut {
            target: config.redis.clone(),
            topology: Topology::new(&config.namespace, config.partitions),
            me,
            partitions: tokio::sync::OnceCell::new(),
        }
    }

    async fn partitions(&self) -> Result<&Partitions, Error> {
        self.partitions
            .get_or_try_init(|| async {
                let store =
                    crate::adapters::redis::RedisStore::open(&self.target, &self.topology.ns, 0)
                        .await
                        .map_err(|e| Error::Connect(e.to_string()))?;
                Ok::<_, Error>(Partitions::new(store.connection(), &self.topology.ns))
            })
            .await
    }
}

impl crate::adapters::broker::link::OnConnect for LayingOut {
    fn on_connect<'a>(&'a self, conn: &'a Connection) -> futures_util::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            let tended = async {
                let partitions = self.partitions().await?;
                tend(partitions, &self.topology, conn, &self.me, Role::LayOut).await
            };
            match tokio::time::timeout(LEASE, tended).await {
                Ok(Ok(record)) if !record.awaits_lay_out() => {}
                Ok(Ok(record)) => {
                    tracing::info!(layout = %record.describe(), "another process is laying the partitions out (webhooks are accepted once it has)")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not lay out the partitions; a worker lays them out")
                }
                Err(_) => tracing::warn!(
                    "laying out the partitions took too long; a worker lays them out"
                ),
            }
        })
    }
}
