//! What each event type adds to the fields every event has (docs/contract.md, "Events"), and
//! the vocabulary they share: a message as events carry it, where it came from, who changed
//! hands and why.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::core::engine::input::{Direction, Media, NameChange};

/// `message.received`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MessageReceived {
    /// The customer's message.
    pub message: EventMessage,
    /// What the AI agent's copy adds (absent from the human inbox's).
    #[serde(flatten)]
    pub agent: Option<ForAgent>,
}

impl MessageReceived {
    /// The fields only the AI agent's copy has ([`ForAgent`]).
    pub const AGENT_FIELDS: &'static [&'static str] = &[
        "session_started",
        "handback",
        "reply_token",
        "service_window_until",
    ];
}

/// The fields of a `message.received` on the bot exchange.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ForAgent {
    /// This message opened a new session (R2).
    pub session_started: bool,
    /// R16: what was said while a human handled the customer, on the first message after the
    /// release; null otherwise.
    #[serde(default)]
    pub handback: Option<Handback>,
    /// R17: pass it to the reply gate with the reply (header `X-Coexist-Reply-Token`). Opaque; it
    /// names the conversation and who held it when this message was decided.
    pub reply_token: String,
    /// RFC 3339: the message's time plus the customer service window: until then a free-form
    /// reply is possible (templates after it).
    pub service_window_until: String,
}

/// The field of a `message.edited` / `message.revoked` on the bot exchange (R14).
pub const CHANGE_AGENT_FIELDS: &[&str] = &["reply_token"];

/// `handback` (R16): the human-handled stretch that just ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Handback {
    /// How the human-handled stretch ended.
    pub reason: ReleaseReason,
    /// RFC 3339: when the pause began.
    pub paused_at: String,
    /// RFC 3339: when it ended.
    pub released_at: String,
    /// The stretch's last messages, oldest first (never the reset command).
    pub messages: Vec<HandbackMessage>,
}

/// One message of a handback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HandbackMessage {
    /// RFC 3339: Meta's timestamp of the message.
    pub at: String,
    /// `customer`, `business_app` or `business_app_automation`.
    pub source: Source,
    /// The message's wamid.
    pub message_id: Option<String>,
    /// As `message.text` renders it (cut to [`HANDBACK_TEXT_LIMIT`] characters).
    pub text: String,
}

/// The longest text a handback message keeps, in characters (longer ones end in `…`).
pub const HANDBACK_TEXT_LIMIT: usize = 2000;

/// `session.paused`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionPaused {
    /// RFC 3339: the AI agent stays paused for this customer until then (a later reply from
    /// the App extends it; a reset ends it sooner).
    pub paused_until: String,
}

/// `message.status`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MessageStatus {
    /// `sent`, `delivered`, `read`, `failed`, ... as Meta says.
    pub status: Option<String>,
    /// The wamid of the message sent through the API.
    pub message_id: Option<String>,
    /// Meta's `errors`, as sent (an empty list when none).
    #[schemars(with = "Vec<serde_json::Value>")]
    pub errors: Box<RawValue>,
}

/// `account.updated`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AccountUpdated {
    /// Meta's `event`: `PARTNER_REMOVED`, `ACCOUNT_OFFBOARDED`, `ACCOUNT_RECONNECTED`, ...
    pub event: Option<String>,
    /// `disconnection_info.reason`, e.g. `PRIMARY_INACTIVITY`.
    pub reason: Option<String>,
}

/// `number.updated` (docs/contract.md, "Numbers").
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NumberUpdated {
    /// The runtime settings changed: each key with its new value, written as configuration is
    /// (`"7d"`, a list of texts, ...); `null`: unset (the file's or the global value applies again).
    pub changed: serde_json::Map<String, serde_json::Value>,
    /// Who changed them: `operator` with the name given (`number set --by`, the admin API's
    /// token name, the console's operator).
    pub by: By,
}

