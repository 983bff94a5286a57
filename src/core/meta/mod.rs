//! Meta's webhooks, read into the rules' [`Item`]s: one item per message, echo, status, history message,
//! history progress, contact change or account update, in order of appearance.
//!
//! Reading is tolerant: unknown fields and types are data, a field of the wrong type reads as
//! absent, and a part that cannot be placed in any conversation is kept aside as [`Unreadable`]
//! with its reason (never dropped). Only a body that is not a webhook at all is an error
//! ([`BodyError`]).

pub mod lenient;
pub mod render;
pub mod reply;
pub mod wire;

use lenient::{LStr, RawList};
use serde_json::value::RawValue;

use crate::core::domain::{
    phone_digits, stable_id, valid_phone_number_id, Customer, CustomerKey, Scope,
};
use crate::core::engine::input::{
    Change, Content, Control, Direction, Echo, Item, ItemKind, Media, NameChange, ObservedFrom,
};
use crate::core::time::Millis;

/// The code Meta sends when the business declined to share its chat history.
pub const HISTORY_DECLINED: i64 = 2593109;

/// A body that is not a WhatsApp webhook.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a WhatsApp webhook: {0}")]
    NotWebhook(String),
}

/// A webhook body, read: its items in order of appearance, and the parts that cannot be placed
/// in any conversation.
#[derive(Debug, Default)]
pub struct Parsed {
    pub items: Vec<Item>,
    pub unreadable: Vec<Unreadable>,
    /// The `time` of the entry being read: the time of its items that carry none.
    entry_time: Option<Millis>,
}

/// Part of a signed body that cannot be placed (no number, no customer, not an object): kept
/// with the reason, never dropped (the ingress parks it in the dead-letter queue).
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// A digest of its bytes (the dead letter's id).
    pub key: String,
    /// As sent (whitespace between tokens removed).
    pub raw: Box<RawValue>,
    pub reason: String,
}

/// Reads a webhook body into its items. Errors only when the body is not a webhook at all.
pub fn parse_body(body: &[u8]) -> Result<Parsed, BodyError> {
    // Serde would read an array as a struct's fields by position: only an object is a webhook.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => BodyError::NotWebhook("the body is not a JSON object".into()),
                Err(e) => BodyError::NotJson(e.to_string()),
            },
        );
    }
    let envelope: wire::Envelope = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            BodyError::NotWebhook("the body is not a JSON object".into())
        } else {
            BodyError::NotJson(e.to_string())
        }
    })?;
    match envelope.object.get() {
        None | Some("whatsapp_business_account") => {}
        Some(other) => {
            return Err(BodyError::NotWebhook(format!(
                "`object` is {other:?}, not \"whatsapp_business_account\""
            )))
        }
    }
    let entries = match envelope.entry {
        RawList::List(entries) => entries,
        RawList::Absent => return Err(BodyError::NotWebhook("no `entry` array".into())),
        RawList::NotList => return Err(BodyError::NotWebhook("`entry` is not an array".into())),
    };
    let mut out = Parsed::default();
    for entry in entries {
        read_entry(entry, &mut out);
    }
    Ok(out)
}

impl Parsed {
    /// Keeps an item; one without a timestamp of its own takes its entry's `time`.
    fn push(&mut self, mut item: Item) {
        item.timestamp = item.timestamp.or(self.entry_time);
        self.items.push(item);
    }

    /// Keeps a part that cannot be placed, with the reason.
    fn park(&mut self, raw: &RawValue, reason: impl Into<String>) {
        self.unreadable.push(Unreadable {
            key: format!("x:{}", stable_id(&[raw.get()])),
            raw: compact(raw),
            reason: reason.into(),
        });
    }
}

fn array(list: RawList<'_>) -> Result<Vec<&RawValue>, ()> {
    match list {
        RawList::Absent => Ok(Vec::new()),
        RawList::List(items) => Ok(items),
        RawList::NotList => Err(()),
    }
}

