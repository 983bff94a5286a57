//! Why (docs/contract.md, "Why"): every decision in one sentence a shop's staff understands,
//! derived from what the rules decided ([`explain`]), and the answer to "what happens on the
//! customer's next message" ([`next_message`]). Pure: the trail these entries go to is stored
//! with the decision ([`crate::core::apply`]), so a redelivery never doubles it.
//!
//! The sentences carry no phone number and no message text, with one exception: a near miss of
//! the reset command quotes the App message, which is then all but the reset command itself.

use serde::{Deserialize, Serialize};

use super::event::{ByKind, Event, Outbound, Payload, ReleaseReason, Source};
use super::input::{Change, Content, Control, Echo, Item, ItemKind, ObservedFrom};
use super::state::{Handler, State};
use super::{Decision, Input, OperatorAction, Rule, Rules};
use crate::core::domain::CustomerKey;
use crate::core::time::Millis;

/// How many trail entries a conversation keeps unless configured otherwise (`trail_entries`).
pub const TRAIL_ENTRIES: usize = 50;

/// One decision of a conversation, explained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrailEntry {
    /// RFC 3339: the time of what was decided (Meta's, the operator's, the deadline's).
    pub at: String,
    /// What was decided: a wamid, or an operator command's, a timeout's or the gate's id.
    pub item: String,
    /// `customer_message`, `app_message`, `reset_command`, `app_change`, `customer_change`,
    /// `customer_changed`, `observed`, `routing`, `operator_pause`, `operator_release`,
    /// `operator_extend`, `timeout`, `reply`.
    pub kind: String,
    /// The rule (`R1`-`R19`), `operator` or `gate`.
    pub rule: String,
    /// Where it went, in a few words.
    pub outcome: String,
    /// One sentence: why.
    pub why: String,
    /// The message, for the conversation's transcript (the console's conversation page), as
    /// the events carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Said>,
}

/// A message of the transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Said {
    /// `customer`, `business_app`, `business_app_automation`, `bot`, `other_app`.
    pub source: Source,
    pub id: Option<String>,
    /// `message.text`.
    pub text: String,
    /// A reply of the AI agent the gate refused: why (`conversation_held`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The customer's profile name, on a customer's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// An instant as people read it: `2025-12-02 12:01 UTC`.
pub fn when(m: Millis) -> String {
    let t = m.rfc3339();
    match (t.get(..10), t.get(11..16)) {
        (Some(day), Some(hm)) => format!("{day} {hm} UTC"),
        _ => t,
    }
}

fn when_text(rfc3339: &str) -> String {
    Millis::parse_rfc3339(rfc3339).map_or_else(|| rfc3339.to_owned(), when)
}

/// The reset command as written for people (`/reset`), or `None` when reset is off.
fn reset_words(rules: &Rules) -> Option<&str> {
    rules.reset_text.as_deref()
}

/// Whether an App text is a near miss of the reset command: the same but for a slash, spaces
/// or case (`reset` for `/reset`, `/ reset`), and not the command itself.
pub fn near_miss(reset: &str, text: &str) -> bool {
    let squeeze = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '/' && !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let (r, t) = (squeeze(reset), squeeze(text));
    !r.is_empty() && r == t && text.trim().to_lowercase() != reset.trim().to_lowercase()
}

/// Who paused a conversation, in words.
pub fn by_words(by: &super::event::By) -> String {
    match (by.kind, by.name.as_deref()) {
        (ByKind::BusinessApp, _) => "a person replying from the Business App".into(),
        (ByKind::Operator, Some(n)) => format!("operator {n}"),
        (ByKind::Operator, None) => "an operator".into(),
        (ByKind::Routing, _) => "Meta's Conversation Routing".into(),
        (ByKind::System, _) => "the timeout".into(),
    }
}

