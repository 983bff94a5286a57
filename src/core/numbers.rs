//! The business numbers coexist serves (docs/contract.md, "Numbers"): each number's settings in
//! layers (runtime over the file's `[numbers."…"]` over the global keys), its lifecycle state
//! from Meta's `account_update`, and the snapshot every worker and gate decides with
//! ([`Book`], held in a [`Shelf`] and replaced whole when the registry changes: deciding an item
//! never reads the registry).
//!
//! Nothing here does I/O: the registry in Redis is [`crate::adapters::redis::numbers`], the task
//! that keeps a process's shelf current is [`crate::services::numbers`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::domain::{stable_id, Customer, Scope};
use crate::core::engine::event::{By, Event, Exchange, NumberStateChanged, Outbound, Payload};
use crate::core::engine::{RuleBook, Rules};
use crate::core::time::Millis;

/// The settings a number may set for itself, in the order they are shown.
pub const KEYS: &[&str] = &[
    "reset_text",
    "timeout",
    "session_timeout",
    "automated_texts",
    "handback_messages",
    "service_window",
    "coexistence",
];

/// One layer of a number's settings: each key set here, or left to the layer below.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// As written; empty turns reset off (R6).
    pub reset_text: Option<String>,
    pub timeout: Option<Duration>,
    pub session_timeout: Option<Duration>,
    /// As written.
    pub automated_texts: Option<Vec<String>>,
    pub handback_messages: Option<usize>,
    pub service_window: Option<Duration>,
    /// `false`: App echoes are recorded (`message.sent_from_app`) but pause nothing.
    pub coexistence: Option<bool>,
}

/// Where a number's effective value of a key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The registry (`number set`, the admin API).
    Runtime,
    /// `[numbers."<id>"]` in the configuration file.
    File,
    /// The global key (its built-in default, the file's top level or the environment).
    Default,
}

impl Overrides {
    /// Each key set here, else `lower`'s.
    pub fn over(&self, lower: &Overrides) -> Overrides {
        Overrides {
            reset_text: self.reset_text.clone().or_else(|| lower.reset_text.clone()),
            timeout: self.timeout.or(lower.timeout),
            session_timeout: self.session_timeout.or(lower.session_timeout),
            automated_texts: (self.automated_texts.clone())
                .or_else(|| lower.automated_texts.clone()),
            handback_messages: self.handback_messages.or(lower.handback_messages),
            service_window: self.service_window.or(lower.service_window),
            coexistence: self.coexistence.or(lower.coexistence),
        }
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.to_json().is_empty()
    }

    /// The rules these settings make (a key unset takes the built-in default).
    pub fn rules(&self) -> Rules {
        let d = Rules::default();
        let texts = self.automated_texts.as_deref().unwrap_or(&[]);
        Rules::new(
            self.reset_text.as_deref().unwrap_or("/reset"),
            self.timeout.unwrap_or(d.timeout),
            self.session_timeout.unwrap_or(d.session_timeout),
        )
        .with_automated_texts(texts)
        .with_handback_messages(self.handback_messages.unwrap_or(d.handback_messages))
        .with_service_window(self.service_window.unwrap_or(d.service_window))
        .with_coexistence(self.coexistence.unwrap_or(true))
    }

    /// The keys set here, in their written form: durations as `7d`, texts as strings, a list
    /// of texts as a list. This is how settings are stored, shown and published.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let mut out = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                out.insert(k.to_owned(), v);
            }
        };
        put("reset_text", self.reset_text.clone().map(Value::String));
        put("timeout", self.timeout.map(|d| Value::String(written(d))));
        put(
            "session_timeout",
            self.session_timeout.map(|d| Value::String(written(d))),
        );
        put(
            "automated_texts",
            self.automated_texts
                .as_ref()
                .map(|t| Value::Array(t.iter().cloned().map(Value::String).collect())),
        );
        put(
            "handback_messages",
            self.handback_messages.map(|n| Value::from(n as u64)),
        );
        put(
            "service_window",
            self.service_window.map(|d| Value::String(written(d))),
        );
        put("coexistence", self.coexistence.map(Value::Bool));
        out
    }

    /// Clears `key` (a name of [`KEYS`]).
    pub fn unset(&mut self, key: &str) {
        match key {
            "reset_text" => self.reset_text = None,
            "timeout" => self.timeout = None,
            "session_timeout" => self.session_timeout = None,
            "automated_texts" => self.automated_texts = None,
            "handback_messages" => self.handback_messages = None,
            "service_window" => self.service_window = None,
            "coexistence" => self.coexistence = None,
            _ => {}
        }
    }
}