fn read_entry(raw: &RawValue, out: &mut Parsed) {
    let Ok(entry) = serde_json::from_str::<lenient::Obj<wire::Entry>>(raw.get()) else {
        return out.park(raw, "an entry that cannot be read");
    };
    let Some(mut entry) = entry.0 else {
        return out.park(raw, "an entry that is not an object");
    };
    let Ok(changes) = array(std::mem::take(&mut entry.changes)) else {
        return out.park(raw, "`changes` is not an array");
    };
    out.entry_time = entry.time.0;
    for change in changes {
        let parsed = serde_json::from_str::<lenient::Obj<wire::Change>>(change.get())
            .ok()
            .and_then(|c| c.0);
        let Some(c) = parsed else {
            out.park(change, "a change that is not an object");
            continue;
        };
        read_change(&entry, c, change, out);
    }
}

fn read_change(entry: &wire::Entry, change: wire::Change, raw_change: &RawValue, out: &mut Parsed) {
    let field = change.field.get().unwrap_or("").to_owned();
    let value_raw = change.value.unwrap_or(raw_change);
    let value = match serde_json::from_str::<lenient::Obj<wire::Value>>(value_raw.get()) {
        Ok(lenient::Obj(Some(v))) => v,
        _ => {
            return out.park(
                raw_change,
                format!("`{field}` change without a readable value"),
            )
        }
    };
    let metadata = value.metadata.get();
    let pnid = metadata
        .and_then(|m| m.phone_number_id.get())
        .or_else(|| value.recipient.get().and_then(|r| r.phone_number_id.get()))
        .filter(|s| valid_phone_number_id(s));

    if field == "account_update" {
        // No metadata: the business account (entry.id) stands for the number.
        let id = [value.phone_number_id.get(), pnid, entry.id.get()]
            .into_iter()
            .flatten()
            .find(|s| valid_phone_number_id(s));
        let Some(id) = id else {
            return out.park(raw_change, "an account_update that names no account");
        };
        let event = value.event.0.clone();
        let time = entry.time.0;
        let key = match (&event, time) {
            (Some(e), Some(t)) => format!("a:{e}:{}", t.0),
            _ => format!("a:{}", stable_id(&[value_raw.get()])),
        };
        return out.push(Item {
            scope: Scope::number(id),
            key,
            timestamp: time,
            raw: compact(value_raw),
            kind: ItemKind::AccountUpdate {
                event,
                reason: value
                    .disconnection_info
                    .get()
                    .and_then(|d| d.reason.0.clone()),
            },
        });
    }

    let subscribed = HANDLED_FIELDS.contains(&field.as_str());
    let Some(pnid) = pnid else {
        // A field this product does not read is kept under the business account; one it reads
        // cannot be placed without its number.
        let account = entry.id.get().filter(|id| valid_phone_number_id(id));
        return match account.filter(|_| !subscribed) {
            Some(account) => out.push(Item {
                scope: Scope::number(account),
                key: format!("u:{}", stable_id(&[raw_change.get()])),
                timestamp: None,
                raw: compact(raw_change),
                kind: ItemKind::Unhandled { field },
            }),
            None => out.park(
                raw_change,
                format!("`{field}` change without metadata.phone_number_id"),
            ),
        };
    };
    let ctx = Ctx {
        raw: value_raw,
        pnid,
        business: metadata
            .and_then(|m| m.display_phone_number.get())
            .and_then(phone_digits),
        value: &value,
    };

    match field.as_str() {
        "messages" => {
            ctx.each(&value.messages, "messages", out, |ctx, raw, out| {
                ctx.customer_message(raw, out)
            });
            ctx.each(&value.statuses, "statuses", out, |ctx, raw, out| {
                ctx.status(raw, out)
            });
        }
        "standby" => {
            // R18: copies of a thread another responder owns: observed, never answered.
            ctx.each(&value.messages, "messages", out, |ctx, raw, out| {
                ctx.observed(raw, ObservedFrom::Customer, out)
            });
            ctx.each(
                &value.message_echoes,
                "message_echoes",
                out,
                |ctx, raw, out| ctx.observed(raw, ObservedFrom::OtherApp, out),
            );
            ctx.each(&value.statuses, "statuses", out, |ctx, raw, out| {
                // The other responder's receipts: not ours to report, but never silent.
                out.push(Item {
                    scope: Scope::number(ctx.pnid),
                    key: format!("u:{}", stable_id(&[raw.get()])),
                    timestamp: None,
                    raw: compact(raw),
                    kind: ItemKind::Unhandled {
                        field: "standby.statuses".into(),
                    },
                })
            });
        }
        "messaging_handovers" => match &value.messaging_handovers {
            RawList::List(each) => each.iter().for_each(|raw| ctx.handover(raw, out)),
            _ => ctx.handover(value_raw, out),
        },
        "user_preferences" => ctx.each(
            &value.user_preferences,
            "user_preferences",
            out,
            |ctx, raw, out| ctx.preference(raw, out),
        ),
        "smb_message_echoes" => ctx.each(
            &value.message_echoes,
            "message_echoes",
            out,
            |ctx, raw, out| ctx.echo(raw, out),
        ),
        "history" => {
            ctx.each(&value.history, "history", out, |ctx, raw, out| {
                ctx.history_chunk(raw, out)
            });
            // The follow-up form (media for earlier placeholders): the customer's as `messages[]`,
            // the business's as `message_echoes[]`.
            let nobody = Customer::default();
            ctx.each(&value.messages, "messages", out, |ctx, raw, out| {
                ctx.history_message(raw, &nobody, Some(Direction::Inbound), out)
            });
            ctx.each(
                &value.message_echoes,
                "message_echoes",
                out,
                |ctx, raw, out| ctx.history_message(raw, &nobody, Some(Direction::Outbound), out),
            );
        }
        "smb_app_state_sync" => ctx.each(&value.state_sync, "state_sync", out, |ctx, raw, out| {
            ctx.state_sync(raw, out)
        }),
        _ => out.push(Item {
            scope: Scope::number(pnid),
            key: format!("u:{}", stable_id(&[value_raw.get()])),
            timestamp: None,
            raw: compact(value_raw),
            kind: ItemKind::Unhandled { field },
        }),
    }
    // Errors Meta reports for the number rather than for one message (any field's value).
    if let Some(errors) = value
        .errors
        .filter(|e| e.get().trim_start().starts_with('['))
    {
        let empty = serde_json::from_str::<Vec<serde::de::IgnoredAny>>(errors.get())
            .map_or(true, |e| e.is_empty());
        if !empty {
            out.push(Item {
                scope: Scope::number(pnid),
                key: format!("e:{}", stable_id(&[errors.get()])),
                timestamp: None,
                raw: compact(value_raw),
                kind: ItemKind::Errors {
                    errors: compact(errors),
                },
            });
        }
    }
}

