//! RabbitMQ: every exchange and queue name, their declaration, and confirmed publishing.
//!
//! | name | kind | purpose |
//! |---|---|---|
//! | `{ns}.inbound` | direct exchange | the ingress publishes units here, routing key = partition number |
//! | `{ns}.inbound.{i}` | quorum queue, single active consumer, delivery limit, dead-lettered at least once to `{ns}.dead` | partition `i` of the inbound work |
//! | `{ns}.dead` | fanout exchange + quorum queue | dead letters: input that could not be read or kept failing |
//! | `{ns}.bot`, `{ns}.human_chat` | topic exchanges | downstream events, routing key = event type |
//! | `{ns}.bot.events`, `{ns}.human_chat.events` | quorum queues bound with `#` | default queues, so nothing is dropped before a consumer exists |

use futures_util::future::try_join_all;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::domain::Scope;
use crate::engine::event::{Exchange, Outbound};

/// Deliveries of one inbound message before the broker dead-letters it (a worker that keeps
/// dying on it, say). Failures the worker sees are retried in place and do not count.
pub const DELIVERY_LIMIT: i64 = 20;

/// AMQP `type` of an inbound unit, and of a webhook body parked by the ingress.
pub const UNIT_TYPE: &str = "coexist.unit";
pub const WEBHOOK_TYPE: &str = "meta.webhook";
/// AMQP `type` of one item the ingress parked because it names no conversation.
pub const ITEM_TYPE: &str = "meta.item";

/// Headers of a dead letter written by coexist.
pub const REASON_HEADER: &str = "x-coexist-reason";
pub const STAGE_HEADER: &str = "x-coexist-stage";
pub const ATTEMPTS_HEADER: &str = "x-coexist-attempts";

/// The `conversation` header of every event.
pub const CONVERSATION_HEADER: &str = "conversation";

