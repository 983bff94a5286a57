//! Downstream events (docs/contract.md, "Events"): a header every event has ([`Event`]), and what its type
//! adds ([`Payload`], one variant per type). The JSON on the wire is `event_id`, `type`, the rest
//! of the header, then the type's own fields, each present (null where empty).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub(crate) mod payload;

pub use payload::{
    AccountUpdated, By, ByKind, ContactSynced, CustomerChanged, Edited, EventMessage, ForAgent,
    Handback, HandbackMessage, Handover, History, HistoryStatus, Icon, MessageReceived,
    MessageStatus, MetaError, NumberStateChanged, NumberUpdated, Observed, Preferences, Previous,
    Refusal, ReleaseReason, Released, ReplySuppressed, Revoked, SentByBot, SentFromApp,
    SessionPaused, Source, CHANGE_AGENT_FIELDS, HANDBACK_TEXT_LIMIT,
};

use crate::core::domain::Customer;

/// The two downstream exchanges (`{ns}.bot`, `{ns}.human_chat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exchange {
    /// The AI agent's.
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

/// One event: the fields every event has, and what its type adds.
#[derive(Debug, Clone, JsonSchema)]
pub struct Event {
    /// Deterministic: the same input always yields the same id.
    pub event_id: String,
    /// RFC 3339, UTC.
    pub occurred_at: String,
    /// The business number's id.
    pub phone_number_id: String,
    /// Who the customer is (null names for events about no customer).
    pub customer: Customer,
    /// The session the event belongs to, or null.
    pub session_id: Option<String>,
    /// R19: the WhatsApp group the event belongs to (present on a group's events only; then
    /// `customer` is the member who wrote, and the conversation is the group's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// What the event's type adds (its own fields, beside these).
    #[schemars(skip)]
    pub payload: Payload,
}

/// Declares [`Payload`]: one line per event type, `Variant(FieldsType) = "type"`. The type's
/// name is written here once; serialising, reading back and routing all use it.
macro_rules! event_types {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// What an event's type adds to the common fields.
        #[derive(Debug, Clone, Serialize)]
        #[serde(untagged)]
        pub enum Payload {
            $($(#[$doc])* $variant($variant),)*
        }

        impl Payload {
            /// The event's `type`: its routing key and AMQP `type`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Payload::$variant(_) => $name,)*
                }
            }

            /// Every event type's name.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// Each type's name and the schema of its own fields.
            fn schemas(generator: &mut schemars::SchemaGenerator) -> Vec<(&'static str, schemars::Schema)> {
                vec![$(($name, generator.subschema_for::<$variant>()),)*]
            }

            /// Reads the fields of the type `name` from an event's JSON.
            fn from_json(name: &str, json: &str) -> serde_json::Result<Payload> {
                match name {
                    $($name => serde_json::from_str(json).map(Payload::$variant),)*
                    other => Err(serde::de::Error::custom(format!("unknown event type {other:?}"))),
                }
            }
        }
    };
}

event_types! {
    /// A customer message: for the AI agent (R1, R2), or for the human inbox while paused (R3).
    MessageReceived = "message.received",
    /// A human replied from the App: the AI agent must stop answering this customer (bot).
    SessionPaused = "session.paused",
    /// A status of a message sent through the API (bot).
    MessageStatus = "message.status",
    /// An `account_update` (bot).
    AccountUpdated = "account.updated",
    /// A human's message from the Business App (human_chat).
    SentFromApp = "message.sent_from_app",
    /// The AI agent was paused for this customer (human_chat).
    Handover = "conversation.handover",
    /// The AI agent may handle this customer again (human_chat).
    Released = "conversation.released",
    /// A message was edited: from the App (R10), or by the customer (R14).
    Edited = "message.edited",
    /// A message was deleted: from the App (R10), or by the customer (R14).
    Revoked = "message.revoked",
    /// One message of the history sync (human_chat).
    History = "message.history",
    /// History sync progress (human_chat).
    HistoryStatus = "history.status",
    /// A contact added, edited or removed in the App (human_chat).
    ContactSynced = "contact.synced",
    /// The customer changed number, business-scoped id or identity (R12a; both exchanges).
    CustomerChanged = "customer.changed",
    /// The reply gate refused a reply of the AI agent (R17; human_chat).
    ReplySuppressed = "reply.suppressed",
    /// A reply the gate let through and Meta accepted (R17; human_chat).
    SentByBot = "message.sent_by_bot",
    /// A copy of a thread another responder owns under Conversation Routing (R18; human_chat).
    Observed = "message.observed",
    /// The customer stopped or resumed a kind of messages (`user_preferences`; bot).
    Preferences = "customer.preferences",
    /// Errors Meta reports for the number rather than for one message (bot).
    MetaError = "meta.error",
    /// A number's runtime settings changed (human_chat).
    NumberUpdated = "number.updated",
    /// A number's lifecycle state changed (both exchanges).
    NumberStateChanged = "number.state_changed",
}

