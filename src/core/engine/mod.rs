//! The coexistence rules (docs/contract.md, "Rules") as a pure function: state + input + clock
//! in, decision (new state + events) out. No I/O here, and nothing of the adapters: the input
//! vocabulary ([`input`]), the events ([`event`]) and the state ([`state`]) are the rules' own.
//! The worker, `coexist process`, the operator commands and the tests all run this same code
//! through the apply loop.

pub mod event;
pub mod input;
pub mod reply;
pub mod state;
pub mod why;

use std::time::Duration;

use crate::core::domain::{stable_id, Customer, CustomerKey, Scope};
use crate::core::time::Millis;
use event::{
    AccountUpdated, By, ByKind, ContactSynced, CustomerChanged, Edited, Event, EventMessage,
    Exchange, ForAgent, Handback, HandbackMessage, Handover, History, HistoryStatus,
    MessageReceived, MessageStatus, MetaError, Observed, Outbound, Payload, Preferences, Previous,
    ReleaseReason, Released, Revoked, SentFromApp, SessionPaused, Source, HANDBACK_TEXT_LIMIT,
};
use input::{Change, Content, Control, Echo, Item, ItemKind, ObservedFrom};
use state::{Ended, Handler, Pause, Session, State, Stretch};

/// The settings the rules read, for one business number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The reset command, trimmed and lower-cased; `None` turns reset off (R6).
    pub reset_text: Option<String>,
    /// How long a human's reply pauses the AI agent (the coexistence timeout).
    pub timeout: Duration,
    /// A session ends after this long without activity.
    pub session_timeout: Duration,
    /// Texts the Business App sends by itself (R15), as [`automation_form`] writes them.
    pub automated_texts: Vec<String>,
    /// How many messages of a human-handled stretch the AI agent gets back (R16); 0: none.
    pub handback_messages: usize,
    /// Meta's customer service window: how long after a customer's latest message a free-form
    /// reply is possible.
    pub service_window: Duration,
    /// Whether an App echo pauses the AI agent (R4); `false`: echoes are recorded and pause
    /// nothing (the number's `coexistence` setting).
    pub coexistence: bool,
}

/// The settings of every business number: the defaults and per-number overrides.
#[derive(Debug, Clone, Default)]
pub struct RuleBook {
    pub default: Rules,
    pub numbers: std::collections::HashMap<String, Rules>,
}

impl From<Rules> for RuleBook {
    /// The same rules for every number.
    fn from(default: Rules) -> Self {
        RuleBook {
            default,
            numbers: Default::default(),
        }
    }
}

impl RuleBook {
    pub fn for_number(&self, phone_number_id: &str) -> &Rules {
        self.numbers.get(phone_number_id).unwrap_or(&self.default)
    }
}

/// How long after the customer's latest message Meta's Conversation Routing lets a thread go
/// idle (R18): a routing pause lasts until then.
pub const ROUTING_IDLE: Duration = Duration::from_secs(86_400);

/// How many handback messages are kept unless configured otherwise.
pub const DEFAULT_HANDBACK_MESSAGES: usize = 20;

/// Meta's customer service window unless configured otherwise.
pub const DEFAULT_SERVICE_WINDOW: Duration = Duration::from_secs(86_400);

impl Default for Rules {
    fn default() -> Self {
        Rules::new(
            "/reset",
            Duration::from_secs(7 * 86_400),
            Duration::from_secs(86_400),
        )
    }
}

impl Rules {
    /// Rules with no automated texts and the default handback.
    pub fn new(reset_text: &str, timeout: Duration, session_timeout: Duration) -> Self {
        let reset = normalise(reset_text);
        Rules {
            reset_text: (!reset.is_empty()).then_some(reset),
            timeout,
            session_timeout,
            automated_texts: Vec::new(),
            handback_messages: DEFAULT_HANDBACK_MESSAGES,
            service_window: DEFAULT_SERVICE_WINDOW,
            coexistence: true,
        }
    }

    /// The same rules with these automated texts (R15).
    pub fn with_automated_texts<S: AsRef<str>>(mut self, texts: &[S]) -> Self {
        self.automated_texts = texts.iter().map(|t| automation_form(t.as_ref())).collect();
        self
    }

