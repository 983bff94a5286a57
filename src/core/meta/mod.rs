//! Meta's webhooks, read into the rules' [`Item`]s: one item per message, echo, status, history message,
//! history progress, contact change or account update, in order of appearance.
//!
//! Reading is tolerant: unknown fields and types are data, a field of the wrong type reads as
//! absent, and a part that cannot be placed in any conversation is kept aside as [`Unreadable`]
//! with its reason (never dropped). Only a body that is not a webhook at all is an error
//! ([`BodyError`]).

pub(crate) mod items;
use items::Ctx;
pub mod lenient;
pub mod render;
pub mod reply;
pub mod wire;

use lenient::{LStr, RawList};
use serde_json::value::RawValue;

use crate::core::domain::{
    phone_digits, same_phone, stable_id, valid_phone_number_id, Customer, CustomerKey, Scope,
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
    /// Keeps an item; one without a timestamp of its own takes its entry's `time`. An item whose
    /// time is none Meta sends (before 1970, after year 9000) is parked with the reason.
    fn push(&mut self, mut item: Item) {
        item.timestamp = item.timestamp.or(self.entry_time);
        match item.timestamp {
            Some(t) if !t.readable() => {
                let reason = format!(
                    "its timestamp ({} s) is not a time Meta sends (before 1970 or after 9000-01-01)",
                    t.0.div_euclid(1000)
                );
                self.park(&item.raw, reason)
            }
            _ => self.items.push(item),
        }
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
                initiated_by: value
                    .disconnection_info
                    .get()
                    .and_then(|d| d.initiated_by.0.clone()),
                waba_id: [
                    value.waba_info.get().and_then(|w| w.waba_id.get()),
                    entry.id.get(),
                ]
                .into_iter()
                .flatten()
                .find(|s| valid_phone_number_id(s))
                .map(str::to_owned),
                phone_number: value
                    .phone_number
                    .get()
                    .map(|p| p.chars().filter(char::is_ascii_digit).collect::<String>())
                    .filter(|p| !p.is_empty()),
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