/// The fields this product reads (a deployment subscribes its app to these). A change of any
/// other field is counted and reported ([`report`]), never silently dropped.
pub const HANDLED_FIELDS: &[&str] = &[
    "messages",
    "smb_message_echoes",
    "history",
    "smb_app_state_sync",
    "account_update",
    "standby",
    "messaging_handovers",
    "user_preferences",
];

/// Says what a parsed body holds that coexist does not act on: each change of a field it does
/// not handle is counted (`coexist_webhook_items_total{kind="unhandled", field}`) and logged at
/// warn once per field name per process; errors Meta reports for a number are logged with their
/// code and title.
pub fn report(parsed: &Parsed) {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    for item in &parsed.items {
        match &item.kind {
            ItemKind::Unhandled { field } => {
                metrics::counter!(crate::runtime::metrics::WEBHOOK_ITEMS, "kind" => "unhandled", "field" => field.clone())
                    .increment(1);
                let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
                if !warned.contains(field) {
                    warned.push(field.clone());
                    tracing::warn!(
                        field = %field,
                        "Meta sent a change of a field coexist does not handle: counted, not acted on (logged once per field)"
                    );
                }
            }
            ItemKind::Errors { errors } => {
                let list: Vec<serde_json::Value> =
                    serde_json::from_str(errors.get()).unwrap_or_default();
                for e in list {
                    tracing::warn!(
                        phone_number_id = %item.scope.phone_number_id,
                        code = %e["code"],
                        title = %e["title"].as_str().unwrap_or(""),
                        "Meta reports an error for the number"
                    );
                }
            }
            _ => {}
        }
    }
}

