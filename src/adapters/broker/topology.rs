//! Every exchange and queue name of a namespace, and their declaration.
//!
//! | name | kind | purpose |
//! |---|---|---|
//! | `{ns}.inbound` | direct exchange | units and commands are published here, routing key = the business number's slot (`0`..`1023`) |
//! | `{ns}.inbound.{i}` (epoch 0), `{ns}.inbound.e{E}.{i}` (epoch E) | quorum queue, single active consumer, delivery limit, dead-lettered at least once to `{ns}.dead` | partition `i` of the inbound work; slot `s` is bound to partition `s mod N` of the current epoch ([`Layout`]) |
//! | `{ns}.dead` | fanout exchange + quorum queue | dead letters: input that could not be read or kept failing |
//! | `{ns}.bot`, `{ns}.human_chat` | topic exchanges | downstream events, routing key = event type |
//! | `{ns}.bot.events`, `{ns}.human_chat.events` | quorum queues bound with `#` | default queues, so nothing is dropped before a consumer exists |

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};

use super::Result;
use crate::core::domain::{fnv1a, Scope};
use crate::core::engine::event::Exchange;

/// Deliveries of one inbound message before the broker dead-letters it (a worker that keeps
/// dying on it, say). Failures the worker sees are retried in place and do not count.
pub const DELIVERY_LIMIT: i64 = 20;

/// The slots business numbers are spread over: a number's slot is FNV-1a (64 bit) of its
/// `phone_number_id` modulo [`SLOTS`], and the slot is the routing key everything inbound is
/// published with. Publishers never need to know the partition count: the bindings of the
/// current [`Layout`] map each slot to a partition queue, so the count can change while they
/// publish (docs/operations.md, "Changing the partition count").
pub const SLOTS: u16 = 1024;

/// Channels moving slots side by side during a change of the partition count.
const REBIND_CHANNELS: u16 = 8;

/// The names of one namespace, written once.
#[derive(Debug, Clone)]
pub struct Topology {
    pub ns: String,
    /// The partition count configured (`COEXIST_PARTITIONS`): the first layout's, and what a
    /// worker asks for at start; the count in force is the [`Layout`] recorded in Redis.
    pub partitions: u16,
    inbound: String,
    dead: String,
    bot: String,
    human_chat: String,
}

/// Each slot's routing key, the same in every namespace (kept out of [`Topology`], which request
/// handlers clone).
static SLOT_KEYS: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| (0..SLOTS).map(|i| i.to_string()).collect());

/// The partition queues of one epoch: `count` queues, slot `s` bound to queue `s mod count`.
/// Epoch 0 keeps the names of the builds before epochs (`{ns}.inbound.{i}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub epoch: u32,
    pub count: u16,
}

impl Layout {
    /// Partition `i`'s queue.
    pub fn queue(&self, t: &Topology, i: u16) -> String {
        match self.epoch {
            0 => format!("{}.inbound.{i}", t.ns),
            e => format!("{}.inbound.e{e}.{i}", t.ns),
        }
    }
    pub fn queues(&self, t: &Topology) -> Vec<String> {
        (0..self.count).map(|i| self.queue(t, i)).collect()
    }
    /// The partition a slot's items go to.
    pub fn partition_of_slot(&self, slot: u16) -> u16 {
        slot % self.count
    }
    /// The partition of a business number (every conversation of the number goes there).
    pub fn partition_of(&self, scope: &Scope) -> u16 {
        self.partition_of_slot(slot_of(scope))
    }

    /// Declares the layout's queues (idempotent) without binding them.
    pub async fn declare_queues(&self, t: &Topology, conn: &Connection) -> Result<()> {
        let mut ch = conn.create_channel().await?;
        for i in 0..self.count {
            queue(conn, &mut ch, &self.queue(t, i), partition_arguments(t)).await?;
        }
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }

    /// Declares the layout's queues and binds every slot to its partition (idempotent). The
    /// binds are sent without waiting for each answer; a passive declare after them on the same
    /// channel answers only once the broker has handled them all (a failed one closes the
    /// channel, and the declare fails).
    pub async fn lay_out(&self, t: &Topology, conn: &Connection) -> Result<()> {
        self.declare_queues(t, conn).await?;
        let ch = conn.create_channel().await?;
        let nowait = QueueBindOptions { nowait: true };
        for slot in 0..SLOTS {
            let q = self.queue(t, self.partition_of_slot(slot));
            ch.queue_bind(
                q.as_str().into(),
                t.inbound_exchange().into(),
                t.slot_key(slot).into(),
                nowait,
                FieldTable::default(),
            )
            .await?;
        }
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.queue_declare(
            self.queue(t, 0).as_str().into(),
            passive,
            FieldTable::default(),
        )
        .await?;
        let _ = ch.close(200, "laid out".into()).await;
        Ok(())
    }

