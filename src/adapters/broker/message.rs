//! What coexist publishes, encoded for the wire: events (docs/contract.md, "Events"), inbound units, and dead
//! letters with the headers that say why.

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use super::topology::{long, Topology};
use crate::core::engine::event::Outbound;
use crate::core::time::Millis;
use crate::core::unit::{Command, Unit};

/// AMQP `type` of an inbound unit, and of a webhook body parked by the ingress.
pub const UNIT_TYPE: &str = "coexist.unit";
/// AMQP `type` of a command for one conversation (an operator's, a due timeout's), decided in
/// its partition like the units around it.
pub const COMMAND_TYPE: &str = "coexist.command";
/// AMQP `type` of a worker's answer to a command that asked for one (`reply_to`).
pub const ANSWER_TYPE: &str = "coexist.answer";
/// The broker's direct reply-to pseudo-queue: a command's sender consumes it on the channel it
/// publishes on, and the worker answers to the name the broker put in `reply_to`.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";
pub const WEBHOOK_TYPE: &str = "meta.webhook";
/// AMQP `type` of one item the ingress parked because it names no conversation.
pub const ITEM_TYPE: &str = "meta.item";

/// AMQP `type` of the last message of an old epoch's partition queue during a change of the
/// partition count: the worker that reaches it has decided everything before it.
pub const SEAL_TYPE: &str = "coexist.seal";

/// What a seal says: which old partition is drained.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Seal {
    pub epoch: u32,
    pub partition: u16,
}

/// Headers of a dead letter written by coexist.
pub const REASON_HEADER: &str = "x-coexist-reason";
pub const STAGE_HEADER: &str = "x-coexist-stage";
pub const ATTEMPTS_HEADER: &str = "x-coexist-attempts";

/// The `conversation` header of every event.
pub const CONVERSATION_HEADER: &str = "conversation";

/// A header of a received message, by name.
pub fn header<'a>(headers: &'a Option<FieldTable>, name: &str) -> Option<&'a AMQPValue> {
    headers
        .as_ref()?
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .map(|(_, v)| v)
}

/// A header's value as text (long or short string).
pub fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Where a dead letter was written: its `x-coexist-stage` header and its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// A signed body, or part of one, that cannot be read.
    Ingress,
    /// An item that kept failing in a worker.
    Worker,
    /// A dead letter that `dlq replay` still could not place.
    Replay,
    /// The broker's own dead-lettering (the delivery limit): no coexist header.
    Broker,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingress => "ingress",
            Stage::Worker => "worker",
            Stage::Replay => "replay",
            Stage::Broker => "broker",
        }
    }

    /// Reads a stage header back (`None` for anything else).
    pub fn parse(s: &str) -> Option<Stage> {
        [Stage::Ingress, Stage::Worker, Stage::Replay, Stage::Broker]
            .into_iter()
            .find(|stage| stage.as_str() == s)
    }
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
    /// An event, with the properties docs/contract.md ("Events") names.
    pub fn event(topology: &Topology, e: &Outbound) -> Self {
        let mut headers = FieldTable::default();
        headers.insert(CONVERSATION_HEADER.into(), long(&e.conversation));
        let name = e.event.name();
        Outgoing {
            exchange: topology.exchange(e.exchange).to_owned(),
            routing_key: name.to_owned(),
            body: e.json().as_bytes().to_vec(),
            properties: BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_message_id(e.event.event_id.as_str().into())
                .with_type(name.into())
                .with_headers(headers),
        }
    }

    /// A unit of inbound work, to its business number's partition.
    pub fn unit(topology: &Topology, u: &Unit, sent_at: Millis) -> Self {
        Outgoing {
            exchange: topology.inbound_exchange().to_owned(),
            routing_key: topology.key_of(&u.scope).to_owned(),
            body: serde_json::to_vec(u).expect("units serialise"),
            properties: BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_type(UNIT_TYPE.into())
                .with_message_id(u.id().as_str().into())
                .with_timestamp(sent_at.0 as u64 / 1000),
        }
    }

    /// A command, to its conversation's partition; `reply_to` when its sender waits for the
    /// worker's answer (correlated by the command's id).
    pub fn command(topology: &Topology, c: &Command, reply_to: Option<&str>) -> Self {
        let id = c.id();
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_type(COMMAND_TYPE.into())
            .with_message_id(id.as_str().into())
            .with_timestamp(c.accepted_at.0.max(0) as u64 / 1000);
        if let Some(to) = reply_to {
            properties = properties
                .with_reply_to(to.into())
                .with_correlation_id(id.as_str().into());
        }
        Outgoing {
            exchange: topology.inbound_exchange().to_owned(),
            routing_key: topology.key_of(&c.scope).to_owned(),
            body: serde_json::to_vec(c).expect("commands serialise"),
            properties,
        }
    }

    /// The seal of an old partition queue, straight to the queue (its slots are bound elsewhere
    /// by then).
    pub fn seal(queue: &str, seal: Seal) -> Self {
        Outgoing {
            exchange: String::new(),
            routing_key: queue.to_owned(),
            body: serde_json::to_vec(&seal).expect("seals serialise"),
            properties: BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_type(SEAL_TYPE.into()),
        }
    }

    /// A worker's answer to a command, to the `reply_to` it named (not persistent: its sender
    /// is waiting now, or never will).
    pub fn answer(reply_to: &str, correlation_id: &str, body: Vec<u8>) -> Self {
        Outgoing {
            exchange: String::new(),
            routing_key: reply_to.to_owned(),
            body,
            properties: BasicProperties::default()
                .with_content_type("application/json".into())
                .with_type(ANSWER_TYPE.into())
                .with_correlation_id(correlation_id.into()),
        }
    }

    /// The same message, carrying the trace context of `cx` (`traceparent`, `tracestate`).
    pub fn traced(mut self, cx: &opentelemetry::Context) -> Self {
        let mut headers = self.properties.headers().clone().unwrap_or_default();
        crate::runtime::trace::into_amqp(cx, &mut headers);
        self.properties = self.properties.with_headers(headers);
        self
    }

    /// A dead letter: the bytes as they came, the reason and where it failed.
    pub fn dead_letter(
        topology: &Topology,
        body: Vec<u8>,
        kind: &str,
        message_id: Option<&str>,
        reason: &str,
        stage: Stage,
        attempts: i64,
    ) -> Self {
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), long(reason));
        headers.insert(STAGE_HEADER.into(), long(stage.as_str()));
        headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongLongInt(attempts));
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_type(kind.into())
            .with_timestamp(Millis::now().0 as u64 / 1000)
            .with_headers(headers);
        if let Some(id) = message_id {
            properties = properties.with_message_id(id.into());
        }
        Outgoing {
            exchange: topology.dead().to_owned(),
            routing_key: String::new(),
            body,
            properties,
        }
    }
}
