//! Downstream events (SPEC section 5): their names, their fields, and their wire form.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::Customer;
use crate::meta::{Direction, Media};

/// The two downstream exchanges (`{ns}.bot`, `{ns}.human_chat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exchange {
    /// The AI agent's.
    #[default]
    Bot,
    /// The human inbox's.
    HumanChat,
}

impl Exchange {
    /// The exchange's name without the namespace: `bot` or `human_chat`.
    pub fn as_str(self) -> &'static str {
        match self {
            Exchange::Bot => "bot",
            Exchange::HumanChat => "human_chat",
        }
    }
}

/// Every event type: the routing key and the body's `type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub enum EventType {
    #[default]
    #[serde(rename = "message.received")]
    MessageReceived,
    #[serde(rename = "session.paused")]
    SessionPaused,
    #[serde(rename = "message.status")]
    MessageStatus,
    #[serde(rename = "account.updated")]
    AccountUpdated,
    #[serde(rename = "message.sent_from_app")]
    SentFromApp,
    #[serde(rename = "conversation.handover")]
    Handover,
    #[serde(rename = "conversation.released")]
    Released,
    #[serde(rename = "message.edited")]
    Edited,
    #[serde(rename = "message.revoked")]
    Revoked,
    #[serde(rename = "message.history")]
    History,
    #[serde(rename = "history.status")]
    HistoryStatus,
    #[serde(rename = "contact.synced")]
    ContactSynced,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MessageReceived => "message.received",
            EventType::SessionPaused => "session.paused",
            EventType::MessageStatus => "message.status",
            EventType::AccountUpdated => "account.updated",
            EventType::SentFromApp => "message.sent_from_app",
            EventType::Handover => "conversation.handover",
            EventType::Released => "conversation.released",
            EventType::Edited => "message.edited",
            EventType::Revoked => "message.revoked",
            EventType::History => "message.history",
            EventType::HistoryStatus => "history.status",
            EventType::ContactSynced => "contact.synced",
        }
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Customer,
    BusinessApp,
    History,
}

/// The phone icon that marks a message typed in the Business App.
pub const APP_ICON: &str = "📱";

/// `message` of an event.
#[derive(Debug, Clone, Serialize)]
pub struct EventMessage {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    pub source: Source,
    pub icon: Option<&'static str>,
    pub media: Option<Media>,
    pub reply_to: Option<String>,
    pub raw: Box<RawValue>,
}

/// Why the AI agent may handle a customer again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    ResetCommand,
    Timeout,
    Operator,
}

/// One event. The common fields come first; each type adds its own (absent ones are not written).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Event {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(skip)]
    pub exchange: Exchange,
    pub occurred_at: String,
    pub phone_number_id: String,
    pub customer: Customer,
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<EventMessage>,
    // message.received
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_started: Option<bool>,
    // session.paused, conversation.handover
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_message_id: Option<Option<String>>,
    // conversation.released
    #[serde(skip_serializing_if = "Option::is_none", rename = "reason")]
    pub release_reason: Option<ReleaseReason>,
    // message.status
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Box<RawValue>>,
    // account.updated
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none", rename = "reason")]
    pub account_reason: Option<Option<String>>,
    // message.edited, message.revoked
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_message_id: Option<Option<String>>,
    // message.history
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    // history.status
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Option<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_order: Option<Option<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Option<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declined: Option<bool>,
    // contact.synced
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<Option<Box<RawValue>>>,
}

/// An event ready for the wire: where it goes, its AMQP properties, and its JSON body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outbound {
    pub exchange: Exchange,
    /// The routing key: the event's `type`.
    pub routing_key: String,
    /// The AMQP `message_id`: the event's `event_id`.
    pub event_id: String,
    /// The `conversation` header: `{phone_number_id}:{customer}`.
    pub conversation: String,
    /// The event's JSON.
    pub body: Box<RawValue>,
}

impl Outbound {
    /// Encodes an event for the conversation (scope) it belongs to.
    pub fn encode(event: &Event, conversation: &str) -> Self {
        Outbound {
            exchange: event.exchange,
            routing_key: event.kind.as_str().to_owned(),
            event_id: event.event_id.clone(),
            conversation: conversation.to_owned(),
            body: serde_json::value::to_raw_value(event).expect("events always serialise"),
        }
    }

    /// The line `coexist process` prints: `{"exchange", "routing_key", "event"}`.
    pub fn to_line(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            exchange: &'static str,
            routing_key: &'a str,
            event: &'a RawValue,
        }
        serde_json::to_string(&Line {
            exchange: self.exchange.as_str(),
            routing_key: &self.routing_key,
            event: &self.body,
        })
        .expect("lines always serialise")
    }
}