impl Event {
    /// The event's `type`.
    pub fn name(&self) -> &'static str {
        self.payload.name()
    }

    /// The event's JSON, one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events always serialise")
    }

    /// Reads an event's JSON back (a pending event stored by any build).
    pub fn from_json(json: &str) -> serde_json::Result<Event> {
        #[derive(Deserialize)]
        struct Header {
            event_id: String,
            #[serde(rename = "type")]
            kind: String,
            occurred_at: String,
            phone_number_id: String,
            customer: Customer,
            session_id: Option<String>,
            #[serde(default)]
            group_id: Option<String>,
        }
        let h: Header = serde_json::from_str(json)?;
        Ok(Event {
            payload: Payload::from_json(&h.kind, json)?,
            event_id: h.event_id,
            occurred_at: h.occurred_at,
            phone_number_id: h.phone_number_id,
            customer: h.customer,
            session_id: h.session_id,
            group_id: h.group_id,
        })
    }
}

/// The JSON Schema (draft 2020-12) of every event body, generated from these types: one
/// `oneOf` branch per type, each the fields every event has, `type` as a constant, and the type's
/// own fields. `coexist schema` prints it; `docs/events.schema.json` is its output.
pub fn schema() -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let header = generator.subschema_for::<Event>();
    let branches: Vec<serde_json::Value> = Payload::schemas(&mut generator)
        .into_iter()
        .map(|(name, fields)| {
            serde_json::json!({
                "title": name,
                "allOf": [header, fields],
                "properties": {
                    "type": {"const": name, "description": "The event's type: its routing key and AMQP `type`."}
                },
                "required": ["type"],
            })
        })
        .collect();
    let mut defs = generator.take_definitions(true);
    // Every field is present (null where empty), except the AI agent's fields of
    // `message.received`, present together on the bot's copy only.
    for (name, def) in defs.iter_mut() {
        let Some(properties) = def.get("properties").and_then(|p| p.as_object()) else {
            continue;
        };
        let optional: &[&str] = match name.as_str() {
            "MessageReceived" => MessageReceived::AGENT_FIELDS,
            "Edited" | "Revoked" => CHANGE_AGENT_FIELDS,
            "Event" => &["group_id"],
            _ => &[],
        };
        let required: Vec<&String> = properties
            .keys()
            .filter(|k| !optional.contains(&k.as_str()))
            .collect();
        let together: serde_json::Map<String, serde_json::Value> = optional
            .iter()
            .map(|f| {
                let others: Vec<&&str> = optional.iter().filter(|o| *o != f).collect();
                ((*f).to_owned(), serde_json::json!(others))
            })
            .collect();
        def["required"] = serde_json::json!(required);
        if !together.is_empty() {
            def["dependentRequired"] = serde_json::Value::Object(together);
        }
    }
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "coexist event",
        "description": "An event published to {ns}.bot or {ns}.human_chat (routing key = type). Every field of a type is present, null where empty.",
        "oneOf": branches,
        "$defs": defs,
    })
}

/// Two events are equal when their JSON is (raw JSON has no equality of its own).
impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.to_json() == other.to_json()
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            event_id: &'a str,
            #[serde(rename = "type")]
            kind: &'static str,
            occurred_at: &'a str,
            phone_number_id: &'a str,
            customer: &'a Customer,
            session_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            group_id: Option<&'a str>,
            #[serde(flatten)]
            payload: &'a Payload,
        }
        Wire {
            event_id: &self.event_id,
            kind: self.name(),
            occurred_at: &self.occurred_at,
            phone_number_id: &self.phone_number_id,
            customer: &self.customer,
            session_id: self.session_id.as_deref(),
            group_id: self.group_id.as_deref(),
            payload: &self.payload,
        }
        .serialize(s)
    }
}