struct Ctx<'v, 'a> {
    /// The change's value, as sent (kept with an item that cannot be read).
    raw: &'v RawValue,
    pnid: &'v str,
    business: Option<String>,
    value: &'v wire::Value<'a>,
}

impl Ctx<'_, '_> {
    fn each<'r>(
        &self,
        list: &RawList<'r>,
        name: &str,
        out: &mut Parsed,
        mut f: impl FnMut(&Self, &'r RawValue, &mut Parsed),
    ) {
        match list {
            RawList::Absent => {}
            RawList::List(items) => items.iter().for_each(|r| f(self, r, out)),
            RawList::NotList => out.park(self.raw, format!("`{name}` is not an array")),
        }
    }

    /// Reads an item as `T`; one that is not an object is kept as unreadable, naming `what`.
    fn read<'r, T: serde::Deserialize<'r>>(
        &self,
        raw: &'r RawValue,
        what: &str,
        out: &mut Parsed,
    ) -> Option<T> {
        let parsed = serde_json::from_str::<lenient::Obj<T>>(raw.get())
            .ok()
            .and_then(|o| o.0);
        if parsed.is_none() {
            out.park(raw, format!("{what} that is not an object"));
        }
        parsed
    }

    fn customer_message(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(m) = self.read::<wire::Message>(raw, "a message", out) else {
            return;
        };
        let sender = Customer {
            wa_id: m.from.get().and_then(phone_digits),
            user_id: m.from_user_id.0.clone(),
            name: None,
        };
        let customer = self.not_the_business(self.with_contact(sender));
        // A group's message belongs to the group's conversation (R19), never the sender's.
        let key = match group(&m) {
            Some(group) => group,
            None => match customer.key() {
                Some(key) => key,
                None => return out.park(raw, "a customer message without a sender"),
            },
        };
        let kind = if m.kind.get() == Some("system") {
            system(&m, customer)
        } else {
            match change(&m) {
                Some(change) => ItemKind::CustomerChange { customer, change },
                None => ItemKind::Customer {
                    message: content(&m),
                    customer,
                },
            }
        };
        out.push(Item {
            scope: Scope::conversation(self.pnid, key),
            key: message_key(&m, raw),
            timestamp: m.timestamp.0,
            raw: compact(raw),
            kind,
        });
    }

    fn echo(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(m) = self.read::<wire::Message>(raw, "an echo", out) else {
            return;
        };
        let customer = self.not_the_business(Customer {
            wa_id: m.to.get().and_then(phone_digits),
            user_id: m.to_user_id.0.clone(),
            name: None,
        });
        let Some(key) = group(&m).or_else(|| customer.key()) else {
            return out.park(raw, "an echo without a recipient");
        };
        let echo = match change(&m) {
            Some(change) => Echo::Change(change),
            None => Echo::Send(content(&m)),
        };
        out.push(Item {
            scope: Scope::conversation(self.pnid, key),
            key: message_key(&m, raw),
            timestamp: m.timestamp.0,
            raw: compact(raw),
            kind: ItemKind::Echo { customer, echo },
        });
    }

    /// R18: a message copied on `standby` (a customer's, or the owning responder's).
    fn observed(&self, raw: &RawValue, from: ObservedFrom, out: &mut Parsed) {
        let Some(m) = self.read::<wire::Message>(raw, "a standby message", out) else {
            return;
        };
        let named = match from {
            ObservedFrom::Customer => Customer {
                wa_id: m.from.get().and_then(phone_digits),
                user_id: m.from_user_id.0.clone(),
                name: None,
            },
            ObservedFrom::OtherApp => Customer {
                wa_id: m.to.get().and_then(phone_digits),
                user_id: m.to_user_id.0.clone(),
                name: None,
            },
        };
        let customer = self.not_the_business(self.with_contact(named));
        let Some(key) = group(&m).or_else(|| customer.key()) else {
            return out.park(raw, "a standby message without a customer");
        };
        out.push(Item {
            scope: Scope::conversation(self.pnid, key),
            // Its own dedup key: the same wamid may reach us on `messages` once we own the thread.
            key: format!("sb:{}", message_key(&m, raw)),
            timestamp: m.timestamp.0,
            raw: compact(raw),
            kind: ItemKind::Observed {
                customer,
                message: content(&m),
                from,
            },
        });
    }

