//! Webhook bodies in Meta's shape.

use super::*;
use coexist::core::time::Millis;
use serde_json::{json, Value};

/// Now, in whole seconds (Meta's timestamps are seconds).
pub fn t0() -> i64 {
    Millis::now().0 / 1000
}

pub fn envelope(field: &str, value: Value) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": [{"value": value, "field": field}]}]}).to_string()
}

pub fn metadata() -> Value {
    json!({"display_phone_number": BUSINESS, "phone_number_id": PNID})
}

/// A customer message of any type: `content` is the type's object.
pub fn customer_msg(from: &str, wamid: &str, ts: i64, kind: &str, content: Value) -> String {
    let mut m = json!({"from": from, "id": wamid, "timestamp": ts.to_string(), "type": kind});
    m[kind] = content;
    envelope(
        "messages",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
               "contacts": [{"profile": {"name": "Ana Ruiz"}, "wa_id": from}], "messages": [m]}),
    )
}

pub fn customer_text(from: &str, wamid: &str, ts: i64, body: &str) -> String {
    customer_msg(from, wamid, ts, "text", json!({"body": body}))
}

pub fn echo_msg(to: &str, wamid: &str, ts: i64, kind: &str, content: Value) -> String {
    let mut m =
        json!({"from": BUSINESS, "to": to, "id": wamid, "timestamp": ts.to_string(), "type": kind});
    m[kind] = content;
    envelope(
        "smb_message_echoes",
        json!({"messaging_product": "whatsapp", "metadata": metadata(), "message_echoes": [m]}),
    )
}

pub fn echo_text(to: &str, wamid: &str, ts: i64, body: &str) -> String {
    echo_msg(to, wamid, ts, "text", json!({"body": body}))
}

pub fn status(recipient: &str, wamid: &str, ts: i64, status: &str) -> String {
    envelope(
        "messages",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
               "statuses": [{"id": wamid, "status": status, "timestamp": ts.to_string(), "recipient_id": recipient}]}),
    )
}