    /// The same rules keeping this many handback messages (R16; 0 turns handback off).
    pub fn with_handback_messages(mut self, n: usize) -> Self {
        self.handback_messages = n;
        self
    }

    /// The same rules with this customer service window.
    pub fn with_service_window(mut self, window: Duration) -> Self {
        self.service_window = window;
        self
    }

    /// The same rules with coexistence on (App echoes pause the AI agent) or off.
    pub fn with_coexistence(mut self, on: bool) -> Self {
        self.coexistence = on;
        self
    }

    /// Whether an echo's typed text is the reset command (trimmed, case-insensitive).
    pub fn is_reset(&self, content: &Content) -> bool {
        match (&self.reset_text, content.typed_text()) {
            (Some(reset), Some(text)) => normalise(text) == *reset,
            _ => false,
        }
    }

    /// Whether an echo is one of the App's own automated messages (R15).
    pub fn is_automated(&self, content: &Content) -> bool {
        content
            .typed_text()
            .is_some_and(|t| self.automated_texts.contains(&automation_form(t)))
    }

    /// An automated text that would hide the reset command (a configuration error).
    pub fn automated_reset(&self) -> Option<&str> {
        let reset = automation_form(self.reset_text.as_deref()?);
        self.automated_texts
            .iter()
            .find(|t| **t == reset)
            .map(String::as_str)
    }
}

fn normalise(s: &str) -> String {
    s.trim().to_lowercase()
}

/// How automated texts are compared (R15): trimmed, lower-cased, runs of whitespace as one space.
pub fn automation_form(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// An operator's command on one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorAction {
    /// R4 without a message.
    Pause,
    /// R5 with `reason: operator`.
    Release,
    /// The pause in force lasts its duration longer (from now when none is in force: a pause).
    Extend,
}

/// What the rules decide about.
#[derive(Debug, Clone)]
pub enum Input<'a> {
    /// Something Meta sent.
    Item(&'a Item),
    /// An operator's command (`id`: its own, unique), decided at `at`: a pause for `duration`
    /// (default: the timeout), a release, or an extension by `duration`; `by` names the operator.
    Operator {
        scope: Scope,
        id: String,
        action: OperatorAction,
        at: Millis,
        duration: Option<Duration>,
        by: Option<String>,
    },
    /// A pause deadline came due: release it if it is still the pause it names.
    Timeout(Deadline),
}

/// A pause's deadline in the schedule: the conversation and the item that began the pause (its
/// `trigger`), which names the pause. How it is stored is the store's business.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Deadline {
    pub scope: Scope,
    pub trigger: String,
}

impl Input<'_> {
    /// Where the input is addressed: a business number and one of the customer's names (the
    /// store resolves the name to its conversation).
    pub fn scope(&self) -> &Scope {
        match self {
            Input::Item(i) => &i.scope,
            Input::Operator { scope, .. } => scope,
            Input::Timeout(deadline) => &deadline.scope,
        }
    }

    /// Every name of the customer the input carries (phone first): an item naming several links
    /// them into one conversation; a `system` message links the old names and the new.
    pub fn names(&self) -> Vec<CustomerKey> {
        // A group's conversation is the group's alone: its members' names are not linked to it.
        if let Some(group @ CustomerKey::Group(_)) = &self.scope().customer {
            return vec![group.clone()];
        }
        let mut names = match self {
            Input::Item(item) => match &item.kind {
                ItemKind::System {
                    customer, previous, ..
                } => [previous.names(), customer.names()].concat(),
                kind => kind.customer().map(Customer::names).unwrap_or_default(),
            },
            _ => Vec::new(),
        };
        // The name the input is addressed to comes first: it is where new state goes.
        if let Some(addressed) = &self.scope().customer {
            names.retain(|n| n != addressed);
            names.insert(0, addressed.clone());
        }
        let mut seen = Vec::with_capacity(names.len());
        names.retain(|n| {
            let new = !seen.contains(n);
            seen.push(n.clone());
            new
        });
        names
    }

    /// The input's identity within its business number: the dedup key, and the seed of its
    /// event ids.
    pub fn key(&self) -> String {
        match self {
            Input::Item(i) => i.key.clone(),
            Input::Operator { action, id, .. } => format!("op:{action:?}:{id}").to_lowercase(),
            Input::Timeout(deadline) => release_key(&deadline.trigger),
        }
    }
}