    /// R18: a `messaging_handovers` notification; one that names no customer or no move is
    /// parked, never dropped.
    fn handover(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(h) = self.read::<wire::Handover>(raw, "a messaging_handovers notification", out)
        else {
            return;
        };
        let sender = h.sender.get();
        let phone = sender
            .and_then(|s| s.phone_number.get().or(s.wa_id.get()))
            .or(h.from.get())
            .or(h.wa_id.get())
            .and_then(phone_digits);
        let user_id = sender
            .and_then(|s| s.user_id.0.clone())
            .or(h.user_id.0.clone());
        let customer = self.not_the_business(self.with_contact(Customer {
            wa_id: phone,
            user_id,
            name: None,
        }));
        let control = match h.kind.get() {
            Some("control_taken") => Some(Control::Taken),
            Some("control_passed") => Some(Control::Passed),
            _ => match (h.control_taken, h.control_passed) {
                (Some(_), None) => Some(Control::Taken),
                (None, Some(_)) => Some(Control::Passed),
                _ => None,
            },
        };
        let Some(control) = control else {
            return out.park(
                raw,
                "a messaging_handovers notification that says neither control_taken nor control_passed",
            );
        };
        let Some(key) = customer.key() else {
            return out.park(
                raw,
                "a messaging_handovers notification that names no customer",
            );
        };
        let object = match control {
            Control::Taken => h.control_taken,
            Control::Passed => h.control_passed,
        };
        let metadata = object
            .and_then(|o| serde_json::from_str::<lenient::Obj<wire::Control>>(o.get()).ok())
            .and_then(|o| o.0)
            .and_then(|c| c.metadata.0);
        let name = match control {
            Control::Taken => "taken",
            Control::Passed => "passed",
        };
        let item_key = match h.timestamp.0 {
            Some(t) => format!("ho:{name}:{}:{}", key.as_str(), t.0),
            None => format!("ho:{name}:{}", stable_id(&[raw.get()])),
        };
        out.push(Item {
            scope: Scope::conversation(self.pnid, key),
            key: item_key,
            timestamp: h.timestamp.0,
            raw: compact(raw),
            kind: ItemKind::Routing {
                customer,
                control,
                metadata,
            },
        });
    }

    /// A `user_preferences` entry: the customer stopped or resumed a kind of messages.
    fn preference(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(p) = self.read::<wire::Preference>(raw, "a user_preferences entry", out) else {
            return;
        };
        let customer = self.not_the_business(self.with_contact(Customer {
            wa_id: p.wa_id.get().and_then(phone_digits),
            user_id: p.user_id.0.clone(),
            name: None,
        }));
        let Some(key) = customer.key() else {
            return out.park(raw, "a user_preferences entry that names no customer");
        };
        out.push(Item {
            scope: Scope::conversation(self.pnid, key),
            key: format!("p:{}", stable_id(&[raw.get()])),
            timestamp: p.timestamp.0,
            raw: compact(raw),
            kind: ItemKind::Preferences {
                customer,
                category: p.category.0.clone(),
                value: p.value.0.clone(),
                detail: p.detail.0.clone(),
            },
        });
    }

    fn status(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(s) = self.read::<wire::Status>(raw, "a status", out) else {
            return;
        };
        let customer = self.not_the_business(self.with_contact(Customer {
            wa_id: s.recipient_id.get().and_then(phone_digits),
            user_id: s.recipient_user_id.0.clone(),
            name: None,
        }));
        let scope = match customer.key() {
            Some(k) => Scope::conversation(self.pnid, k),
            None => Scope::number(self.pnid),
        };
        let key = match (s.id.get(), s.status.get()) {
            (Some(id), Some(st)) => format!("s:{id}:{st}"),
            _ => format!("s:{}", stable_id(&[raw.get()])),
        };
        let errors = match s.errors.filter(|e| e.get().trim_start().starts_with('[')) {
            Some(e) => compact(e),
            None => RawValue::from_string("[]".into()).expect("valid JSON"),
        };
        out.push(Item {
            scope,
            key,
            timestamp: s.timestamp.0,
            raw: compact(raw),
            kind: ItemKind::Status {
                customer,
                message_id: s.id.0.clone(),
                status: s.status.0.clone(),
                errors,
            },
        });
    }