fn said(event: &Event) -> Option<Said> {
    let message = match &event.payload {
        Payload::MessageReceived(m) => &m.message,
        Payload::SentFromApp(m) => &m.message,
        Payload::Observed(m) => &m.message,
        _ => return None,
    };
    Some(Said {
        source: message.source,
        id: message.id.clone(),
        text: message.text.clone(),
        refused: None,
        from: (message.source == Source::Customer)
            .then(|| event.customer.name.clone())
            .flatten(),
    })
}

/// The entries a decision adds to its conversation's trail (none for what is not about who
/// answers: statuses, the history sync, account events, a timeout that found nothing to do).
pub fn explain(
    input: &Input,
    before: &State,
    d: &Decision,
    rules: &Rules,
    now: Millis,
) -> Vec<TrailEntry> {
    let mut out = Vec::new();
    let released = |e: &Outbound| match &e.event.payload {
        Payload::Released(r) => Some(r.reason),
        _ => None,
    };
    // A pause that ran out before this input was decided (R7) comes first.
    let expired = before.pause.as_ref().filter(|p| p.until <= now);
    if let (Some(p), true) = (
        expired,
        d.events
            .iter()
            .any(|e| released(e) == Some(ReleaseReason::Timeout)),
    ) {
        out.push(TrailEntry {
            at: p.until.rfc3339(),
            item: format!("release:{}", p.trigger),
            kind: "timeout".into(),
            rule: "R7".into(),
            outcome: "released (timeout)".into(),
            why: format!(
                "the pause begun by {} at {} ran out at {} with no reset command: the AI agent answers the customer's next message",
                by_words(&p.by),
                when(p.since),
                when(p.until)
            ),
            message: None,
        });
    }
    let group = matches!(input.scope().customer, Some(CustomerKey::Group(_)));
    let main = match input {
        Input::Item(item) => item_entry(item, before, d, rules, now),
        Input::Operator {
            id, action, at, by, ..
        } => {
            let name = by
                .as_deref()
                .map_or("an operator".to_owned(), |n| format!("operator {n}"));
            let (kind, outcome, why) = match action {
                OperatorAction::Pause | OperatorAction::Extend => {
                    let until = d.state.pause.as_ref().map(|p| p.until);
                    let until_words = until.map_or("-".into(), when);
                    let was = before.paused(*at);
                    match (action, was) {
                        (OperatorAction::Extend, Some(p)) => (
                            "operator_extend",
                            format!("pause extended to {until_words}"),
                            format!("{name} extended the pause (it was to end at {}): the AI agent stays paused until {until_words}", when(p.until)),
                        ),
                        (_, Some(p)) if until.is_some_and(|u| u <= p.until) => (
                            "operator_pause",
                            format!("paused already until {}", when(p.until)),
                            format!("{name} paused it, but it was already paused until {} (a pause is never shortened)", when(p.until)),
                        ),
                        _ => (
                            "operator_pause",
                            format!("paused until {until_words}"),
                            format!("{name} paused the AI agent for this customer until {until_words}: the customer's messages go to the inbox"),
                        ),
                    }
                }
                OperatorAction::Release => match before.paused(*at) {
                    Some(_) => (
                        "operator_release",
                        "released (operator)".to_owned(),
                        format!("{name} released the conversation: the AI agent answers the customer's next message"),
                    ),
                    None => (
                        "operator_release",
                        "nothing to release".to_owned(),
                        format!("{name} released the conversation, but nothing was paused: the AI agent already handled it"),
                    ),
                },
            };
            Some(TrailEntry {
                at: at.rfc3339(),
                item: id.clone(),
                kind: kind.into(),
                rule: "operator".into(),
                outcome,
                why,
                message: None,
            })
        }
        // The release itself is the R7 entry above; a timeout that found nothing says nothing.
        Input::Timeout(_) => None,
    };
    out.extend(main.map(|mut e| {
        if group {
            e.why.push_str(" (in the group's own conversation: R19)");
        }
        e
    }));
    out
}