fn release_key(trigger: &str) -> String {
    format!("release:{trigger}")
}

/// The `reply_token` of a conversation (`scope`: its number and id) at a hand: opaque to the AI
/// agent, the same for the same conversation and hand. Every change of hands (a pause beginning,
/// a pause ending) gives the conversation a new one, so a reply carrying an earlier token is
/// stale (R17).
pub fn reply_token(scope: &Scope, hand: u64) -> String {
    let id = stable_id(&[&scope.to_string(), "hand", &hand.to_string()]);
    format!("rt1.{}", id.replace('-', ""))
}

/// Which rule decided an input (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    R1,
    R2,
    R3,
    R4,
    R5,
    R7,
    R8,
    R10,
    R11,
    R12,
    R12a,
    R14,
    R15,
    R18,
    OperatorPause,
    OperatorRelease,
    /// A timeout check that found nothing to release (extended, reset or already released).
    Noop,
    /// Something Meta sent that has no event (value-level errors, unsubscribed fields).
    Ignored,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::R1 => "R1",
            Rule::R2 => "R2",
            Rule::R3 => "R3",
            Rule::R4 => "R4",
            Rule::R5 => "R5",
            Rule::R7 => "R7",
            Rule::R8 => "R8",
            Rule::R10 => "R10",
            Rule::R11 => "R11",
            Rule::R12 => "R12",
            Rule::R12a => "R12a",
            Rule::R14 => "R14",
            Rule::R15 => "R15",
            Rule::R18 => "R18",
            Rule::OperatorPause => "operator_pause",
            Rule::OperatorRelease => "operator_release",
            Rule::Noop => "noop",
            Rule::Ignored => "ignored",
        }
    }
}

/// A text as a handback keeps it: at most [`HANDBACK_TEXT_LIMIT`] characters, then `…`.
fn handback_text(text: &str) -> String {
    match text.char_indices().nth(HANDBACK_TEXT_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// What the rules decided.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The conversation's state afterwards.
    pub state: State,
    /// The events, in the order they are to be published.
    pub events: Vec<Outbound>,
    pub rule: Rule,
    /// Whether the decision depended on the state (if not, it can be stored without a version check).
    pub reads_state: bool,
    /// A pause deadline to (re)schedule, and its instant.
    pub schedule: Option<(Deadline, Millis)>,
    /// A pause deadline that no longer applies.
    pub unschedule: Option<Deadline>,
}

/// Applies the rules to the state of `conversation` (the input's scope, or the conversation
/// its name is linked to). `now` is the clock: the worker's wall clock, or in `coexist process`
/// the items' own timestamps.
pub fn decide(
    state: &State,
    input: &Input,
    conversation: &Scope,
    now: Millis,
    rules: &Rules,
) -> Decision {
    let scope = conversation;
    let mut d = Decider {
        scope,
        scope_str: scope.to_string(),
        key: input.key(),
        now,
        rules,
        out: Decision {
            state: state.clone(),
            events: Vec::new(),
            rule: Rule::Noop,
            reads_state: true,
            schedule: None,
            unschedule: None,
        },
    };
    match input {
        Input::Item(item) => d.item(item),
        Input::Operator {
            action,
            at,
            duration,
            by,
            ..
        } => {
            d.expire();
            let customer = d.scope_customer();
            let by = By::operator(by.clone());
            match action {
                OperatorAction::Pause => d.pause(
                    *at,
                    at.plus(duration.unwrap_or(rules.timeout)),
                    &customer,
                    None,
                    Rule::OperatorPause,
                    by,
                ),
                OperatorAction::Release => d.reset(
                    *at,
                    &customer,
                    ReleaseReason::Operator,
                    Rule::OperatorRelease,
                    by,
                ),
                OperatorAction::Extend => {
                    // From the deadline in force (an extension, no change of hands), or from now.
                    let from = state.paused(*at).map_or(*at, |p| p.until);
                    d.pause(
                        *at,
                        from.plus(duration.unwrap_or(rules.timeout)),
                        &customer,
                        None,
                        Rule::OperatorPause,
                        by,
                    )
                }
            }
        }
        Input::Timeout(deadline) => {
            let due = state
                .pause
                .as_ref()
                .is_some_and(|p| p.trigger == deadline.trigger && p.until <= now);
            if due {
                d.expire();
                d.out.rule = Rule::R7;
                // The claim that brought this input keeps the deadline until the release is
                // published and acknowledged: a claimer that dies first leaves it to come due again.
                d.out.unschedule = None;
            }
        }
    }
    d.out
}

struct Decider<'a> {
    scope: &'a Scope,
    scope_str: String,
    key: String,
    now: Millis,
    rules: &'a Rules,
    out: Decision,
}

