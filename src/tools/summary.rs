//! One readable line per event: exchange, type, customer, and the text or the detail that
//! matters (`coexist process --format summary`, and `coexist tail` after the time).

use crate::core::domain::Customer;
use crate::core::engine::event::{By, ByKind, Event, EventMessage, Outbound, Payload};
use crate::tools::printable::escape;

/// `exchange  type  customer  text or detail`, aligned. What came from outside (names, texts,
/// ids) is escaped for the terminal: one event is always one line.
pub fn line(o: &Outbound) -> String {
    format!(
        "{:<10} {:<22} {:<12} {}",
        o.exchange.as_str(),
        o.event.name(),
        escape(who(&o.event.customer)),
        escape(&detail(&o.event))
    )
}

/// The customer as a person reads them: the profile name, else the number, else the user id.
fn who(c: &Customer) -> &str {
    c.name
        .as_deref()
        .or(c.wa_id.as_deref())
        .or(c.user_id.as_deref())
        .unwrap_or("-")
}

/// A message's text, with the phone icon of what came from the Business App.
fn text(m: &EventMessage) -> String {
    match m.icon {
        Some(_) => format!("📱 {}", m.text),
        None => m.text.clone(),
    }
}

/// A value's name as events write it.
fn wire_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// ` by {name}` for an operator, ` by routing` for Conversation Routing; the App's and the
/// timeout's go without saying.
fn by(by: &By) -> String {
    match (by.kind, &by.name) {
        (ByKind::Operator, Some(name)) => format!("  by {name}"),
        (ByKind::Operator, None) => "  by an operator".to_owned(),
        (ByKind::Routing, _) => "  by routing".to_owned(),
        _ => String::new(),
    }
}

fn or_dash(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

fn detail(e: &Event) -> String {
    match &e.payload {
        Payload::MessageReceived(m) => {
            let handback = m.agent.as_ref().and_then(|a| a.handback.as_ref());
            match handback {
                Some(h) => format!(
                    "{}  (+ handback: {}, {} message(s))",
                    text(&m.message),
                    h.reason.as_str(),
                    h.messages.len()
                ),
                None => text(&m.message),
            }
        }
        Payload::SentFromApp(m) => text(&m.message),
        Payload::Edited(m) => format!(
            "{}  (edits {})",
            text(&m.message),
            or_dash(&m.original_message_id)
        ),
        Payload::Revoked(r) => format!("deletes {}", or_dash(&r.original_message_id)),
        Payload::History(h) => format!("{} {}", wire_name(&h.direction), text(&h.message)),
        Payload::SessionPaused(p) => format!("until {}", p.paused_until),
        Payload::Handover(h) => format!("until {}{}", h.paused_until, by(&h.by)),
        Payload::Released(r) => format!("{}{}", r.reason.as_str(), by(&r.by)),
        Payload::MessageStatus(s) => format!("{} {}", or_dash(&s.status), or_dash(&s.message_id)),
        Payload::AccountUpdated(a) => format!("{} {}", or_dash(&a.event), or_dash(&a.reason)),
        Payload::HistoryStatus(h) if h.declined => "declined".to_owned(),
        Payload::HistoryStatus(h) => {
            let n = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
            format!(
                "phase {} chunk {} progress {}%",
                n(h.phase),
                n(h.chunk_order),
                n(h.progress)
            )
        }
        Payload::ContactSynced(c) => or_dash(&c.action).to_owned(),
        Payload::CustomerChanged(c) => {
            let was = c.previous.wa_id.as_ref().or(c.previous.user_id.as_ref());
            format!(
                "{} changed (was {})",
                wire_name(&c.change),
                or_dash(&was.cloned())
            )
        }
        Payload::ReplySuppressed(r) => {
            format!("{}  (not sent: {})", text(&r.message), r.reason.as_str())
        }
        Payload::SentByBot(m) => text(&m.message),
        Payload::Observed(m) => format!("{}  (observed)", text(&m.message)),
        Payload::Preferences(p) => format!("{} {}", or_dash(&p.category), or_dash(&p.value)),
        Payload::MetaError(m) => m.errors.get().to_owned(),
        Payload::NumberUpdated(u) => {
            let keys: Vec<String> = u
                .changed
                .iter()
                .map(|(k, v)| match v.is_null() {
                    true => format!("{k} unset"),
                    false => format!("{k}={v}"),
                })
                .collect();
            format!("{}{}", keys.join(" "), by(&u.by))
        }
        Payload::NumberStateChanged(c) => {
            let reason = c
                .reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            format!("{} -> {}{reason}{}", c.from, c.to, by(&c.by))
        }
    }
}