fn entry(
    item: &Item,
    at: Millis,
    kind: &str,
    rule: &str,
    outcome: String,
    why: String,
) -> TrailEntry {
    TrailEntry {
        at: at.rfc3339(),
        item: item.key.clone(),
        kind: kind.into(),
        rule: rule.into(),
        outcome,
        why,
        message: None,
    }
}

fn item_entry(
    item: &Item,
    before: &State,
    d: &Decision,
    rules: &Rules,
    now: Millis,
) -> Option<TrailEntry> {
    let ts = item.timestamp.unwrap_or(now);
    let held = before.paused(now);
    let mut e = match &item.kind {
        ItemKind::Customer { .. } => match d.rule {
            Rule::R3 => {
                let p = held?;
                entry(item, ts, "customer_message", "R3", "to the inbox".into(), format!(
                    "a person holds the conversation (paused by {} at {}, until {}): to the inbox, not the AI agent",
                    by_words(&p.by), when(p.since), when(p.until)
                ))
            }
            Rule::R1 => entry(item, ts, "customer_message", "R1", "to the AI agent".into(),
                "the AI agent handles the conversation and its session is active: to the AI agent".into()),
            _ => {
                let handback = d.events.iter().find_map(|e| match &e.event.payload {
                    Payload::MessageReceived(m) => m.agent.as_ref()?.handback.as_ref(),
                    _ => None,
                });
                let why = match handback {
                    Some(h) => format!(
                        "no one holds the conversation and the AI agent has no active session: a new session, to the AI agent, with the handback of the {} message(s) of the stretch a person handled ({}) (R16)",
                        h.messages.len(),
                        h.reason.as_str()
                    ),
                    None => "no one holds the conversation and the AI agent has no active session (new customer, or the last one ended): a new session, to the AI agent".into(),
                };
                entry(item, ts, "customer_message", "R2", "to the AI agent (new session)".into(), why)
            }
        },
        ItemKind::Echo { echo: Echo::Send(content), .. } => app_message(item, content, ts, before, d, rules, now),
        ItemKind::Echo { echo: Echo::Change(change), .. } => {
            let what = match change {
                Change::Edit { .. } => "edited",
                Change::Revoke { .. } => "deleted",
            };
            entry(item, ts, "app_change", "R10", "to the inbox".into(), format!(
                "the Business App {what} one of its messages: to the inbox; the pause is unchanged (deleting the reset command does not undo it)"
            ))
        }
        ItemKind::CustomerChange { change, .. } => {
            let what = match change {
                Change::Edit { .. } => "edited",
                Change::Revoke { .. } => "deleted",
            };
            match held {
                Some(_) => entry(item, ts, "customer_change", "R14", "to the inbox".into(), format!(
                    "the customer {what} a message while a person holds the conversation: to the inbox"
                )),
                None => entry(item, ts, "customer_change", "R14", "to the AI agent".into(), format!(
                    "the customer {what} a message while the AI agent handles the conversation: to the AI agent (no new session)"
                )),
            }
        }
        ItemKind::System { .. } => entry(item, ts, "customer_changed", "R12a", "to both".into(),
            "the customer changed number or id: both the AI agent and the inbox are told, and the old and new names are one conversation".into()),
        ItemKind::Observed { from, .. } => {
            let whose = match from {
                ObservedFrom::Customer => "the customer's message",
                ObservedFrom::OtherApp => "another responder's message",
            };
            entry(item, ts, "observed", "R18", "to the inbox".into(), format!(
                "{whose} on a thread another responder owns (Meta's Conversation Routing): a copy for the inbox, never for the AI agent"
            ))
        }
        ItemKind::Routing { control, .. } => match control {
            Control::Taken => {
                let until = d.state.pause.as_ref().map_or("-".into(), |p| when(p.until));
                entry(item, ts, "routing", "R18", format!("paused until {until}"), format!(
                    "another responder took the thread (Conversation Routing): the AI agent is paused until {until}, 24 hours after the customer's latest message unless it is passed back"
                ))
            }
            Control::Passed => entry(item, ts, "routing", "R18", "released (routing)".into(),
                "the thread was passed back to this app (Conversation Routing): the AI agent answers the customer's next message".into()),
        },
        _ => return None,
    };
    e.message = d.events.iter().find_map(|o| said(&o.event));
    Some(e)
}