    fn history_chunk(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(chunk) = self.read::<wire::HistoryChunk>(raw, "a history chunk", out) else {
            return;
        };
        for thread in chunk.threads.0.iter().filter_map(|t| t.get()) {
            // Who the thread is with: its id (a phone, or a user id) and its `context`.
            let id = thread.id.get().and_then(CustomerKey::parse);
            let context = thread.context.get();
            let with = Customer {
                wa_id: context
                    .and_then(|c| c.wa_id.get())
                    .and_then(phone_digits)
                    .or_else(|| match &id {
                        Some(CustomerKey::WaId(w)) => Some(w.clone()),
                        _ => None,
                    }),
                user_id: context
                    .and_then(|c| c.user_id.0.clone())
                    .or_else(|| match &id {
                        Some(CustomerKey::UserId(u)) => Some(u.clone()),
                        _ => None,
                    }),
                name: None,
            };
            match &thread.messages {
                RawList::Absent => {}
                RawList::List(msgs) => msgs
                    .iter()
                    .for_each(|m| self.history_message(m, &with, None, out)),
                RawList::NotList => out.park(raw, "`threads[].messages` is not an array"),
            }
        }
        let meta = chunk.metadata.get();
        let (phase, chunk_order, progress) = match meta {
            Some(m) => (m.phase.int(), m.chunk_order.int(), m.progress.int()),
            None => (None, None, None),
        };
        let declined = chunk
            .errors
            .0
            .iter()
            .filter_map(|e| e.get())
            .any(|e| e.code.int() == Some(HISTORY_DECLINED));
        let key = if meta.is_some() {
            format!("hs:{}:{}:{}", opt(phase), opt(chunk_order), opt(progress))
        } else {
            format!("hs:{}", stable_id(&[raw.get()]))
        };
        out.push(Item {
            scope: Scope::number(self.pnid),
            key,
            timestamp: None,
            raw: compact(raw),
            kind: ItemKind::HistoryStatus {
                phase,
                chunk_order,
                progress,
                declined,
            },
        });
    }

    /// One message of the history sync. `thread` names the customer when the thread does;
    /// `direction` is given by the form the message came in, else read from who sent it.
    fn history_message(
        &self,
        raw: &RawValue,
        thread: &Customer,
        direction: Option<Direction>,
        out: &mut Parsed,
    ) {
        let Some(m) = self.read::<wire::Message>(raw, "a history message", out) else {
            return;
        };
        let sender = Customer {
            wa_id: m.from.get().and_then(phone_digits),
            user_id: m.from_user_id.0.clone(),
            name: None,
        };
        let recipient = Customer {
            wa_id: m.to.get().and_then(phone_digits),
            user_id: m.to_user_id.0.clone(),
            name: None,
        };
        let direction = direction.unwrap_or_else(|| self.direction(&sender, &recipient, thread));
        let customer = match direction {
            Direction::Inbound => sender,
            Direction::Outbound => recipient,
        };
        let customer = self.not_the_business(customer.or(thread));
        if customer.key().is_none() {
            return out.park(raw, "a history message without a customer");
        }
        let key = customer.key().expect("checked above");
        let message = content(&m);
        out.push(Item {
            scope: Scope::conversation(self.pnid, key),
            // A placeholder and the media that replaces it share a wamid: the type tells them apart.
            key: format!("h:{}:{}", message_key(&m, raw), message.kind),
            timestamp: m.timestamp.0,
            raw: compact(raw),
            kind: ItemKind::History {
                customer,
                message,
                direction,
            },
        });
    }