/// `number.state_changed` (docs/contract.md, "Numbers").
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NumberStateChanged {
    /// The state before: `unregistered`, `onboarding`, `active`, `offboarded`, `disconnected`.
    pub from: String,
    /// The state now.
    pub to: String,
    /// Meta's event and `disconnection_info.reason` where it gave one (e.g.
    /// `PARTNER_REMOVED: PRIMARY_INACTIVITY`), or what an operator did.
    pub reason: Option<String>,
    /// `system` for Meta's `account_update`, `operator` for a command.
    pub by: By,
}

/// `message.sent_from_app`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SentFromApp {
    /// The message sent from the Business App (`source` `business_app`, or
    /// `business_app_automation` for the App's own messages).
    pub message: EventMessage,
}

/// `conversation.handover`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Handover {
    /// RFC 3339: the AI agent is paused for this customer until then.
    pub paused_until: String,
    /// The echo that paused (null for an operator's or Conversation Routing's pause).
    pub trigger_message_id: Option<String>,
    /// Who took the conversation.
    #[serde(default)]
    pub by: By,
}

/// `conversation.released`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Released {
    /// What ended the pause.
    pub reason: ReleaseReason,
    /// Who handed it back.
    #[serde(default)]
    pub by: By,
}

/// `message.edited`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Edited {
    /// The message as it reads now.
    pub message: EventMessage,
    /// The wamid of the message that was edited.
    pub original_message_id: Option<String>,
    /// R17, on the bot's copy only: the reply token of the conversation now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_token: Option<String>,
}

/// `message.revoked`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Revoked {
    /// The wamid of the message that was deleted.
    pub original_message_id: Option<String>,
    /// R17, on the bot's copy only: the reply token of the conversation now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_token: Option<String>,
}

/// `message.history`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct History {
    /// The message, `source` `history`.
    pub message: EventMessage,
    /// Who wrote it.
    pub direction: Direction,
}

/// `history.status`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HistoryStatus {
    /// Meta's history phase (0: the last day, 1: the last 90 days, 2: older, ...).
    pub phase: Option<i64>,
    /// The chunk's order within its phase (chunks arrive out of order).
    pub chunk_order: Option<i64>,
    /// Percent of the history sent so far.
    pub progress: Option<i64>,
    /// The business declined to share its history (error 2593109).
    pub declined: bool,
}

/// `contact.synced`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ContactSynced {
    /// `add` (also for edits) or `remove`.
    pub action: Option<String>,
    /// The contact as Meta sent it (`full_name`, `first_name`, `phone_number`, `user_id`).
    #[schemars(with = "Option<serde_json::Value>")]
    pub contact: Option<Box<RawValue>>,
}

/// `customer.changed`: `customer` names them as they are now.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CustomerChanged {
    /// What changed.
    pub change: NameChange,
    /// The names before the change.
    pub previous: Previous,
}

/// `customer.changed`'s `previous`: the names before the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Previous {
    /// The phone number before the change.
    pub wa_id: Option<String>,
    /// The business-scoped user id before the change.
    pub user_id: Option<String>,
}

/// `message.observed` (R18): never to be answered; `source` `customer` or `other_app`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Observed {
    /// The message as copied on `standby`.
    pub message: EventMessage,
}

/// `customer.preferences`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Preferences {
    /// What kind of messages, as Meta says (`marketing_messages`, ...).
    pub category: Option<String>,
    /// `stop`, `resume`, ... as Meta says.
    pub value: Option<String>,
    /// Meta's description of the change.
    pub detail: Option<String>,
}

/// `meta.error`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MetaError {
    /// Meta's `errors`, as sent (code, title, message, error_data).
    #[schemars(with = "Vec<serde_json::Value>")]
    pub errors: Box<RawValue>,
}