/// A duration as a person writes it: `7d`, `24h`, `15m`, `30s` (else milliseconds); one day
/// is `24h`, as the configuration writes it.
pub fn written(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 86_400_000 {
        return "24h".into();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms > 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Each key's effective value and where it comes from, runtime over file over default.
pub fn effective(
    runtime: &Overrides,
    file: &Overrides,
    default: &Overrides,
) -> Vec<(&'static str, serde_json::Value, Origin)> {
    let (r, f, d) = (runtime.to_json(), file.to_json(), default.to_json());
    KEYS.iter()
        .filter_map(|k| {
            let found = [
                (&r, Origin::Runtime),
                (&f, Origin::File),
                (&d, Origin::Default),
            ]
            .into_iter()
            .find_map(|(layer, origin)| layer.get(*k).map(|v| (v.clone(), origin)))?;
            Some((*k, found.0, found.1))
        })
        .collect()
}

/// A number's lifecycle state (docs/contract.md, "Numbers").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LifeState {
    /// Seen in webhooks, never added: served with the global and file settings.
    #[default]
    Unregistered,
    Onboarding,
    Active,
    /// Meta suspended Cloud API sends (`ACCOUNT_OFFBOARDED`), usually for minutes: the gate holds
    /// replies with `503`.
    Offboarded,
    /// Meta removed the number from the app (`PARTNER_REMOVED`): the gate refuses with `409`.
    Disconnected,
}

impl LifeState {
    pub fn as_str(self) -> &'static str {
        match self {
            LifeState::Unregistered => "unregistered",
            LifeState::Onboarding => "onboarding",
            LifeState::Active => "active",
            LifeState::Offboarded => "offboarded",
            LifeState::Disconnected => "disconnected",
        }
    }

    pub fn parse(s: &str) -> Option<LifeState> {
        [
            LifeState::Unregistered,
            LifeState::Onboarding,
            LifeState::Active,
            LifeState::Offboarded,
            LifeState::Disconnected,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }

    /// The state an `account_update` event moves a number to (`None`: the event changes no state).
    pub fn after(event: &str) -> Option<LifeState> {
        match event {
            "ACCOUNT_OFFBOARDED" => Some(LifeState::Offboarded),
            "ACCOUNT_RECONNECTED" | "PARTNER_ADDED" => Some(LifeState::Active),
            "PARTNER_REMOVED" => Some(LifeState::Disconnected),
            _ => None,
        }
    }
}

/// What an operator should do about a number in `state`, for Meta's `reason` where it matters.
pub fn remedy(state: LifeState, reason: Option<&str>) -> &'static str {
    match (state, reason) {
        (LifeState::Offboarded, _) => "Meta suspended Cloud API sends for this number (usually for minutes, e.g. after the phone app was reinstalled or moved to a new device); replies are held with 503 until ACCOUNT_RECONNECTED arrives. If it lasts more than an hour, open the WhatsApp Business App on the phone.",
        (LifeState::Disconnected, Some("PRIMARY_INACTIVITY")) => "the WhatsApp Business App on the phone was not opened for about 14 days, so Meta disconnected the number: open the App, then onboard the number again (Embedded Signup, then coexist number onboard).",
        (LifeState::Disconnected, Some("PRIMARY_LOGOUT" | "PRIMARY_DELETED")) => "the WhatsApp Business App on the phone was logged out or deleted: install and register the App again, then onboard the number again (Embedded Signup, then coexist number onboard).",
        (LifeState::Disconnected, _) => "Meta removed the number from this app: the business must onboard again (Embedded Signup, then coexist number onboard); nothing can be sent until then.",
        (LifeState::Onboarding, _) => "onboarding has started: finish it with coexist number onboard (it resumes where it stopped).",
        (LifeState::Unregistered, _) => "served with the global and file settings; coexist number add names it and lets its settings be changed at runtime.",
        (LifeState::Active, _) => "nothing to do.",
    }
}