/// An event with where it goes: its exchange and its conversation (the `conversation` header,
/// `{phone_number_id}:{customer}`). Stored in Redis until published, in the form
/// `{"exchange", "routing_key", "event_id", "conversation", "body"}` (`body` the event's JSON),
/// which every build reads.
///
/// The event's JSON is written once ([`Outbound::json`]) and used for both the store and the
/// broker; an event is not changed once it is an `Outbound`.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub exchange: Exchange,
    pub conversation: String,
    pub event: Event,
    json: std::sync::OnceLock<Box<RawValue>>,
}

/// Whether events begin a pause (they carry a handover): from there on the reply gate refuses
/// the AI agent's replies (R17).
pub fn begins_pause(events: &[Outbound]) -> bool {
    events
        .iter()
        .any(|e| matches!(e.event.payload, Payload::Handover(_)))
}

/// Equal when they go to the same place with the same event (the cache of its JSON aside).
impl PartialEq for Outbound {
    fn eq(&self, other: &Self) -> bool {
        self.exchange == other.exchange
            && self.conversation == other.conversation
            && self.event == other.event
    }
}

/// [`Outbound`] as stored.
#[derive(Serialize, Deserialize)]
struct Stored<B> {
    exchange: Exchange,
    routing_key: String,
    event_id: String,
    conversation: String,
    body: B,
}

impl Serialize for Outbound {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Stored {
            exchange: self.exchange,
            routing_key: self.event.name().to_owned(),
            event_id: self.event.event_id.clone(),
            conversation: self.conversation.clone(),
            body: self.json_raw(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Outbound {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let stored = Stored::<Box<RawValue>>::deserialize(d)?;
        let event = Event::from_json(stored.body.get()).map_err(serde::de::Error::custom)?;
        let outbound = Outbound::new(stored.exchange, stored.conversation, event);
        // As stored: the JSON published is the JSON committed.
        let _ = outbound.json.set(stored.body);
        Ok(outbound)
    }
}

impl Outbound {
    pub fn new(exchange: Exchange, conversation: String, event: Event) -> Self {
        Outbound {
            exchange,
            conversation,
            event,
            json: std::sync::OnceLock::new(),
        }
    }

    /// The event's JSON (the body published), written on first use.
    pub fn json(&self) -> &str {
        self.json_raw().get()
    }

    fn json_raw(&self) -> &RawValue {
        self.json.get_or_init(|| {
            RawValue::from_string(self.event.to_json()).expect("an event's JSON is JSON")
        })
    }