    /// A customer completed from the change's `contacts[]`: the contact that shares a name with
    /// them (or the only contact there is, when they have no name) gives its profile name and
    /// the names they lack.
    fn with_contact(&self, customer: Customer) -> Customer {
        let contacts = &self.value.contacts.0;
        let matches = |c: &wire::Contact| {
            (customer.user_id.is_some() && c.user_id.get() == customer.user_id.as_deref())
                || (customer.wa_id.is_some()
                    && c.wa_id.get().and_then(phone_digits) == customer.wa_id)
        };
        let contact = contacts.iter().filter_map(|c| c.get()).find(|c| matches(c));
        let of = |c: &wire::Contact| Customer {
            wa_id: c.wa_id.get().and_then(phone_digits),
            user_id: c.user_id.0.clone(),
            name: c.profile.get().and_then(|p| p.name.0.clone()),
        };
        match (contact, contacts.as_slice()) {
            (Some(c), _) => customer.or(&of(c)),
            // The only contact there is: its profile name (its ids only for a nameless sender).
            (None, [only]) => match only.get().map(of) {
                Some(c) if customer.wa_id.is_none() && customer.user_id.is_none() => c,
                Some(c) => Customer {
                    name: customer.name.or(c.name),
                    ..customer
                },
                None => customer,
            },
            (None, _) => customer,
        }
    }

    /// Whether a history message went out from the business or came in from the customer.
    fn direction(&self, sender: &Customer, recipient: &Customer, thread: &Customer) -> Direction {
        let business = |c: &Customer| c.wa_id.is_some() && c.wa_id == self.business;
        let named = |c: &Customer| c.wa_id.is_some() || c.user_id.is_some();
        if business(sender) {
            Direction::Outbound
        } else if business(recipient) || (sender.wa_id.is_none() && sender.user_id.is_some()) {
            // Sent to the business, or by a customer named only by their user id.
            Direction::Inbound
        } else if !named(sender) {
            match named(recipient) {
                true => Direction::Outbound,
                false => Direction::Inbound,
            }
        } else if self.business.is_none() && named(recipient) && !sender.same_person(thread) {
            // The business's number is unknown: a message to someone, from other than the
            // thread's customer, is the business's.
            Direction::Outbound
        } else {
            Direction::Inbound
        }
    }

    /// The business's own number is never the customer: it is dropped from a customer's names.
    fn not_the_business(&self, mut c: Customer) -> Customer {
        if c.wa_id.is_some() && c.wa_id == self.business {
            c.wa_id = None;
        }
        c
    }

    fn state_sync(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(s) = self.read::<wire::StateSync>(raw, "a state_sync item", out) else {
            return;
        };
        if s.kind.get().is_some_and(|k| k != "contact") {
            return out.push(Item {
                scope: Scope::number(self.pnid),
                key: format!("u:{}", stable_id(&[raw.get()])),
                timestamp: None,
                raw: compact(raw),
                kind: ItemKind::Unhandled {
                    field: format!("smb_app_state_sync:{}", s.kind.get().unwrap_or("")),
                },
            });
        }
        let contact = s
            .contact
            .and_then(|c| serde_json::from_str::<lenient::Obj<wire::SyncContact>>(c.get()).ok())
            .and_then(|c| c.0);
        let customer = Customer {
            wa_id: contact
                .as_ref()
                .and_then(|c| c.phone_number.get())
                .and_then(phone_digits),
            user_id: contact.as_ref().and_then(|c| c.user_id.0.clone()),
            name: contact
                .as_ref()
                .and_then(|c| c.full_name.0.clone().or(c.first_name.0.clone())),
        };
        let timestamp = s.metadata.get().and_then(|m| m.timestamp.0);
        let scope = match customer.key() {
            Some(k) => Scope::conversation(self.pnid, k),
            None => Scope::number(self.pnid),
        };
        out.push(Item {
            key: format!(
                "c:{}:{}:{}",
                customer.wa_id.as_deref().unwrap_or(""),
                s.action.get().unwrap_or(""),
                timestamp.map_or(0, |t| t.0)
            ),
            scope,
            timestamp,
            raw: compact(raw),
            kind: ItemKind::ContactSync {
                customer,
                action: s.action.0.clone(),
                contact: s.contact.map(compact),
            },
        });
    }
}

/// The item's JSON without the whitespace between tokens (pretty-printed input would otherwise
/// carry its line breaks into events): the same bytes otherwise, key order and numbers as sent.
pub fn compact(raw: &RawValue) -> Box<RawValue> {
    let s = raw.get();
    if !s.bytes().any(|b| matches!(b, b'\n' | b'\r' | b'\t' | b' ')) {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in s.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            in_string = c == '"';
            out.push(c);
        }
    }
    RawValue::from_string(out).unwrap_or_else(|_| raw.to_owned())
}