    /// Moves every slot from `old`'s queue to this layout's: for each slot, unbound from the old
    /// queue first, then bound to the new, so an item published in between is returned to its
    /// publisher (which publishes it again) and never lands in both. (`queue.unbind` has no
    /// no-wait form: the slots are spread over [`REBIND_CHANNELS`] channels working side by
    /// side, each slot's two steps in order on its channel.)
    pub async fn rebind_from(&self, old: &Layout, t: &Topology, conn: &Connection) -> Result<()> {
        self.declare_queues(t, conn).await?;
        let moves = (0..REBIND_CHANNELS).map(|lane| async move {
            let ch = conn.create_channel().await?;
            for slot in (lane..SLOTS).step_by(REBIND_CHANNELS as usize) {
                let from = old.queue(t, old.partition_of_slot(slot));
                ch.queue_unbind(
                    from.as_str().into(),
                    t.inbound_exchange().into(),
                    t.slot_key(slot).into(),
                    FieldTable::default(),
                )
                .await?;
                let to = self.queue(t, self.partition_of_slot(slot));
                bind(&ch, &to, t.inbound_exchange(), t.slot_key(slot)).await?;
            }
            let _ = ch.close(200, "rebound".into()).await;
            Ok::<_, super::Error>(())
        });
        futures_util::future::try_join_all(moves).await?;
        Ok(())
    }

    /// Deletes the layout's queues (an epoch every queue of which is drained and sealed).
    pub async fn delete(&self, t: &Topology, conn: &Connection) -> Result<()> {
        let ch = conn.create_channel().await?;
        for q in self.queues(t) {
            ch.queue_delete(q.as_str().into(), Default::default())
                .await?;
        }
        let _ = ch.close(200, "deleted".into()).await;
        Ok(())
    }
}

/// A business number's slot: FNV-1a (64 bit) of its `phone_number_id`, modulo [`SLOTS`].
/// Stable across processes and versions. With a partition count that divides [`SLOTS`] (16, the
/// default, say) a number's partition is the one builds before slots gave it (`hash mod N`).
pub fn slot_of(scope: &Scope) -> u16 {
    (fnv1a(scope.phone_number_id.as_bytes()) % SLOTS as u64) as u16
}

impl Topology {
    pub fn new(ns: &str, partitions: u16) -> Self {
        Topology {
            ns: ns.to_owned(),
            partitions,
            inbound: format!("{ns}.inbound"),
            dead: format!("{ns}.dead"),
            bot: format!("{ns}.{}", Exchange::Bot.as_str()),
            human_chat: format!("{ns}.{}", Exchange::HumanChat.as_str()),
        }
    }
    pub fn inbound_exchange(&self) -> &str {
        &self.inbound
    }
    /// The routing key of a slot.
    pub fn slot_key(&self, slot: u16) -> &'static str {
        &SLOT_KEYS[slot as usize]
    }
    /// The routing key a number's units and commands are published with.
    pub fn key_of(&self, scope: &Scope) -> &'static str {
        self.slot_key(slot_of(scope))
    }
    /// The first layout: epoch 0 with the configured count.
    pub fn first_layout(&self) -> Layout {
        Layout {
            epoch: 0,
            count: self.partitions,
        }
    }
    pub fn dead(&self) -> &str {
        &self.dead
    }
    pub fn exchange(&self, e: Exchange) -> &str {
        match e {
            Exchange::Bot => &self.bot,
            Exchange::HumanChat => &self.human_chat,
        }
    }
    pub fn default_queue(&self, e: Exchange) -> String {
        format!("{}.events", self.exchange(e))
    }

    /// Every exchange of the namespace.
    pub fn exchanges(&self) -> [&str; 4] {
        [&self.inbound, &self.dead, &self.bot, &self.human_chat]
    }

    /// The durable queues of the namespace outside the partitions: the dead letters and the
    /// default queues.
    pub fn queues(&self) -> Vec<String> {
        vec![
            self.dead.clone(),
            self.default_queue(Exchange::Bot),
            self.default_queue(Exchange::HumanChat),
        ]
    }

    /// What [`Topology::declare`] declares, as `coexist topology` prints it.
    pub fn describe(&self, layout: &Layout) -> String {
        let (bot, human) = (Exchange::Bot, Exchange::HumanChat);
        format!(
            "declared: exchanges {}, {}, {}, {}\ndeclared: queues {}..{} ({} partitions, epoch {}), {}, {}, {}\n",
            self.inbound_exchange(),
            self.dead(),
            self.exchange(bot),
            self.exchange(human),
            layout.queue(self, 0),
            layout.queue(self, layout.count - 1),
            layout.count,
            layout.epoch,
            self.dead(),
            self.default_queue(bot),
            self.default_queue(human)
        )
    }

    /// Declares the exchanges, the dead letters and the default queues (idempotent: the same
    /// arguments every time), on a channel of its own. The partition queues and their bindings
    /// belong to the [`Layout`] in force, laid out under its lock (`adapters::redis::partitions`).
    pub async fn declare(&self, conn: &Connection) -> Result<()> {
        let mut ch = conn.create_channel().await?;
        self.declare_on(conn, &mut ch).await?;
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }

    async fn declare_on(&self, conn: &Connection, ch: &mut Channel) -> Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let none = FieldTable::default;
        ch.exchange_declare(
            self.inbound_exchange().into(),
            ExchangeKind::Direct,
            durable,
            none(),
        )
        .await?;
        ch.exchange_declare(self.dead().into(), ExchangeKind::Fanout, durable, none())
            .await?;
        queue(conn, ch, self.dead(), quorum()).await?;
        bind(ch, self.dead(), self.dead(), "").await?;
        for e in [Exchange::Bot, Exchange::HumanChat] {
            ch.exchange_declare(
                self.exchange(e).into(),
                ExchangeKind::Topic,
                durable,
                none(),
            )
            .await?;
            queue(conn, ch, &self.default_queue(e), quorum()).await?;
            bind(ch, &self.default_queue(e), self.exchange(e), "#").await?;
        }
        Ok(())
    }
}