    /// The line `coexist process` prints: `{"exchange", "routing_key", "event"}`.
    pub fn to_line(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            exchange: &'static str,
            routing_key: &'static str,
            event: &'a RawValue,
        }
        serde_json::to_string(&Line {
            exchange: self.exchange.as_str(),
            routing_key: self.event.name(),
            event: self.json_raw(),
        })
        .expect("lines always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::engine::input::{Direction, NameChange};

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn message(source: Source) -> EventMessage {
        EventMessage {
            id: Some("wamid.1".into()),
            kind: "text".into(),
            text: "hola".into(),
            source,
            icon: source.icon(),
            media: None,
            reply_to: None,
            raw: raw(r#"{"id":"wamid.1","type":"text","text":{"body":"hola"}}"#),
        }
    }

    fn one_of_each() -> Vec<Payload> {
        vec![
            Payload::MessageReceived(MessageReceived {
                message: message(Source::Customer),
                agent: Some(ForAgent {
                    session_started: true,
                    handback: Some(Handback {
                        reason: ReleaseReason::ResetCommand,
                        paused_at: "2026-11-26T09:00:00Z".into(),
                        released_at: "2026-11-26T09:30:00Z".into(),
                        messages: vec![HandbackMessage {
                            at: "2026-11-26T09:01:00Z".into(),
                            source: Source::BusinessAppAutomation,
                            message_id: Some("wamid.G".into()),
                            text: "¡Hola! Te respondemos pronto".into(),
                        }],
                    }),
                    reply_token: "rt1.abc".into(),
                    service_window_until: "2026-11-27T10:00:00Z".into(),
                }),
            }),
            Payload::MessageReceived(MessageReceived {
                message: message(Source::Customer),
                agent: None,
            }),
            Payload::SessionPaused(SessionPaused {
                paused_until: "2026-12-03T10:00:00Z".into(),
            }),
            Payload::MessageStatus(MessageStatus {
                status: Some("failed".into()),
                message_id: None,
                errors: raw(r#"[{"code":131047}]"#),
            }),
            Payload::AccountUpdated(AccountUpdated {
                event: Some("PARTNER_REMOVED".into()),
                reason: None,
            }),
            Payload::SentFromApp(SentFromApp {
                message: message(Source::BusinessApp),
            }),
            Payload::Handover(Handover {
                paused_until: "2026-12-03T10:00:00Z".into(),
                trigger_message_id: None,
                by: By::operator(Some("ana".into())),
            }),
            Payload::Released(Released {
                reason: ReleaseReason::Timeout,
                by: By::system(),
            }),
            Payload::Edited(Edited {
                message: message(Source::BusinessApp),
                original_message_id: Some("wamid.0".into()),
                reply_token: None,
            }),
            Payload::Revoked(Revoked {
                original_message_id: None,
                reply_token: Some("rt1.abc".into()),
            }),
            Payload::History(History {
                message: message(Source::History),
                direction: Direction::Outbound,
            }),
            Payload::HistoryStatus(HistoryStatus {
                phase: Some(0),
                chunk_order: None,
                progress: Some(50),
                declined: false,
            }),
            Payload::ContactSynced(ContactSynced {
                action: Some("add".into()),
                contact: None,
            }),
            Payload::CustomerChanged(CustomerChanged {
                change: NameChange::Number,
                previous: Previous {
                    wa_id: Some("5215550000000".into()),
                    user_id: None,
                },
            }),
            Payload::ReplySuppressed(ReplySuppressed {
                reason: Refusal::ConversationHeld,
                message: message(Source::Bot),
            }),
            Payload::SentByBot(SentByBot {
                message: message(Source::Bot),
            }),
            Payload::Observed(Observed {
                message: message(Source::OtherApp),
            }),
            Payload::Preferences(Preferences {
                category: Some("marketing_messages".into()),
                value: Some("stop".into()),
                detail: Some("User requested to stop marketing messages".into()),
            }),
            Payload::MetaError(MetaError {
                errors: raw(r#"[{"code":130429,"title":"Rate limit hit"}]"#),
            }),
            Payload::NumberUpdated(NumberUpdated {
                changed: serde_json::json!({"reset_text": "/bot", "timeout": null})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                by: By::operator(Some("ana".into())),
            }),
            Payload::NumberStateChanged(NumberStateChanged {
                from: "active".into(),
                to: "disconnected".into(),
                reason: Some("PARTNER_REMOVED: PRIMARY_INACTIVITY".into()),
                by: By::system(),
            }),
        ]
    }

    fn event(payload: Payload) -> Event {
        Event {
            event_id: "e1".into(),
            occurred_at: "2026-11-26T10:00:00Z".into(),
            phone_number_id: "410".into(),
            customer: Customer {
                wa_id: Some("5215551230001".into()),
                user_id: None,
                name: None,
            },
            session_id: None,
            group_id: None,
            payload,
        }
    }

    #[test]
    fn every_type_writes_the_header_first_and_reads_back_the_same() {
        let mut names = std::collections::HashSet::new();
        for payload in one_of_each() {
            let e = event(payload);
            names.insert(e.name());
            let json = e.to_json();
            let head = format!(
                r#"{{"event_id":"e1","type":"{}","occurred_at":"2026-11-26T10:00:00Z","phone_number_id":"410","customer":{{"wa_id":"5215551230001","user_id":null,"name":null}},"session_id":null"#,
                e.name()
            );
            assert!(json.starts_with(&head), "{json}");
            assert_eq!(Event::from_json(&json).unwrap(), e, "{json}");
        }
        assert_eq!(names.len(), Payload::NAMES.len(), "one of each type");
    }

    #[test]
    fn fields_are_written_even_when_empty_and_the_agent_fields_only_on_its_copy() {
        let json = event(Payload::Revoked(Revoked {
            original_message_id: None,
            reply_token: None,
        }))
        .to_json();
        assert!(
            json.ends_with(r#""session_id":null,"original_message_id":null}"#),
            "{json}"
        );
        let for_agent = event(one_of_each().remove(0)).to_json();
        assert!(
            for_agent.ends_with(r#","session_started":true,"handback":{"reason":"reset_command","paused_at":"2026-11-26T09:00:00Z","released_at":"2026-11-26T09:30:00Z","messages":[{"at":"2026-11-26T09:01:00Z","source":"business_app_automation","message_id":"wamid.G","text":"¡Hola! Te respondemos pronto"}]},"reply_token":"rt1.abc","service_window_until":"2026-11-27T10:00:00Z"}"#),
            "{for_agent}"
        );
        let mut no_handback = one_of_each().remove(0);
        if let Payload::MessageReceived(m) = &mut no_handback {
            m.agent.as_mut().unwrap().handback = None;
        }
        let later = event(no_handback).to_json();
        assert!(
            later.ends_with(r#","session_started":true,"handback":null,"reply_token":"rt1.abc","service_window_until":"2026-11-27T10:00:00Z"}"#),
            "{later}"
        );
        let for_human = event(one_of_each().remove(1)).to_json();
        assert!(!for_human.contains("session_started"), "{for_human}");
        assert!(!for_human.contains("handback"), "{for_human}");
        assert!(!for_human.contains("reply_token"), "{for_human}");
        let revoked_for_agent = event(Payload::Revoked(Revoked {
            original_message_id: None,
            reply_token: Some("rt1.abc".into()),
        }))
        .to_json();
        assert!(
            revoked_for_agent.ends_with(r#""original_message_id":null,"reply_token":"rt1.abc"}"#),
            "{revoked_for_agent}"
        );
        assert!(for_human.contains(r#""source":"customer","icon":null"#));
        let app = event(one_of_each().remove(5)).to_json();
        assert!(
            app.contains(r#""source":"business_app","icon":"📱""#),
            "{app}"
        );
    }

    #[test]
    fn the_schema_has_a_branch_per_type_and_describes_every_field() {
        let schema = schema();
        let branches = schema["oneOf"].as_array().unwrap();
        let consts: Vec<&str> = branches
            .iter()
            .map(|b| b["properties"]["type"]["const"].as_str().unwrap())
            .collect();
        assert_eq!(consts, Payload::NAMES);
        for (name, def) in schema["$defs"].as_object().unwrap() {
            for (field, property) in def["properties"].as_object().into_iter().flatten() {
                assert!(
                    property["description"].is_string(),
                    "{name}.{field} is described"
                );
            }
        }
        let checked_in = include_str!("../../../../docs/events.schema.json");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(checked_in).unwrap(),
            schema,
            "docs/events.schema.json is stale: run `coexist schema > docs/events.schema.json`"
        );
    }

    #[test]
    fn pending_events_stored_by_the_earlier_build_are_read() {
        // The form the flat-struct build wrote to `{ns}:{c}:seen:{item}` (a release, verbatim).
        let stored = r#"[{"exchange":"human_chat","routing_key":"conversation.released","event_id":"0b1c","conversation":"410:5215551230001","body":{"event_id":"0b1c","type":"conversation.released","occurred_at":"2026-11-26T10:00:00Z","phone_number_id":"410","customer":{"wa_id":"5215551230001","user_id":null,"name":null},"session_id":"s1","reason":"reset_command"}}]"#;
        let read: Vec<Outbound> = serde_json::from_str(stored).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].exchange, Exchange::HumanChat);
        assert!(matches!(
            read[0].event.payload,
            Payload::Released(Released {
                reason: ReleaseReason::ResetCommand,
                ..
            })
        ));
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            stored,
            "written back, and published, as committed"
        );
        assert_eq!(
            read[0].json(),
            &stored[stored.find(r#""body":"#).unwrap() + 7..stored.len() - 2]
        );
        let unknown = stored.replace("\"type\":\"conversation.released\"", "\"type\":\"x.y\"");
        assert!(serde_json::from_str::<Vec<Outbound>>(&unknown).is_err());
    }
}