impl Decider<'_> {
    fn item(&mut self, item: &Item) {
        let ts = item.timestamp.unwrap_or(self.now);
        match &item.kind {
            ItemKind::Customer { customer, message } => {
                self.expire();
                self.customer_message(item, customer, message, ts);
            }
            ItemKind::Echo {
                customer,
                echo: Echo::Send(content),
            } => {
                self.expire();
                if self.rules.is_reset(content) {
                    let by = By::business_app();
                    self.reset(ts, customer, ReleaseReason::ResetCommand, Rule::R5, by);
                } else if self.rules.is_automated(content) || !self.rules.coexistence {
                    self.recorded(item, customer, content, ts);
                } else {
                    self.echo(item, customer, content, ts);
                }
            }
            ItemKind::Echo {
                customer,
                echo: Echo::Change(change),
            } => {
                // R10: the App's edits and deletions are the human inbox's, whoever handles.
                self.change(
                    item,
                    customer,
                    change,
                    Source::BusinessApp,
                    Exchange::HumanChat,
                    ts,
                );
                self.out.rule = Rule::R10;
            }
            ItemKind::System {
                customer,
                previous,
                change,
            } => {
                // R12a: both the AI agent and the inbox learn who the customer is now.
                let payload = Payload::CustomerChanged(CustomerChanged {
                    change: *change,
                    previous: Previous {
                        wa_id: previous.wa_id.clone(),
                        user_id: previous.user_id.clone(),
                    },
                });
                let session = self.current_session();
                self.emit(
                    Exchange::HumanChat,
                    customer,
                    ts,
                    session.clone(),
                    payload.clone(),
                );
                self.emit(Exchange::Bot, customer, ts, session, payload);
                self.out.rule = Rule::R12a;
            }
            ItemKind::CustomerChange { customer, change } => {
                // R14: to whoever handles the conversation now; no session, no pause changes.
                let exchange = match self.out.state.paused(self.now) {
                    Some(_) => Exchange::HumanChat,
                    None => Exchange::Bot,
                };
                self.change(item, customer, change, Source::Customer, exchange, ts);
                self.out.rule = Rule::R14;
            }
            ItemKind::Status {
                customer,
                message_id,
                status,
                errors,
            } => {
                let payload = Payload::MessageStatus(MessageStatus {
                    status: status.clone(),
                    message_id: message_id.clone(),
                    errors: errors.clone(),
                });
                self.stateless(Exchange::Bot, customer, ts, payload, Rule::R12);
            }
            ItemKind::AccountUpdate { event, reason, .. } => {
                let payload = Payload::AccountUpdated(AccountUpdated {
                    event: event.clone(),
                    reason: reason.clone(),
                });
                self.stateless(Exchange::Bot, &Customer::default(), ts, payload, Rule::R12);
            }
            ItemKind::History {
                customer,
                message,
                direction,
            } => {
                let payload = Payload::History(History {
                    message: self.message(item, message, Source::History),
                    direction: *direction,
                });
                self.stateless(Exchange::HumanChat, customer, ts, payload, Rule::R11);
            }
            ItemKind::HistoryStatus {
                phase,
                chunk_order,
                progress,
                declined,
            } => {
                let payload = Payload::HistoryStatus(HistoryStatus {
                    phase: *phase,
                    chunk_order: *chunk_order,
                    progress: *progress,
                    declined: *declined,
                });
                let nobody = Customer::default();
                self.stateless(Exchange::HumanChat, &nobody, ts, payload, Rule::R11);
            }
            ItemKind::ContactSync {
                customer,
                action,
                contact,
            } => {
                let payload = Payload::ContactSynced(ContactSynced {
                    action: action.clone(),
                    contact: contact.clone(),
                });
                self.stateless(Exchange::HumanChat, customer, ts, payload, Rule::R11);
            }
            ItemKind::Errors { errors } => {
                let payload = Payload::MetaError(MetaError {
                    errors: errors.clone(),
                });
                let nobody = Customer::default();
                self.stateless(Exchange::Bot, &nobody, ts, payload, Rule::R12);
            }
            ItemKind::Preferences {
                customer,
                category,
                value,
                detail,
            } => {
                let payload = Payload::Preferences(Preferences {
                    category: category.clone(),
                    value: value.clone(),
                    detail: detail.clone(),
                });
                self.stateless(Exchange::Bot, customer, ts, payload, Rule::R12);
            }
            ItemKind::Observed {
                customer,
                message,
                from,
            } => {
                self.expire();
                self.observed(item, customer, message, *from, ts);
            }
            ItemKind::Routing {
                customer, control, ..
            } => {
                self.expire();
                match control {
                    Control::Taken => {
                        // Meta's thread goes idle 24 h after the customer's latest message (a
                        // thread idle already counts from the take itself).
                        let idle = self
                            .out
                            .state
                            .last_customer_at
                            .map(|l| l.plus(ROUTING_IDLE));
                        let until = idle.filter(|i| *i > ts).unwrap_or(ts.plus(ROUTING_IDLE));
                        self.pause(ts, until, customer, None, Rule::R18, By::routing());
                    }
                    Control::Passed => {
                        let by = By::routing();
                        self.reset(ts, customer, ReleaseReason::Routing, Rule::R18, by);
                    }
                }
            }
            ItemKind::Unhandled { .. } => {
                self.out.reads_state = false;
                self.out.rule = Rule::Ignored;
            }
        }
    }

    /// A customer's message at `ts`: the service window runs from the latest, and a routing
    /// pause lasts until the thread goes idle 24 h after it (R18).
    fn customer_wrote(&mut self, ts: Millis) {
        let latest = &mut self.out.state.last_customer_at;
        *latest = Some(latest.map_or(ts, |l| l.max(ts)));
        let now = self.now;
        let idle = ts.plus(ROUTING_IDLE);
        let extended = self
            .out
            .state
            .pause
            .as_mut()
            .filter(|p| p.until > now && p.by.kind == ByKind::Routing && idle > p.until);
        if let Some(p) = extended {
            p.until = idle;
            let trigger = p.trigger.clone();
            self.out.schedule = Some((self.deadline(&trigger), idle));
        }
    }

    /// R18: a copy of a thread another responder owns: to the human inbox only, never a session
    /// or a pause change; a customer's message keeps the service window open and the thread
    /// (and a routing pause) from going idle.
    fn observed(
        &mut self,
        item: &Item,
        customer: &Customer,
        content: &Content,
        from: ObservedFrom,
        ts: Millis,
    ) {
        let source = match from {
            ObservedFrom::Customer => Source::Customer,
            ObservedFrom::OtherApp => Source::OtherApp,
        };
        if from == ObservedFrom::Customer {
            self.customer_wrote(ts);
        }
        let message = self.message(item, content, source);
        let session = self.current_session();
        let payload = Payload::Observed(Observed { message });
        self.emit(Exchange::HumanChat, customer, ts, session, payload);
        self.out.rule = Rule::R18;
    }

    /// `message.edited` / `message.revoked` for an edit or deletion (R10, R14).
    fn change(
        &mut self,
        item: &Item,
        customer: &Customer,
        change: &Change,
        source: Source,
        exchange: Exchange,
        ts: Millis,
    ) {
        let reply_token = (exchange == Exchange::Bot).then(|| self.reply_token());
        let payload = match change {
            Change::Edit {
                original_message_id,
                message,
            } => Payload::Edited(Edited {
                message: self.message(item, message, source),
                original_message_id: original_message_id.clone(),
                reply_token,
            }),
            Change::Revoke {
                original_message_id,
            } => Payload::Revoked(Revoked {
                original_message_id: original_message_id.clone(),
                reply_token,
            }),
        };
        self.amend_handback(change, &payload);
        let session = self.current_session();
        self.emit(exchange, customer, ts, session, payload);
    }

    /// R16: an edit or deletion of a message kept for the handback changes the kept message too:
    /// the AI agent gets the stretch as it reads now.
    fn amend_handback(&mut self, change: &Change, payload: &Payload) {
        let Some(stretch) = self.out.state.handback.as_mut() else {
            return;
        };
        let same = |id: &Option<String>, m: &HandbackMessage| id.is_some() && m.message_id == *id;
        match (change, payload) {
            (
                Change::Edit {
                    original_message_id,
                    ..
                },
                Payload::Edited(edited),
            ) => {
                for m in stretch
                    .messages
                    .iter_mut()
                    .filter(|m| same(original_message_id, m))
                {
                    m.text = handback_text(&edited.message.text);
                }
            }
            (
                Change::Revoke {
                    original_message_id,
                },
                _,
            ) => {
                stretch.messages.retain(|m| !same(original_message_id, m));
            }
            _ => {}
        }
    }

    /// An App message recorded for the inbox that changes nothing else: the App's own greeting
    /// or away message (R15), or any App message while the number's coexistence is off (R4).
    fn recorded(&mut self, item: &Item, customer: &Customer, content: &Content, ts: Millis) {
        let (source, rule) = match self.rules.is_automated(content) {
            true => (Source::BusinessAppAutomation, Rule::R15),
            false => (Source::BusinessApp, Rule::R4),
        };
        let message = self.message(item, content, source);
        self.keep(&message, ts);
        let session = self.current_session();
        let payload = Payload::SentFromApp(SentFromApp { message });
        self.emit(Exchange::HumanChat, customer, ts, session, payload);
        self.out.rule = rule;
    }

    /// R16: while paused, keeps a message of the stretch for the AI agent (the last
    /// `handback_messages` of them, each text at most [`HANDBACK_TEXT_LIMIT`] characters).
    fn keep(&mut self, message: &EventMessage, at: Millis) {
        let limit = self.rules.handback_messages;
        if limit == 0 || self.out.state.paused(self.now).is_none() {
            return;
        }
        let stretch = self.out.state.handback.get_or_insert_with(Stretch::default);
        stretch.messages.push(HandbackMessage {
            at: at.rfc3339(),
            source: message.source,
            message_id: message.id.clone(),
            text: handback_text(&message.text),
        });
        let over = stretch.messages.len().saturating_sub(limit);
        stretch.messages.drain(..over);
    }

    /// R16: the handback of a stretch that ended, for the AI agent's first message after it.
    fn take_handback(&mut self) -> Option<Handback> {
        let ended = self.out.state.handback.as_ref()?.ended?;
        let stretch = self.out.state.handback.take()?;
        Some(Handback {
            reason: ended.reason,
            paused_at: ended.paused_at.rfc3339(),
            released_at: ended.released_at.rfc3339(),
            messages: stretch.messages,
        })
    }

    /// An event that depends on no conversation state (R11, R12): no session, no version check.
    fn stateless(
        &mut self,
        exchange: Exchange,
        customer: &Customer,
        at: Millis,
        payload: Payload,
        rule: Rule,
    ) {
        self.out.reads_state = false;
        self.emit(exchange, customer, at, None, payload);
        self.out.rule = rule;
    }

    /// R1, R2, R3.
    fn customer_message(
        &mut self,
        item: &Item,
        customer: &Customer,
        content: &Content,
        ts: Millis,
    ) {
        let message = self.message(item, content, Source::Customer);
        self.customer_wrote(ts);
        if self.out.state.paused(self.now).is_some() {
            self.keep(&message, ts);
            let session = self.touch_session(Handler::Human);
            let payload = Payload::MessageReceived(MessageReceived {
                message,
                agent: None,
            });
            self.emit(Exchange::HumanChat, customer, ts, Some(session), payload);
            self.out.rule = Rule::R3;
            return;
        }
        let bot_session = self
            .out
            .state
            .session_at(self.now)
            .is_some_and(|s| s.handler == Handler::Bot);
        let session = if bot_session {
            self.touch_session(Handler::Bot)
        } else {
            self.open_session(Handler::Bot)
        };
        let handback = match bot_session {
            true => None,
            false => self.take_handback(),
        };
        let payload = Payload::MessageReceived(MessageReceived {
            message,
            agent: Some(ForAgent {
                session_started: !bot_session,
                handback,
                reply_token: self.reply_token(),
                service_window_until: ts.plus(self.rules.service_window).rfc3339(),
            }),
        });
        self.emit(Exchange::Bot, customer, ts, Some(session), payload);
        self.out.rule = if bot_session { Rule::R1 } else { Rule::R2 };
    }

    /// R4 and R8: an echo that is not the reset command.
    fn echo(&mut self, item: &Item, customer: &Customer, content: &Content, ts: Millis) {
        let until = ts.plus(self.rules.timeout);
        let before_reset = self.out.state.last_reset.is_some_and(|r| ts < r);
        let rule = if before_reset || until <= self.now {
            Rule::R8
        } else {
            let by = By::business_app();
            self.pause(ts, until, customer, content.id.clone(), Rule::R4, by);
            Rule::R4
        };
        let message = self.message(item, content, Source::BusinessApp);
        if rule == Rule::R4 {
            self.keep(&message, ts);
        }
        let payload = Payload::SentFromApp(SentFromApp { message });
        let session = self.current_session();
        self.emit(Exchange::HumanChat, customer, ts, session, payload);
        self.out.rule = rule;
    }

    /// Pauses the AI agent until `until` (never shortening a pause in force).
    fn pause(
        &mut self,
        since: Millis,
        until: Millis,
        customer: &Customer,
        trigger_message: Option<String>,
        rule: Rule,
        by: By,
    ) {
        self.out.rule = rule;
        if let Some(p) = self.out.state.pause.as_mut().filter(|p| p.until > self.now) {
            if until > p.until {
                p.until = until;
                let trigger = p.trigger.clone();
                self.out.schedule = Some((self.deadline(&trigger), until));
            }
            self.touch_session(Handler::Human);
            return;
        }
        let paused_until = until.rfc3339();
        let bot_session = self
            .out
            .state
            .session_at(self.now)
            .filter(|s| s.handler == Handler::Bot)
            .map(|s| s.id.clone());
        self.out.state.pause = Some(Pause {
            until,
            since,
            trigger: self.key.clone(),
            by: by.clone(),
        });
        self.out.state.hand += 1;
        if self.rules.handback_messages > 0 {
            // A stretch begins (continuing one whose handback the AI agent has not had yet).
            self.out
                .state
                .handback
                .get_or_insert_with(Stretch::default)
                .ended = None;
        }
        self.out.schedule = Some((self.deadline(&self.key), until));
        let session = self.touch_session(Handler::Human);
        if bot_session.is_some() {
            let payload = Payload::SessionPaused(SessionPaused {
                paused_until: paused_until.clone(),
            });
            self.emit(
                Exchange::Bot,
                customer,
                since,
                Some(session.clone()),
                payload,
            );
        }
        let payload = Payload::Handover(Handover {
            paused_until,
            trigger_message_id: trigger_message,
            by,
        });
        self.emit(Exchange::HumanChat, customer, since, Some(session), payload);
    }

    /// R5 (and the operator's release): ends the pause and the session.
    fn reset(
        &mut self,
        at: Millis,
        customer: &Customer,
        reason: ReleaseReason,
        rule: Rule,
        by: By,
    ) {
        self.out.rule = rule;
        let last = self.out.state.last_reset.map_or(at, |r| r.max(at));
        self.out.state.last_reset = Some(last);
        match self.out.state.paused(self.now) {
            // A reset sent before the pause in force began (delivered late) does not end it.
            Some(p) if at < p.since => {}
            Some(p) => {
                let p = p.clone();
                self.release(&p, reason, at, customer, by);
            }
            None => {
                if self
                    .out
                    .state
                    .session
                    .as_ref()
                    .is_some_and(|s| s.started <= at)
                {
                    self.out.state.session = None;
                }
            }
        }
    }

    /// R7: a pause whose deadline has passed is released before anything else is decided.
    fn expire(&mut self) {
        if let Some(p) = self.out.state.pause.clone().filter(|p| p.until <= self.now) {
            let customer = self.scope_customer();
            let key = std::mem::replace(&mut self.key, release_key(&p.trigger));
            self.release(&p, ReleaseReason::Timeout, p.until, &customer, By::system());
            self.key = key;
            self.out.rule = Rule::R7;
        }
    }

    fn release(
        &mut self,
        p: &Pause,
        reason: ReleaseReason,
        at: Millis,
        customer: &Customer,
        by: By,
    ) {
        let session = self.current_session();
        self.out.state.pause = None;
        self.out.state.hand += 1;
        self.out.state.session = None;
        if let Some(stretch) = self.out.state.handback.as_mut() {
            stretch.ended = Some(Ended {
                reason,
                paused_at: p.since,
                released_at: at,
            });
        }
        self.out.unschedule = Some(self.deadline(&p.trigger));
        if self
            .out
            .schedule
            .as_ref()
            .is_some_and(|(d, _)| self.out.unschedule.as_ref() == Some(d))
        {
            self.out.schedule = None;
        }
        let payload = Payload::Released(Released { reason, by });
        self.emit(Exchange::HumanChat, customer, at, session, payload);
    }

    /// The conversation's reply token now (R17).
    fn reply_token(&self) -> String {
        reply_token(self.scope, self.out.state.hand_at(self.now))
    }

    /// The deadline of this conversation's pause begun by `trigger`.
    fn deadline(&self, trigger: &str) -> Deadline {
        Deadline {
            scope: self.scope.clone(),
            trigger: trigger.to_owned(),
        }
    }

    fn current_session(&self) -> Option<String> {
        self.out.state.session_at(self.now).map(|s| s.id.clone())
    }

    /// Restarts the inactivity clock of the live session (opening one if there is none).
    fn touch_session(&mut self, handler: Handler) -> String {
        let expires = self.now.plus(self.rules.session_timeout);
        match self
            .out
            .state
            .session
            .as_mut()
            .filter(|s| s.expires > self.now)
        {
            Some(s) => {
                s.handler = handler;
                s.expires = expires;
                s.id.clone()
            }
            None => self.open_session(handler),
        }
    }

    fn open_session(&mut self, handler: Handler) -> String {
        let id = stable_id(&[&self.scope_str, "session", &self.key]);
        let expires = self.now.plus(self.rules.session_timeout);
        self.out.state.session = Some(Session {
            id: id.clone(),
            handler,
            started: self.now,
            expires,
        });
        id
    }

    /// The customer as the conversation knows them (for operator commands and timeouts).
    fn scope_customer(&self) -> Customer {
        match (&self.out.state.names[..], &self.scope.customer) {
            ([], Some(key)) => Customer::from_key(key),
            (names, _) => Customer::from_names(names),
        }
    }

    /// Adds an event; its id comes from the conversation, the input and the type, so the same
    /// input always yields the same ids.
    fn emit(
        &mut self,
        exchange: Exchange,
        customer: &Customer,
        at: Millis,
        session_id: Option<String>,
        payload: Payload,
    ) {
        // The same type on both exchanges (customer.changed): the second copy's id names its
        // exchange too.
        let again = self
            .out
            .events
            .iter()
            .any(|o| o.event.name() == payload.name());
        let event_id = match again {
            false => stable_id(&[&self.scope_str, &self.key, payload.name()]),
            true => stable_id(&[
                &self.scope_str,
                &self.key,
                payload.name(),
                exchange.as_str(),
            ]),
        };
        let event = Event {
            event_id,
            occurred_at: at.rfc3339(),
            phone_number_id: self.scope.phone_number_id.clone(),
            customer: customer.clone(),
            session_id,
            group_id: self
                .scope
                .customer
                .as_ref()
                .and_then(|c| c.group_id())
                .map(str::to_owned),
            payload,
        };
        let conversation = self.scope_str.clone();
        self.out
            .events
            .push(Outbound::new(exchange, conversation, event));
    }

    fn message(&self, item: &Item, c: &Content, source: Source) -> EventMessage {
        EventMessage {
            id: c.id.clone(),
            kind: c.kind.clone(),
            text: c.text.clone(),
            source,
            icon: source.icon(),
            media: c.media.clone(),
            reply_to: c.reply_to.clone(),
            raw: item.raw.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