/// A number as the registry holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Record {
    pub phone_number_id: String,
    pub waba_id: Option<String>,
    pub display_phone_number: Option<String>,
    /// A label.
    pub name: Option<String>,
    pub state: LifeState,
    /// Meta's `disconnection_info.reason` (or the event) of the latest state change.
    pub state_reason: Option<String>,
    /// Meta's `disconnection_info.initiated_by`.
    pub initiated_by: Option<String>,
    /// RFC 3339: since when the number is in its state.
    pub state_since: Option<String>,
    /// The runtime settings (the written form of [`Overrides`]).
    pub settings: serde_json::Map<String, serde_json::Value>,
    pub first_seen_at: Option<String>,
    pub last_webhook_at: Option<String>,
    /// The latest App echo.
    pub last_app_message_at: Option<String>,
    /// The latest customer message.
    pub last_customer_at: Option<String>,
    /// The latest pause an App message began.
    pub last_handover_at: Option<String>,
    /// The latest reset command matched.
    pub last_reset_at: Option<String>,
    /// The latest App message that missed the reset command by a slash, spaces or case.
    pub last_near_miss_at: Option<String>,
    /// That message's text.
    pub near_miss_text: Option<String>,
    /// The latest settings changes, newest first.
    pub changes: Vec<Change>,
    /// Its onboarding (`None`: never onboarded through coexist).
    pub onboarding: Option<crate::core::onboarding::Onboarding>,
}

/// One change of a number's settings: when, by whom, and the keys with their new values (`null`:
/// unset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Change {
    pub at: String,
    pub by: By,
    pub changed: serde_json::Map<String, serde_json::Value>,
}

/// What a number did since the last write (instants raised only; 0: none).
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub webhook: Millis,
    /// The latest App message (echo).
    pub app: Millis,
    /// The latest customer message.
    pub customer: Millis,
    /// The latest pause an App message began (a handover).
    pub handover: Millis,
    /// The latest reset command matched.
    pub reset: Millis,
    /// The latest near miss of the reset command, and its text.
    pub near_miss: Option<(Millis, String)>,
}

impl Seen {
    /// Each instant the later of the two.
    pub fn raise(&mut self, other: &Seen) {
        self.webhook = self.webhook.max(other.webhook);
        self.app = self.app.max(other.app);
        self.customer = self.customer.max(other.customer);
        self.handover = self.handover.max(other.handover);
        self.reset = self.reset.max(other.reset);
        if other.near_miss.as_ref().map(|n| n.0) > self.near_miss.as_ref().map(|n| n.0) {
            self.near_miss = other.near_miss.clone();
        }
    }
}

/// How long a number's App may send nothing while webhooks arrive before it is flagged
/// `app_idle`, unless configured otherwise (Meta disconnects after about 14 days).
pub const DEFAULT_APP_IDLE_WARNING: Duration = Duration::from_secs(10 * 86_400);

impl Record {
    /// Meta's reason of the state (the part after `EVENT: `), for the remedy.
    pub fn state_reason_meta(&self) -> Option<&str> {
        let r = self.state_reason.as_deref()?;
        Some(r.split_once(": ").map_or(r, |(_, reason)| reason))
    }

    /// Webhooks still arrive (one within `warning`) but the App has sent nothing for `warning`
    /// (counted from the first webhook when it never sent anything).
    pub fn app_idle(&self, now: Millis, warning: Duration) -> bool {
        let ms = |s: &Option<String>| s.as_deref().and_then(Millis::parse_rfc3339);
        let since = now.0 - warning.as_millis() as i64;
        let webhooks = ms(&self.last_webhook_at).is_some_and(|t| t.0 >= since);
        let app = ms(&self.last_app_message_at).or(ms(&self.first_seen_at));
        webhooks && app.is_some_and(|t| t.0 < since)
    }

    /// Customers write (within [`ECHO_GRACE`]) but no App message has ever arrived, though the
    /// number was first seen more than [`ECHO_GRACE`] ago: the App's messages are probably not
    /// reaching coexist (the app not subscribed to `smb_message_echoes`), or nobody answers from
    /// the phone. No peer detects it; `number check` and an alert say so.
    pub fn echoes_missing(&self, now: Millis) -> bool {
        let ms = |s: &Option<String>| s.as_deref().and_then(Millis::parse_rfc3339);
        let since = now.0 - ECHO_GRACE.as_millis() as i64;
        let writing = ms(&self.last_customer_at).is_some_and(|t| t.0 >= since);
        let old = ms(&self.first_seen_at).is_some_and(|t| t.0 < since);
        writing && old && self.last_app_message_at.is_none()
    }
}