fn opt(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The group a message belongs to (R19): its conversation's key.
fn group(m: &wire::Message) -> Option<CustomerKey> {
    m.group_id.get().and_then(CustomerKey::group)
}

/// The dedup key of a message: its wamid, or a digest of its bytes when it has none.
fn message_key(m: &wire::Message, raw: &RawValue) -> String {
    match m.id.get().filter(|id| !id.is_empty()) {
        Some(id) => format!("m:{id}"),
        None => format!("m:{}", stable_id(&[raw.get()])),
    }
}

/// A `system` message: what changed, and the customer before and after. Older payloads say
/// `customer_changed_number` / `new_wa_id` and `customer_identity_changed`.
fn system(m: &wire::Message, sender: Customer) -> ItemKind {
    let sys = m.system.get();
    let field = |f: fn(&wire::System) -> &LStr| sys.and_then(|s| f(s).0.clone());
    let kind = sys.and_then(|s| s.kind.get()).unwrap_or("");
    let change = if kind.contains("number") {
        NameChange::Number
    } else if kind.contains("user_id") {
        NameChange::UserId
    } else {
        NameChange::Identity
    };
    let previous = Customer {
        wa_id: sender.wa_id.clone(),
        user_id: field(|s| &s.previous_user_id).or_else(|| sender.user_id.clone()),
        name: None,
    };
    let new_number = field(|s| &s.wa_id)
        .or_else(|| field(|s| &s.new_wa_id))
        .as_deref()
        .and_then(phone_digits);
    let customer = Customer {
        wa_id: match change {
            NameChange::Number => new_number.or(sender.wa_id),
            _ => sender.wa_id,
        },
        user_id: field(|s| &s.user_id).or(match change {
            // A new number comes with a new user id; without it, the old one is not theirs.
            NameChange::Number => None,
            _ => sender.user_id,
        }),
        name: sender.name,
    };
    ItemKind::System {
        customer,
        previous,
        change,
    }
}

/// The edit or deletion a message of type `edit` / `revoke` is (customer's or echo, one shape).
/// An edit's new content is its nested `message`, else the edit's own fields; it keeps the
/// edit's own id.
fn change(m: &wire::Message) -> Option<Change> {
    match m.kind.get()? {
        "revoke" => Some(Change::Revoke {
            original_message_id: m.revoke.get().and_then(|r| r.original_message_id.0.clone()),
        }),
        "edit" => {
            let edit = m.edit.get();
            let message = match edit.and_then(|e| e.message.get()) {
                Some(inner) => Content {
                    id: m.id.0.clone(),
                    ..content(inner)
                },
                None => Content {
                    id: m.id.0.clone(),
                    kind: "text".into(),
                    text: edit
                        .and_then(|e| e.text.get())
                        .and_then(|t| t.body.0.clone())
                        .unwrap_or_default(),
                    media: None,
                    reply_to: None,
                },
            };
            Some(Change::Edit {
                original_message_id: edit.and_then(|e| e.original_message_id.0.clone()),
                message,
            })
        }
        _ => None,
    }
}

fn content(m: &wire::Message) -> Content {
    let media = render::media_of(m).map(|md| Media {
        id: md.id.0.clone(),
        mime_type: md.mime_type.0.clone(),
        caption: md.caption.0.clone(),
        filename: md.filename.0.clone(),
    });
    Content {
        id: m.id.0.clone(),
        kind: m.kind.0.clone().unwrap_or_else(|| "unknown".into()),
        text: render::text(m),
        media,
        reply_to: m.context.get().and_then(|c| c.id.0.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_drops_only_whitespace_between_tokens() {
        let raw: Box<RawValue> =
            serde_json::from_str("{\n \"a\" : [1, 2.50],\n \"b\": \"x  y\\\" \\n z\"\t}").unwrap();
        assert_eq!(compact(&raw).get(), r#"{"a":[1,2.50],"b":"x  y\" \n z"}"#);
        let already: Box<RawValue> = serde_json::from_str(r#"{"k":"v"}"#).unwrap();
        assert_eq!(compact(&already).get(), r#"{"k":"v"}"#);
    }
}