/// R4, R5, R6, R8, R15 and coexistence off: an App message.
fn app_message(
    item: &Item,
    content: &Content,
    ts: Millis,
    before: &State,
    d: &Decision,
    rules: &Rules,
    now: Millis,
) -> TrailEntry {
    let held = before.paused(now);
    let text = content.typed_text();
    if d.rule == Rule::R5 {
        let reset = reset_words(rules).unwrap_or("");
        return match held {
            Some(p) if ts < p.since => entry(item, ts, "reset_command", "R5", "pause unchanged".into(), format!(
                "the reset command '{reset}' was sent at {}, before the pause in force began at {} (it arrived late): the pause stays",
                when(ts), when(p.since)
            )),
            Some(_) => entry(item, ts, "reset_command", "R5", "released (reset_command)".into(), format!(
                "released by the reset command '{reset}' from the Business App; the AI agent answers the customer's next message, in a new session"
            )),
            None => entry(item, ts, "reset_command", "R5", "nothing to release".into(), format!(
                "the reset command '{reset}' arrived while nothing was paused: nothing to release (the session ends; the customer's next message starts a new one)"
            )),
        };
    }
    if d.rule == Rule::R15 {
        return entry(item, ts, "app_message", "R15", "recorded, no pause".into(),
            "the number's automated text (a greeting or away message the Business App sends by itself): recorded for the inbox, no pause (R15)".into());
    }
    if !rules.coexistence {
        return entry(item, ts, "app_message", "R4", "recorded, no pause".into(),
            "coexistence is off for this number: the App message is recorded for the inbox and pauses nothing".into());
    }
    if d.rule == Rule::R8 {
        let why = match before.last_reset {
            Some(r) if ts < r => format!(
                "an App message older than the last reset ({}): recorded, no new pause (R8)",
                when(r)
            ),
            _ => format!(
                "an App message older than the timeout ({}): recorded, no pause (R8)",
                crate::core::numbers::written(rules.timeout)
            ),
        };
        return entry(
            item,
            ts,
            "app_message",
            "R8",
            "recorded, no pause".into(),
            why,
        );
    }
    let until = d.state.pause.as_ref().map(|p| p.until);
    let until_words = until.map_or("-".into(), when);
    let (rule, outcome, mut why) = match held {
        Some(p) if until.is_some_and(|u| u > p.until) => (
            "R4",
            format!("pause extended to {until_words}"),
            format!("a person answered from the Business App while the conversation was held: the pause is extended to {until_words}"),
        ),
        Some(p) => (
            "R4",
            format!("paused already until {}", when(p.until)),
            format!("a person answered from the Business App; the conversation was already held until {} (a pause is never shortened)", when(p.until)),
        ),
        None => (
            "R4",
            format!("paused until {until_words}"),
            format!("a person answered from the Business App: the AI agent is paused for this customer until {until_words}"),
        ),
    };
    let mut rule = rule.to_owned();
    match (reset_words(rules), text) {
        (Some(reset), Some(t)) if near_miss(reset, t) => {
            why = format!(
                "the App message '{}' is not the reset command '{reset}' (compared trimmed, ignoring case): recorded, and it paused the AI agent ({outcome})",
                t.trim()
            );
        }
        (None, Some(t)) if t.trim().starts_with('/') => {
            rule = "R6".into();
            why = format!("reset is turned off for this number: '{}' is an ordinary App message, and it paused the AI agent ({outcome})", t.trim());
        }
        _ => {}
    }
    entry(item, ts, "app_message", &rule, outcome, why)
}