/// Declares a durable queue. A queue declared by a build before the leader locator keeps its
/// arguments (the broker refuses to change them): it is declared again without the locator, on a
/// new channel since the refusal closes the old one, and its leader stays where it is.
async fn queue(conn: &Connection, ch: &mut Channel, name: &str, args: FieldTable) -> Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    match ch.queue_declare(name.into(), durable, args.clone()).await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains(LEADER_LOCATOR) => {
            tracing::info!(
                queue = name,
                "queue declared before its leader locator: kept as it is"
            );
            *ch = conn.create_channel().await?;
            let mut without = FieldTable::default();
            for (k, v) in args
                .inner()
                .iter()
                .filter(|(k, _)| k.as_str() != LEADER_LOCATOR)
            {
                without.insert(k.clone(), v.clone());
            }
            ch.queue_declare(name.into(), durable, without).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> Result<()> {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// An AMQP long string.
pub(crate) fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

const LEADER_LOCATOR: &str = "x-queue-leader-locator";

/// A partition queue's arguments: single active consumer, a delivery limit, dead-lettered at
/// least once, publishes refused rather than dropped when it is full.
fn partition_arguments(t: &Topology) -> FieldTable {
    let mut args = quorum();
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    args.insert("x-dead-letter-exchange".into(), long(t.dead()));
    args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
    args.insert("x-overflow".into(), long("reject-publish"));
    args
}

/// A quorum queue whose leader the broker places on the node with the fewest leaders, so that a
/// cluster's nodes share the work (`balanced`, RabbitMQ 3.10 and later).
fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), long("quorum"));
    t.insert(LEADER_LOCATOR.into(), long("balanced"));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numbers_conversations_share_its_partition_and_numbers_spread() {
        let t = Topology::new("coexist", 16).first_layout();
        let scope = Scope::parse("410000000000088:5215551230001").unwrap();
        let other = Scope::parse("410000000000088:US.1").unwrap();
        let number = Scope::parse("410000000000088:").unwrap();
        assert_eq!(t.partition_of(&scope), t.partition_of(&other));
        assert_eq!(t.partition_of(&scope), t.partition_of(&number));
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            seen.insert(t.partition_of(&Scope::number(&format!("41000000{i:07}"))));
        }
        assert_eq!(seen.len(), 16, "200 numbers cover all 16 partitions");
        // Pinned: a changed hash would move every number (and break their order).
        assert_eq!(t.partition_of(&scope), 2, "FNV-1a, checked independently");
        // A count dividing the slots keeps the partition of the builds before slots.
        let hash = fnv1a(scope.phone_number_id.as_bytes());
        for count in [1u16, 2, 8, 16, 64, 1024] {
            let l = Layout { epoch: 3, count };
            assert_eq!(l.partition_of(&scope) as u64, hash % count as u64);
        }
        let twelve = Layout {
            epoch: 1,
            count: 12,
        };
        assert_eq!(twelve.partition_of(&scope), slot_of(&scope) % 12);
        let names = Topology::new("ns", 2);
        assert_eq!(
            Layout { epoch: 0, count: 2 }.queue(&names, 1),
            "ns.inbound.1"
        );
        assert_eq!(
            Layout { epoch: 2, count: 2 }.queue(&names, 1),
            "ns.inbound.e2.1"
        );
    }
}