/// How long customers may write to a new number before missing App messages count as missing
/// echoes ([`Record::echoes_missing`]).
pub const ECHO_GRACE: Duration = Duration::from_secs(2 * 86_400);

/// What every decision reads about numbers: the rules of each number and the state of each
/// registered one. Built from the configuration and the registry, replaced whole.
#[derive(Debug, Clone, Default)]
pub struct Book {
    pub rules: RuleBook,
    /// Registered numbers' states (a number absent is served as `unregistered`).
    pub states: HashMap<String, LifeState>,
    /// WABA id -> its registered numbers.
    pub by_waba: HashMap<String, Vec<String>>,
    /// Registered numbers' display numbers, digits only.
    pub displays: HashMap<String, String>,
    /// The registry version this was built from (0: none).
    pub version: u64,
}

impl Book {
    /// The state of `phone_number_id`.
    pub fn state(&self, phone_number_id: &str) -> LifeState {
        self.states
            .get(phone_number_id)
            .copied()
            .unwrap_or_default()
    }
}

/// The layers every process composes: the global settings and the file's per-number ones.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    pub global: Overrides,
    pub file: HashMap<String, Overrides>,
}

impl Layers {
    /// The book for the registry's records, each with its runtime settings read (at `version`).
    pub fn book(&self, records: &[(Record, Overrides)], version: u64) -> Book {
        let mut numbers = HashMap::new();
        for (id, file) in &self.file {
            numbers.insert(id.clone(), file.over(&self.global).rules());
        }
        let mut states = HashMap::new();
        let mut by_waba: HashMap<String, Vec<String>> = HashMap::new();
        let mut displays = HashMap::new();
        for (r, runtime) in records {
            if !runtime.is_empty() {
                let file = self
                    .file
                    .get(&r.phone_number_id)
                    .cloned()
                    .unwrap_or_default();
                let rules = runtime.over(&file).over(&self.global).rules();
                numbers.insert(r.phone_number_id.clone(), rules);
            }
            if r.state != LifeState::Unregistered {
                states.insert(r.phone_number_id.clone(), r.state);
                if let Some(w) = &r.waba_id {
                    by_waba
                        .entry(w.clone())
                        .or_default()
                        .push(r.phone_number_id.clone());
                }
                if let Some(d) = &r.display_phone_number {
                    let digits: String = d.chars().filter(char::is_ascii_digit).collect();
                    displays.insert(r.phone_number_id.clone(), digits);
                }
            }
        }
        Book {
            rules: RuleBook {
                default: self.global.rules(),
                numbers,
            },
            states,
            by_waba,
            displays,
            version,
        }
    }

    /// The effective settings of a number with `runtime` settings, checked as configuration is
    /// (a reset text that is one of the automated texts is refused).
    pub fn check(&self, id: &str, runtime: &Overrides) -> Result<Rules, String> {
        let file = self.file.get(id).cloned().unwrap_or_default();
        let rules = runtime.over(&file).over(&self.global).rules();
        match rules.automated_reset() {
            Some(text) => Err(format!(
                "automated_texts: {text:?} is the reset command (reset_text): as an automated text it would never reset"
            )),
            None => Ok(rules),
        }
    }
}

/// The book a process decides with now: cheap to read (a lock held for an `Arc` clone), replaced
/// whole by the task that follows the registry.
#[derive(Debug, Clone, Default)]
pub struct Shelf(Arc<RwLock<Arc<Book>>>);

impl Shelf {
    pub fn new(book: Book) -> Self {
        Shelf(Arc::new(RwLock::new(Arc::new(book))))
    }

    /// The book now.
    pub fn current(&self) -> Arc<Book> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts a new book in place: every decision from now on uses it.
    pub fn replace(&self, book: Book) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(book);
    }
}

impl From<RuleBook> for Shelf {
    fn from(rules: RuleBook) -> Self {
        Shelf::new(Book {
            rules,
            ..Book::default()
        })
    }
}

impl From<Arc<RuleBook>> for Shelf {
    fn from(rules: Arc<RuleBook>) -> Self {
        Shelf::from((*rules).clone())
    }
}

