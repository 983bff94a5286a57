//! Meta's JSON shapes, field by field. Every field is optional and tolerant (see `lenient`);
//! arrays of items are kept as raw JSON so each item keeps the exact bytes Meta sent.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::lenient::{Arr, LNum, LStr, LTime, Obj, RawList};

#[derive(Deserialize)]
pub struct Envelope<'a> {
    #[serde(default)]
    pub object: LStr,
    #[serde(borrow, default)]
    pub entry: RawList<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Entry<'a> {
    pub id: LStr,
    pub time: LTime,
    #[serde(borrow)]
    pub changes: RawList<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Change<'a> {
    pub field: LStr,
    #[serde(borrow)]
    pub value: Option<&'a RawValue>,
}

/// A change's `value`: the union of the fields of `messages`, `smb_message_echoes`, `history`,
/// `smb_app_state_sync` and `account_update`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Value<'a> {
    pub metadata: Obj<Metadata>,
    pub contacts: Arr<Obj<Contact>>,
    #[serde(borrow)]
    pub messages: RawList<'a>,
    #[serde(borrow)]
    pub statuses: RawList<'a>,
    /// Errors Meta reports for the number rather than for one message, as sent.
    #[serde(borrow)]
    pub errors: Option<&'a RawValue>,
    #[serde(borrow)]
    pub message_echoes: RawList<'a>,
    #[serde(borrow)]
    pub history: RawList<'a>,
    #[serde(borrow)]
    pub state_sync: RawList<'a>,
    // account_update
    pub event: LStr,
    pub phone_number_id: LStr,
    pub disconnection_info: Obj<Disconnection>,
    pub waba_info: Obj<WabaInfo>,
    pub phone_number: LStr,
    // user_preferences
    #[serde(borrow)]
    pub user_preferences: RawList<'a>,
    // messaging_handovers: a list of notifications, or the value is one (see `Handover`)
    #[serde(borrow)]
    pub messaging_handovers: RawList<'a>,
    pub recipient: Obj<Party>,
}

/// A `messaging_handovers` notification (Conversation Routing). The keys inside are not all
/// documented: read leniently.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Handover<'a> {
    #[serde(rename = "type")]
    pub kind: LStr,
    pub sender: Obj<Party>,
    pub recipient: Obj<Party>,
    pub from: LStr,
    pub wa_id: LStr,
    pub user_id: LStr,
    pub timestamp: LTime,
    #[serde(borrow)]
    pub control_taken: Option<&'a RawValue>,
    #[serde(borrow)]
    pub control_passed: Option<&'a RawValue>,
}

/// The object named by a handover's `type`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Control {
    pub metadata: LStr,
}

/// Who a routing notification is about or for.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Party {
    pub phone_number: LStr,
    pub wa_id: LStr,
    pub user_id: LStr,
    pub phone_number_id: LStr,
    pub display_phone_number: LStr,
}

/// One `user_preferences` entry.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Preference {
    pub wa_id: LStr,
    pub user_id: LStr,
    pub category: LStr,
    pub value: LStr,
    pub detail: LStr,
    pub timestamp: LTime,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Metadata {
    pub display_phone_number: LStr,
    pub phone_number_id: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Contact {
    pub profile: Obj<Profile>,
    pub wa_id: LStr,
    pub user_id: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Profile {
    pub name: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Disconnection {
    pub reason: LStr,
    pub initiated_by: LStr,
}

/// An `account_update`'s `waba_info`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct WabaInfo {
    pub waba_id: LStr,
}

/// A message: a customer's (`messages[]`), an echo of the business's (`message_echoes[]`), or
/// one of the history sync (`threads[].messages[]`).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Message {
    pub from: LStr,
    pub from_user_id: LStr,
    pub to: LStr,
    pub to_user_id: LStr,
    pub id: LStr,
    pub timestamp: LTime,
    #[serde(rename = "type")]
    pub kind: LStr,
    pub context: Obj<Context>,
    pub text: Obj<Text>,
    pub image: Obj<Media>,
    pub video: Obj<Media>,
    pub audio: Obj<Media>,
    pub document: Obj<Media>,
    pub sticker: Obj<Media>,
    pub location: Obj<Location>,
    pub contacts: Arr<Obj<ContactCard>>,
    pub interactive: Obj<Interactive>,
    pub button: Obj<Button>,
    pub reaction: Obj<Reaction>,
    pub revoke: Obj<Revoke>,
    pub edit: Obj<Edit>,
    pub system: Obj<System>,
    // A message the business sends through the Cloud API (the reply gate reads these too):
    /// The business-scoped user id it goes to (instead of `to`).
    pub recipient: LStr,
    /// `individual` (the default) or `group` (`to` is then a group id).
    pub recipient_type: LStr,
    /// `read` for a read receipt (with `message_id`), which is not a message.
    pub status: LStr,
    pub template: Obj<Template>,
    /// The WhatsApp group the message was written in (Groups API, R19).
    pub group_id: LStr,
    pub order: Obj<Order>,
    pub unsupported: Obj<Unsupported>,
}

/// An order sent from a catalog.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Order {
    /// The customer's text with the order.
    pub text: LStr,
    pub product_items: Arr<Obj<Empty>>,
}

