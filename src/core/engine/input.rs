//! The rules' input vocabulary: what Meta told us, as the rules read it. The webhook reader turns
//! Meta's webhook JSON into these; the worker receives them inside units (their JSON form is the
//! unit's wire form: keep it stable); the rules decide on them.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::core::domain::{Customer, Scope};
use crate::core::time::Millis;

/// One thing Meta told us, with the place it belongs and the exact JSON it came as. Items
/// travel between ingress and worker in this form (serialised as JSON, `raw` verbatim).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// Where its state and dedup mark live.
    pub scope: Scope,
    /// Its identity within the scope: the same item delivered again has the same key (R9).
    pub key: String,
    /// Meta's timestamp of the item.
    pub timestamp: Option<Millis>,
    /// The item exactly as Meta sent it.
    pub raw: Box<RawValue>,
    pub kind: ItemKind,
}

/// What an item is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ItemKind {
    /// `messages[]`: a customer wrote.
    Customer {
        customer: Customer,
        message: Content,
    },
    /// `messages[]` of type `edit` or `revoke`: the customer edited or deleted a message (Meta
    /// sends these to coexistence numbers).
    CustomerChange { customer: Customer, change: Change },
    /// A customer's `system` message: they changed number, business-scoped id or identity.
    /// `customer` names them as they are now, `previous` as they were.
    System {
        customer: Customer,
        previous: Customer,
        change: NameChange,
    },
    /// `message_echoes[]`: the business wrote, edited or deleted from the Business App.
    Echo { customer: Customer, echo: Echo },
    /// `statuses[]`: what happened to a message sent through the API.
    Status {
        customer: Customer,
        message_id: Option<String>,
        status: Option<String>,
        errors: Box<RawValue>,
    },
    /// `account_update`: about a business account (WABA), not one number.
    AccountUpdate {
        event: Option<String>,
        reason: Option<String>,
        /// `disconnection_info.initiated_by`.
        #[serde(default)]
        initiated_by: Option<String>,
        /// The WABA it is about: `waba_info.waba_id` where present, else the entry's `id`.
        #[serde(default)]
        waba_id: Option<String>,
        /// `phone_number` (a display number, digits) where Meta names one.
        #[serde(default)]
        phone_number: Option<String>,
    },
    /// One message of the history sync (`history` threads, or the follow-up `messages[]`).
    History {
        customer: Customer,
        message: Content,
        direction: Direction,
    },
    /// Progress of the history sync (one per `history[]` chunk), or its decline.
    HistoryStatus {
        phase: Option<i64>,
        chunk_order: Option<i64>,
        progress: Option<i64>,
        declined: bool,
    },
    /// `smb_app_state_sync`: a contact added, edited or removed in the App.
    ContactSync {
        customer: Customer,
        action: Option<String>,
        contact: Option<Box<RawValue>>,
    },
    /// `value.errors[]` of a change: Meta reports problems for the number rather than for one
    /// message (e.g. 130429, rate limit hit): the errors as sent.
    Errors { errors: Box<RawValue> },
    /// `standby` (R18): a copy of activity on a thread another responder owns: a customer's
    /// message, or the other responder's.
    Observed {
        customer: Customer,
        message: Content,
        from: ObservedFrom,
    },
    /// `messaging_handovers` (R18): Conversation Routing moved the thread.
    Routing {
        customer: Customer,
        control: Control,
        /// The `metadata` given to the pass, as sent.
        metadata: Option<String>,
    },
    /// `user_preferences`: the customer stopped or resumed a kind of messages.
    Preferences {
        customer: Customer,
        category: Option<String>,
        value: Option<String>,
        detail: Option<String>,
    },
    /// A change of a field this product does not subscribe to (kept for logs and metrics).
    Unhandled { field: String },
}

/// Who wrote a message copied on `standby`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservedFrom {
    Customer,
    /// The responder that owns the thread.
    OtherApp,
}

/// A move of Conversation Routing's thread control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Another responder took the thread (`control_taken`).
    Taken,
    /// The thread was passed to us (`control_passed`).
    Passed,
}

impl ItemKind {
    /// The customer the item is about, if it is about one.
    pub fn customer(&self) -> Option<&Customer> {
        match self {
            ItemKind::Customer { customer, .. }
            | ItemKind::CustomerChange { customer, .. }
            | ItemKind::System { customer, .. }
            | ItemKind::Echo { customer, .. }
            | ItemKind::Status { customer, .. }
            | ItemKind::History { customer, .. }
            | ItemKind::ContactSync { customer, .. }
            | ItemKind::Observed { customer, .. }
            | ItemKind::Routing { customer, .. }
            | ItemKind::Preferences { customer, .. } => Some(customer),
            ItemKind::AccountUpdate { .. }
            | ItemKind::HistoryStatus { .. }
            | ItemKind::Errors { .. }
            | ItemKind::Unhandled { .. } => None,
        }
    }
}

/// What an echo did: sent a message, or changed one sent before.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Echo {
    Send(Content),
    /// Written as the change itself (`"action": "edit"` / `"revoke"`).
    #[serde(untagged)]
    Change(Change),
}

/// An edit or a deletion of a message sent before (by the customer, or from the App).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    /// The message now reads `message`.
    Edit {
        original_message_id: Option<String>,
        message: Content,
    },
    Revoke {
        original_message_id: Option<String>,
    },
}

/// What a `system` message says changed (`customer.changed`'s `change`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NameChange {
    /// A new phone number (`user_changed_number`).
    Number,
    /// A new business-scoped user id (`user_changed_user_id`).
    UserId,
    /// A new identity (security code) on the same number.
    Identity,
}

/// Direction of a history message, seen from the business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The customer wrote it.
    Inbound,
    /// The business wrote it.
    Outbound,
}

/// A message's content as events carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Content {
    pub id: Option<String>,
    pub kind: String,
    pub text: String,
    pub media: Option<Media>,
    pub reply_to: Option<String>,
}

impl Content {
    /// The typed text of a `text` message (what the reset command is compared with).
    pub fn typed_text(&self) -> Option<&str> {
        (self.kind == "text").then_some(self.text.as_str())
    }
}

/// `message.media`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Media {
    /// Meta's media id (download it through the Graph API).
    pub id: Option<String>,
    /// E.g. `image/jpeg`.
    pub mime_type: Option<String>,
    /// The caption the sender wrote, if any.
    pub caption: Option<String>,
    /// A document's file name.
    pub filename: Option<String>,
}