/// `number.state_changed` on both exchanges (one event id, from the number and what changed it).
pub fn state_changed(
    pnid: &str,
    from: LifeState,
    to: LifeState,
    reason: Option<String>,
    by: By,
    cause: &str,
    at: Millis,
) -> Vec<Outbound> {
    let event = Event {
        event_id: stable_id(&[pnid, "number.state_changed", cause, to.as_str()]),
        occurred_at: at.rfc3339(),
        phone_number_id: pnid.to_owned(),
        customer: Customer::default(),
        session_id: None,
        group_id: None,
        payload: Payload::NumberStateChanged(NumberStateChanged {
            from: from.as_str().to_owned(),
            to: to.as_str().to_owned(),
            reason,
            by,
        }),
    };
    [Exchange::Bot, Exchange::HumanChat]
        .into_iter()
        .map(|x| Outbound::new(x, Scope::number(pnid).to_string(), event.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 86_400)
    }

    #[test]
    fn runtime_goes_over_file_over_default_and_says_where_from() {
        let global = Overrides {
            reset_text: Some("/reset".into()),
            timeout: Some(days(7)),
            coexistence: Some(true),
            ..Default::default()
        };
        let file = Overrides {
            timeout: Some(days(2)),
            reset_text: Some("/bot".into()),
            ..Default::default()
        };
        let runtime = Overrides {
            reset_text: Some("/ai".into()),
            ..Default::default()
        };
        let shown = effective(&runtime, &file, &global);
        let get = |k: &str| shown.iter().find(|(key, _, _)| *key == k).cloned();
        assert_eq!(
            get("reset_text"),
            Some(("reset_text", "/ai".into(), Origin::Runtime))
        );
        assert_eq!(get("timeout"), Some(("timeout", "2d".into(), Origin::File)));
        assert_eq!(
            get("coexistence"),
            Some(("coexistence", true.into(), Origin::Default))
        );
        let rules = runtime.over(&file).over(&global).rules();
        assert_eq!(rules.reset_text.as_deref(), Some("/ai"));
        assert_eq!(rules.timeout, days(2));
    }

    #[test]
    fn a_book_holds_runtime_rules_and_states_of_registered_numbers_only() {
        let layers = Layers {
            global: Overrides {
                reset_text: Some("/reset".into()),
                ..Default::default()
            },
            file: HashMap::new(),
        };
        let records = vec![
            Record {
                phone_number_id: "111".into(),
                waba_id: Some("900".into()),
                state: LifeState::Offboarded,
                ..Default::default()
            },
            Record {
                phone_number_id: "222".into(),
                ..Default::default()
            },
        ];
        let runtime = Overrides {
            reset_text: Some("/human-off".into()),
            ..Default::default()
        };
        let records: Vec<_> = records
            .into_iter()
            .zip([runtime, Overrides::default()])
            .collect();
        let book = layers.book(&records, 7);
        assert_eq!(
            book.rules.for_number("111").reset_text.as_deref(),
            Some("/human-off")
        );
        assert_eq!(
            book.rules.for_number("222").reset_text.as_deref(),
            Some("/reset")
        );
        assert_eq!(book.state("111"), LifeState::Offboarded);
        assert_eq!(book.state("222"), LifeState::Unregistered);
        assert_eq!(book.by_waba.get("900"), Some(&vec!["111".to_owned()]));
        assert_eq!(book.version, 7);
    }

    #[test]
    fn app_idle_needs_webhooks_now_and_no_app_message_for_the_warning() {
        let now = Millis(100 * 86_400_000);
        let at = |d: i64| Some(Millis(now.0 - d * 86_400_000).rfc3339());
        let mut r = Record {
            first_seen_at: at(30),
            last_webhook_at: at(0),
            last_app_message_at: at(11),
            ..Default::default()
        };
        assert!(r.app_idle(now, days(10)));
        r.last_app_message_at = at(2);
        assert!(!r.app_idle(now, days(10)));
        r.last_app_message_at = None;
        assert!(r.app_idle(now, days(10)), "never an App message in 30 days");
        r.last_webhook_at = at(12);
        assert!(
            !r.app_idle(now, days(10)),
            "no webhooks either: not idle, silent"
        );
    }

    #[test]
    fn durations_are_written_as_people_write_them() {
        assert_eq!(written(days(7)), "7d");
        assert_eq!(written(days(1)), "24h");
        assert_eq!(written(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(written(Duration::from_millis(1500)), "1500ms");
    }
}