/// What happens on the customer's next message, and why (at `now`, for a number whose replies
/// the gate `holds` when it is offboarded or disconnected).
pub fn next_message(state: &State, rules: &Rules, now: Millis, number: Option<&str>) -> String {
    let mut out = match state.paused(now) {
        Some(p) => {
            let back = match reset_words(rules) {
                Some(r) => format!("a person sends the reset command '{r}' from the Business App, an operator releases it, or"),
                None => "an operator releases it (reset is turned off for this number), or".into(),
            };
            format!(
                "it goes to the inbox, not the AI agent: {} paused the conversation at {} until {}. It goes back to the AI agent when {back} the pause ends at {}.",
                by_words(&p.by), when(p.since), when(p.until), when(p.until)
            )
        }
        None => {
            let active = state
                .session_at(now)
                .is_some_and(|s| s.handler == Handler::Bot);
            let handback = state
                .handback
                .as_ref()
                .filter(|h| h.ended.is_some() && !h.messages.is_empty());
            match (active, handback) {
                (true, _) => "it goes to the AI agent, in its active session (R1).".to_owned(),
                (false, Some(h)) => format!(
                    "it goes to the AI agent in a new session (R2), with the handback of the {} message(s) a person handled (R16).",
                    h.messages.len()
                ),
                (false, None) => "it goes to the AI agent in a new session (R2).".to_owned(),
            }
        }
    };
    if !rules.coexistence {
        out.push_str(" Coexistence is off for this number: messages from the Business App do not pause the AI agent.");
    }
    match number {
        Some("offboarded") => out.push_str(" The number is offboarded at Meta for now: the gate holds the AI agent's replies (503) until Meta reconnects it."),
        Some("disconnected") => out.push_str(" The number is disconnected from Meta: the gate refuses the AI agent's replies until it is onboarded again."),
        _ => {}
    }
    out
}

/// The gate's refusal of a reply, explained (`reason`: `conversation_held`, `stale_reply`,
/// `outside_service_window`, `number_offboarded`, `number_disconnected`).
pub fn refusal(reason: &str, state: &State, window_until: Option<&str>, now: Millis) -> String {
    match reason {
        "conversation_held" => match state.paused(now) {
            Some(p) => format!(
                "the gate refused the AI agent's reply: {} took the conversation at {} (until {})",
                by_words(&p.by), when(p.since), when(p.until)
            ),
            None => "the gate refused the AI agent's reply: a person holds the conversation".into(),
        },
        "stale_reply" => "the gate refused the AI agent's reply: it answered a message from before the conversation last changed hands, so it no longer fits".into(),
        "outside_service_window" => format!(
            "the gate refused the AI agent's reply: Meta's 24-hour customer service window closed at {} (the customer's latest message plus the window); only a template can be sent now",
            window_until.map_or("-".into(), when_text)
        ),
        "number_offboarded" => "the gate held the AI agent's reply: Meta has suspended sends for this number for now (offboarded); it answers 503 with Retry-After until Meta reconnects it".into(),
        "number_disconnected" => "the gate refused the AI agent's reply: the number is disconnected from Meta and must be onboarded again".into(),
        other => format!("the gate refused the AI agent's reply: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_near_miss_differs_from_the_reset_command_only_in_a_slash_spaces_or_case() {
        assert!(near_miss("/reset", "reset"));
        assert!(near_miss("/reset", "/ reset"));
        assert!(near_miss("/reset", " RESET "));
        assert!(near_miss("/reset", "//reset"));
        assert!(!near_miss("/reset", "/reset"));
        assert!(
            !near_miss("/reset", " /RESET "),
            "the command itself (trimmed, any case)"
        );
        assert!(!near_miss("/reset", "reset please"));
        assert!(!near_miss("/reset", "resets"));
        assert!(near_miss("/bot", "bot"));
    }

    #[test]
    fn instants_read_as_people_read_them() {
        assert_eq!(when(Millis(1_764_676_860_000)), "2025-12-02 12:01 UTC");
    }
}