/// A broker failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("not connected to RabbitMQ")]
    NotConnected,
    #[error("the broker refused a message (nack)")]
    Nack,
    #[error(
        "the broker returned an unroutable message: exchange {exchange}, routing key {routing_key}"
    )]
    Returned {
        exchange: String,
        routing_key: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The names of one namespace.
#[derive(Debug, Clone)]
pub struct Topology {
    pub ns: String,
    pub partitions: u16,
}

impl Topology {
    pub fn new(ns: &str, partitions: u16) -> Self {
        Topology {
            ns: ns.to_owned(),
            partitions,
        }
    }
    pub fn inbound_exchange(&self) -> String {
        format!("{}.inbound", self.ns)
    }
    pub fn partition_queue(&self, i: u16) -> String {
        format!("{}.inbound.{i}", self.ns)
    }
    pub fn dead(&self) -> String {
        format!("{}.dead", self.ns)
    }
    pub fn exchange(&self, e: Exchange) -> String {
        format!("{}.{}", self.ns, e.as_str())
    }
    pub fn default_queue(&self, e: Exchange) -> String {
        format!("{}.{}.events", self.ns, e.as_str())
    }

    /// The partition of a conversation: FNV-1a (64 bit) of its scope string, modulo the count.
    /// Stable across processes and versions; changing the partition count moves conversations.
    pub fn partition_of(&self, scope: &Scope) -> u16 {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in scope.to_string().bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        (h % self.partitions as u64) as u16
    }

    /// Declares everything (idempotent: the same arguments every time).
    pub async fn declare(&self, ch: &Channel) -> Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            self.inbound_exchange().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            self.dead().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
        self.queue(ch, &self.dead(), quorum()).await?;
        ch.queue_bind(
            self.dead().into(),
            self.dead().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        for i in 0..self.partitions {
            let mut args = quorum();
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
            args.insert("x-dead-letter-exchange".into(), long(&self.dead()));
            args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
            args.insert("x-overflow".into(), long("reject-publish"));
            let q = self.partition_queue(i);
            self.queue(ch, &q, args).await?;
            ch.queue_bind(
                q.into(),
                self.inbound_exchange().into(),
                i.to_string().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        for e in [Exchange::Bot, Exchange::HumanChat] {
            ch.exchange_declare(
                self.exchange(e).into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
            self.queue(ch, &self.default_queue(e), quorum()).await?;
            ch.queue_bind(
                self.default_queue(e).into(),
                self.exchange(e).into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    }

    async fn queue(&self, ch: &Channel, name: &str, args: FieldTable) -> Result<()> {
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;
        Ok(())
    }
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), long("quorum"));
    t
}

/// Connects to RabbitMQ under a name the management UI shows.
pub async fn connect(url: &str, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(url, props).await?)
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

impl Outgoing {
    /// An event, with the properties SPEC section 5 names.
    pub fn event(topology: &Topology, e: &Outbound) -> Self {
        let mut headers = FieldTable::default();
        headers.insert(CONVERSATION_HEADER.into(), long(&e.conversation));
        Outgoing {
            exchange: topology.exchange(e.exchange),
            routing_key: e.routing_key.clone(),
            body: e.body.get().as_bytes().to_vec(),
            properties: BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_message_id(e.event_id.as_str().into())
                .with_type(e.routing_key.as_str().into())
                .with_headers(headers),
        }
    }

    /// A unit of inbound work, to its conversation's partition.
    pub fn unit(topology: &Topology, u: &crate::unit::Unit, sent_at: crate::time::Millis) -> Self {
        Outgoing {
            exchange: topology.inbound_exchange(),
            routing_key: topology.partition_of(&u.scope).to_string(),
            body: serde_json::to_vec(u).expect("units serialise"),
            properties: BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_type(UNIT_TYPE.into())
                .with_message_id(u.id().as_str().into())
                .with_timestamp(sent_at.0 as u64 / 1000),
        }
    }

    /// A dead letter: the bytes as they came, the reason and where it failed.
    pub fn dead_letter(
        topology: &Topology,
        body: Vec<u8>,
        kind: &str,
        message_id: Option<&str>,
        reason: &str,
        stage: &str,
        attempts: i64,
    ) -> Self {
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), long(reason));
        headers.insert(STAGE_HEADER.into(), long(stage));
        headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongLongInt(attempts));
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_type(kind.into())
            .with_timestamp(crate::time::Millis::now().0 as u64 / 1000)
            .with_headers(headers);
        if let Some(id) = message_id {
            properties = properties.with_message_id(id.into());
        }
        Outgoing {
            exchange: topology.dead(),
            routing_key: String::new(),
            body,
            properties,
        }
    }
}

/// Publishes with confirms on one channel.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    /// Opens a channel in confirm mode.
    pub async fn open(conn: &Connection) -> Result<Self> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher { channel })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes every message (persistent, mandatory) and waits until the broker has confirmed
    /// all of them; the confirms are awaited together, not one by one.
    pub async fn publish_all(&self, messages: &[Outgoing]) -> Result<()> {
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let confirm = self
                .channel
                .basic_publish(
                    ShortString::from(m.exchange.as_str()),
                    ShortString::from(m.routing_key.as_str()),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &m.body,
                    m.properties.clone(),
                )
                .await?;
            confirms.push(confirm);
        }
        let results = try_join_all(confirms).await?;
        for (confirmation, m) in results.into_iter().zip(messages) {
            if confirmation.is_nack() {
                return Err(Error::Nack);
            }
            if confirmation.take_message().is_some() {
                return Err(Error::Returned {
                    exchange: m.exchange.clone(),
                    routing_key: m.routing_key.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A connection and confirm-mode publisher that re-establish themselves: a background task
/// connects (with backoff), declares the topology and holds the publisher until the connection
/// fails, then starts over. Callers get the current publisher or `None` while it is down.
pub struct Link {
    current: tokio::sync::RwLock<Option<(std::sync::Arc<Connection>, Publisher)>>,
    broken: tokio::sync::Notify,
    connected: std::sync::atomic::AtomicBool,
}

impl Link {
    /// Starts the link; it keeps reconnecting until `shutdown`.
    pub fn spawn(
        url: String,
        name: String,
        topology: Topology,
        shutdown: crate::retry::Shutdown,
    ) -> std::sync::Arc<Self> {
        let link = std::sync::Arc::new(Link {
            current: Default::default(),
            broken: Default::default(),
            connected: Default::default(),
        });
        let me = link.clone();
        tokio::spawn(async move {
            while !shutdown.is_triggered() {
                let attempt = crate::retry::until_ok(
                    "connecting to RabbitMQ",
                    &shutdown,
                    |_, _| false,
                    || async {
                        let conn = connect(&url, &name).await?;
                        let ch = conn.create_channel().await?;
                        topology.declare(&ch).await?;
                        let _ = ch.close(200, "declared".into()).await;
                        let publisher = Publisher::open(&conn).await?;
                        Ok::<_, Error>((conn, publisher))
                    },
                )
                .await;
                let Ok((conn, publisher)) = attempt else {
                    break;
                };
                tracing::info!(connection = %name, "connected to RabbitMQ");
                *me.current.write().await = Some((std::sync::Arc::new(conn), publisher));
                me.connected
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                // Hold it until a caller reports a failure or the connection drops.
                loop {
                    tokio::select! {
                        _ = me.broken.notified() => {}
                        _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                        _ = shutdown.wait() => {}
                    }
                    let alive = me.current.read().await.as_ref().is_some_and(|(c, p)| {
                        c.status().connected() && p.channel().status().connected()
                    });
                    if !alive || shutdown.is_triggered() {
                        break;
                    }
                }
                me.connected
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                if let Some((conn, _)) = me.current.write().await.take() {
                    let _ = conn.close(200, "reconnecting".into()).await;
                }
                if !shutdown.is_triggered() {
                    tracing::warn!(connection = %name, "lost RabbitMQ; reconnecting");
                }
            }
        });
        link
    }

    /// The publisher, while connected.
    pub async fn publisher(&self) -> Option<Publisher> {
        self.current.read().await.as_ref().map(|(_, p)| p.clone())
    }

    /// A connection to open more channels on (consumers), while connected.
    pub async fn connection(&self) -> Option<std::sync::Arc<Connection>> {
        self.current.read().await.as_ref().map(|(c, _)| c.clone())
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Reports a failure: the link checks the connection at once.
    pub fn report_failure(&self) {
        self.broken.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        let t = Topology::new("coexist", 16);
        let scope = Scope::parse("410000000000088:5215551230001").unwrap();
        assert_eq!(t.partition_of(&scope), t.partition_of(&scope.clone()));
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            seen.insert(t.partition_of(&Scope::parse(&format!("410:52155512{i:05}")).unwrap()));
        }
        assert_eq!(seen.len(), 16, "200 customers cover all 16 partitions");
        // Pinned: a changed hash would move every conversation (and break their order).
        assert_eq!(t.partition_of(&scope), 6, "FNV-1a, checked independently");
    }
}