/// `reply.suppressed`: what the AI agent would have said.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReplySuppressed {
    /// Why the gate refused it.
    pub reason: Refusal,
    /// The reply as the agent sent it (`source: bot`, `id` null: it never reached Meta).
    pub message: EventMessage,
}

/// Why the reply gate refused a reply (R17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// A human holds the conversation (a pause is in force).
    ConversationHeld,
    /// The conversation changed hands since the message the reply answers.
    StaleReply,
    /// A free-form message past the customer service window.
    OutsideServiceWindow,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ConversationHeld => "conversation_held",
            Refusal::StaleReply => "stale_reply",
            Refusal::OutsideServiceWindow => "outside_service_window",
        }
    }
}

/// `message.sent_by_bot`: a reply of the AI agent that Meta accepted.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SentByBot {
    /// The reply as sent (`source: bot`; `id` is Meta's wamid).
    pub message: EventMessage,
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The customer.
    Customer,
    /// Typed by a person in the Business App (or a linked device).
    BusinessApp,
    /// Sent by the Business App itself: a greeting or away message (R15).
    BusinessAppAutomation,
    /// The history sync.
    History,
    /// The AI agent, through the reply gate (R17).
    Bot,
    /// Another responder on the number (Conversation Routing, R18).
    OtherApp,
}

impl Source {
    /// The icon events show beside the message: the phone for what came from the App.
    pub fn icon(self) -> Option<Icon> {
        matches!(self, Source::BusinessApp | Source::BusinessAppAutomation).then_some(Icon::App)
    }
}

/// `message.icon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Icon {
    /// Typed in the Business App.
    #[serde(rename = "📱")]
    App,
}

/// `message` of an event.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EventMessage {
    /// The wamid.
    pub id: Option<String>,
    /// Meta's message type (`text`, `image`, `location`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The message rendered as text, the same way for every type.
    pub text: String,
    /// Where the message came from.
    pub source: Source,
    /// `📱` for what came from the Business App, else null.
    pub icon: Option<Icon>,
    /// The media of an image, video, audio, document or sticker, else null.
    pub media: Option<Media>,
    /// The wamid the message quotes, if any.
    pub reply_to: Option<String>,
    /// The item exactly as Meta sent it (whitespace between tokens removed).
    #[schemars(with = "serde_json::Value")]
    pub raw: Box<RawValue>,
}

/// Why the AI agent may handle a customer again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The human sent the reset command from the App (R5).
    ResetCommand,
    /// The coexistence timeout passed (R7).
    Timeout,
    /// An operator released it (`coexist conversation release`, the console).
    Operator,
    /// Meta's Conversation Routing passed the thread to us (`control_passed`, R18).
    Routing,
}

impl ReleaseReason {
    /// As written in events (and the releases metric).
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseReason::ResetCommand => "reset_command",
            ReleaseReason::Timeout => "timeout",
            ReleaseReason::Operator => "operator",
            ReleaseReason::Routing => "routing",
        }
    }
}

/// `by`: who changed hands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct By {
    /// `business_app` (a human's reply from the App, the reset command), `operator` (a
    /// `conversation pause|release` or the console), `routing` (Meta's Conversation Routing),
    /// `system` (the timeout).
    pub kind: ByKind,
    /// The operator's name (null for the others).
    pub name: Option<String>,
}

/// Who changed hands, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ByKind {
    BusinessApp,
    Operator,
    Routing,
    System,
}

impl By {
    pub fn business_app() -> By {
        By {
            kind: ByKind::BusinessApp,
            name: None,
        }
    }
    pub fn system() -> By {
        By {
            kind: ByKind::System,
            name: None,
        }
    }
    pub fn routing() -> By {
        By {
            kind: ByKind::Routing,
            name: None,
        }
    }
    pub fn operator(name: Option<String>) -> By {
        By {
            kind: ByKind::Operator,
            name,
        }
    }
}

impl Default for By {
    fn default() -> Self {
        By::business_app()
    }
}
