//! Every exchange and queue name of a namespace, and their declaration.
//!
//! | name | kind | purpose |
//! |---|---|---|
//! | `{ns}.inbound` | direct exchange | the ingress publishes units here, routing key = partition number |
//! | `{ns}.inbound.{i}` | quorum queue, single active consumer, delivery limit, dead-lettered at least once to `{ns}.dead` | partition `i` of the inbound work |
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

/// The names of one namespace, written once.
#[derive(Debug, Clone)]
pub struct Topology {
    pub ns: String,
    pub partitions: u16,
    inbound: String,
    dead: String,
    bot: String,
    human_chat: String,
    /// Each partition's queue, and its routing key (the partition's number).
    partition_queues: Vec<String>,
    partition_keys: Vec<String>,
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
            partition_queues: (0..partitions)
                .map(|i| format!("{ns}.inbound.{i}"))
                .collect(),
            partition_keys: (0..partitions).map(|i| i.to_string()).collect(),
        }
    }
    pub fn inbound_exchange(&self) -> &str {
        &self.inbound
    }
    pub fn partition_queue(&self, i: u16) -> &str {
        &self.partition_queues[i as usize]
    }
    /// The routing key that reaches partition `i`'s queue.
    pub fn partition_key(&self, i: u16) -> &str {
        &self.partition_keys[i as usize]
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

    /// Every durable queue of the namespace: the dead letters, the default queues, the partitions.
    pub fn queues(&self) -> Vec<String> {
        let mut queues = vec![
            self.dead.clone(),
            self.default_queue(Exchange::Bot),
            self.default_queue(Exchange::HumanChat),
        ];
        queues.extend(self.partition_queues.iter().cloned());
        queues
    }

    /// The partition of a business number (every conversation of the number goes there):
    /// FNV-1a (64 bit) of its `phone_number_id`, modulo the count. Stable across processes and
    /// versions; changing the partition count moves numbers.
    pub fn partition_of(&self, scope: &Scope) -> u16 {
        (fnv1a(scope.phone_number_id.as_bytes()) % self.partitions as u64) as u16
    }

    /// What [`Topology::declare`] declares, as `coexist topology` prints it.
    pub fn describe(&self) -> String {
        let (bot, human) = (Exchange::Bot, Exchange::HumanChat);
        format!(
            "declared: exchanges {}, {}, {}, {}\ndeclared: queues {}.0..{} ({} partitions), {}, {}, {}\n",
            self.inbound_exchange(),
            self.dead(),
            self.exchange(bot),
            self.exchange(human),
            self.inbound_exchange(),
            self.partitions - 1,
            self.partitions,
            self.dead(),
            self.default_queue(bot),
            self.default_queue(human)
        )
    }

    /// Declares everything (idempotent: the same arguments every time), on a channel of its own.
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
        for i in 0..self.partitions {
            let mut args = quorum();
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
            args.insert("x-dead-letter-exchange".into(), long(self.dead()));
            args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
            args.insert("x-overflow".into(), long("reject-publish"));
            let q = self.partition_queue(i);
            queue(conn, ch, q, args).await?;
            bind(ch, q, self.inbound_exchange(), self.partition_key(i)).await?;
        }
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
        let t = Topology::new("coexist", 16);
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
    }
}