/// Any object, its fields unread.
#[derive(Deserialize, Default)]
pub struct Empty {}

/// `unsupported`: Meta names the real type (`edit`, `poll`, ...).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Unsupported {
    #[serde(rename = "type")]
    pub kind: LStr,
}

/// A template message sent through the Cloud API.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Template {
    pub name: LStr,
}

/// A `system` message: the customer changed number, business-scoped id, or identity.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct System {
    #[serde(rename = "type")]
    pub kind: LStr,
    pub body: LStr,
    /// The new phone number (`user_changed_number`).
    pub wa_id: LStr,
    /// Older payloads: the new number.
    pub new_wa_id: LStr,
    /// The new business-scoped user id.
    pub user_id: LStr,
    pub previous_user_id: LStr,
    pub identity: LStr,
    pub customer: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Context {
    /// The quoted message (received messages).
    pub id: LStr,
    /// The quoted message (messages sent through the Cloud API).
    pub message_id: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Text {
    pub body: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Media {
    pub id: LStr,
    pub mime_type: LStr,
    pub caption: LStr,
    pub filename: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Location {
    pub latitude: LNum,
    pub longitude: LNum,
    pub name: LStr,
    pub address: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ContactCard {
    pub name: Obj<ContactName>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ContactName {
    pub formatted_name: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Interactive {
    #[serde(rename = "type")]
    pub kind: LStr,
    pub button_reply: Obj<Reply>,
    pub list_reply: Obj<Reply>,
    pub nfm_reply: Obj<NfmReply>,
    /// The text of an interactive message the business sends (buttons, lists, ...).
    pub body: Obj<InteractiveBody>,
    pub call_permission_reply: Obj<CallPermission>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CallPermission {
    /// `accept` or `reject`.
    pub response: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct InteractiveBody {
    pub text: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Reply {
    pub id: LStr,
    pub title: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NfmReply {
    pub name: LStr,
    pub body: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Button {
    pub text: LStr,
    pub payload: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Reaction {
    pub message_id: LStr,
    pub emoji: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Revoke {
    pub original_message_id: LStr,
}

/// An edit echo: the edited message's id and its new content, either as a nested message or as
/// the new content's own fields (`text`, ...).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Edit {
    pub original_message_id: LStr,
    pub message: Obj<Box<Message>>,
    pub text: Obj<Text>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Status<'a> {
    pub id: LStr,
    pub status: LStr,
    pub timestamp: LTime,
    pub recipient_id: LStr,
    pub recipient_user_id: LStr,
    #[serde(borrow)]
    pub errors: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct HistoryChunk<'a> {
    pub metadata: Obj<HistoryMetadata>,
    #[serde(borrow)]
    pub threads: Arr<Obj<Thread<'a>>>,
    pub errors: Arr<Obj<MetaError>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct HistoryMetadata {
    pub phase: LNum,
    pub chunk_order: LNum,
    pub progress: LNum,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Thread<'a> {
    pub id: LStr,
    /// Names the customer of the thread by business-scoped id (`context.user_id`).
    pub context: Obj<ThreadContext>,
    #[serde(borrow)]
    pub messages: RawList<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ThreadContext {
    pub user_id: LStr,
    pub wa_id: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MetaError {
    pub code: LNum,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct StateSync<'a> {
    #[serde(rename = "type")]
    pub kind: LStr,
    #[serde(borrow)]
    pub contact: Option<&'a RawValue>,
    pub action: LStr,
    pub metadata: Obj<SyncMetadata>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SyncContact {
    pub full_name: LStr,
    pub first_name: LStr,
    pub phone_number: LStr,
    pub user_id: LStr,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SyncMetadata {
    pub timestamp: LTime,
}
