//! Conversation state behind one interface, and the one loop that applies the rules to it.
//!
//! [`Engine::apply`] loads a conversation's state and the input's dedup mark, decides with the
//! pure rules, and commits the new state together with the mark and the events still to be
//! published, in one atomic step guarded by the conversation's version. A concurrent change makes
//! the commit fail and the loop decides again on fresh state, so transitions are never lost or
//! doubled, also across processes. An input seen before returns its stored events (if they were
//! never confirmed published: effectively once) or nothing (R9).
//!
//! Stores: [`memory::MemoryStore`] (offline `process`, unit tests) and [`redis::RedisStore`].

pub mod memory;
pub mod redis;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{CustomerKey, Scope};
use crate::engine::event::Outbound;
use crate::engine::state::State;
use crate::engine::{decide, parse_deadline_member, Input, Rule, Rules};
use crate::time::Millis;

/// How long a dedup mark is kept (R9 asks for at least 7 days).
pub const DEDUP_RETENTION: Duration = Duration::from_secs(8 * 86_400);

/// How long a claimed deadline is held before another worker may claim it again.
pub const CLAIM_LEASE: Duration = Duration::from_secs(30);

/// How many times one input is decided again after losing a race before giving up.
const MAX_ATTEMPTS: usize = 1000;

/// A store's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("stored state of {key} cannot be read: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{0}: still conflicting after {MAX_ATTEMPTS} attempts")]
    Contention(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the failure should pass by itself (Redis unreachable, loading, failing over):
    /// worth retrying for as long as it lasts, never a reason to dead-letter.
    pub fn transient(&self) -> bool {
        match self {
            Error::Redis(r) => {
                r.is_io_error()
                    || r.is_timeout()
                    || r.is_connection_dropped()
                    || r.is_connection_refusal()
                    || matches!(
                        r.code(),
                        Some(
                            "LOADING"
                                | "BUSY"
                                | "TRYAGAIN"
                                | "MASTERDOWN"
                                | "CLUSTERDOWN"
                                | "READONLY"
                        )
                    )
            }
            Error::Corrupt { .. } | Error::Contention(_) => false,
        }
    }
}

/// The dedup mark of an input.
#[derive(Debug, Clone)]
pub enum Seen {
    /// Decided; these events are not yet confirmed published.
    Pending(Vec<Outbound>),
    /// Decided and published.
    Done,
}

/// A conversation's state as loaded, with the version that guards its commit.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub state: State,
    pub version: u64,
    pub seen: Option<Seen>,
}

/// A name to link to a conversation, with the link it had when it was read: the commit takes
/// effect only if it still has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: CustomerKey,
    pub was: Option<CustomerKey>,
}

/// The result of deciding: what to store.
pub struct Commit<'a> {
    /// The conversation (its id is the customer key of the scope).
    pub scope: &'a Scope,
    pub key: &'a str,
    /// Commit only if the version is still this (`None`: the decision read no state).
    pub expected_version: Option<u64>,
    /// The new state, when it changed.
    pub state: Option<&'a State>,
    /// Whether the state's handback (R16) changed (stores that keep it apart rewrite it only then).
    pub handback_changed: bool,
    /// The dedup mark to set (only if none is set yet).
    pub seen: &'a Seen,
    /// How long the state outlives its last change.
    pub retain: Duration,
    pub now: Millis,
    /// Names to link to this conversation (checked as read).
    pub links: &'a [Link],
    /// Conversations of the same customer merged into this one, with the version read: deleted,
    /// if still at that version.
    pub absorbed: &'a [(Scope, u64)],
}

/// Whether a commit took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    Yes,
    /// The version moved or the mark appeared meanwhile: decide again.
    Conflict,
}

/// Where conversation state lives. All methods are atomic on their own.
///
/// Per business number: conversations (by id: the first name the customer was known by), links
/// from the customer's other names to their conversation, and the dedup marks of the number's
/// inputs (a mark outlives any merge of conversations).
pub trait StateStore: Send + Sync {
    /// The conversation each name is linked to (`None`: not linked, the name is its own).
    fn resolve(
        &self,
        phone_number_id: &str,
        names: &[CustomerKey],
    ) -> impl Future<Output = Result<Vec<Option<CustomerKey>>>> + Send;
    /// The state of the conversation `scope` and the dedup mark of `key` in its number.
    fn load(
        &self,
        scope: &Scope,
        key: &str,
        now: Millis,
    ) -> impl Future<Output = Result<Snapshot>> + Send;
    /// [`StateStore::resolve`] and [`StateStore::load`] of `scope` (the conversation the first
    /// name is, unless a link says otherwise) together: one round trip where the store can.
    fn resolve_and_load(
        &self,
        scope: &Scope,
        names: &[CustomerKey],
        key: &str,
        now: Millis,
    ) -> impl Future<Output = Result<(Vec<Option<CustomerKey>>, Snapshot)>> + Send {
        async move {
            let links = self.resolve(&scope.phone_number_id, names).await?;
            Ok((links, self.load(scope, key, now).await?))
        }
    }
    fn commit(&self, commit: Commit<'_>) -> impl Future<Output = Result<Committed>> + Send;
    /// Marks inputs' events as published (each mark keeps its expiry), in one round trip: each
    /// mark is the conversation its input was decided in and the input's key.
    fn mark_published(&self, marks: &[(Scope, String)]) -> impl Future<Output = Result<()>> + Send;
    /// Puts a pause deadline in the schedule (or moves it).
    fn schedule(&self, member: &str, at: Millis) -> impl Future<Output = Result<()>> + Send;
    fn unschedule(&self, member: &str) -> impl Future<Output = Result<()>> + Send;
    /// Claims up to `limit` deadlines due at `now`: each is held for `lease` (its score becomes
    /// `now + lease`), so one claimer gets it; an unfinished claim comes due again.
    fn claim_due(
        &self,
        now: Millis,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, Millis)>>> + Send;
    /// Removes a claimed deadline, unless it was moved since the claim.
    fn finish_claim(
        &self,
        member: &str,
        lease_until: Millis,
    ) -> impl Future<Output = Result<()>> + Send;
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

/// How an input was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Decided now.
    Fresh,
    /// Decided before, but its events were never confirmed: here they are again (same ids).
    Redelivered,
    /// Decided and published before: nothing to do (R9).
    Duplicate,
}

/// An applied input: the events to publish, then [`Engine::acknowledge`].
#[derive(Debug, Clone)]
pub struct Applied {
    pub scope: Scope,
    pub key: String,
    pub rule: Option<Rule>,
    pub delivery: Delivery,
    pub events: Vec<Outbound>,
    /// The deadline claim this came from, finished on acknowledgement.
    claim: Option<(String, Millis)>,
}

/// One customer's conversations merged into one, fail-closed ([`State::merge`]): the one that
/// goes on (the first with state, else the first), its state, and the others that had state,
/// with the versions read.
fn merged(scopes: &[Scope], snaps: &[Snapshot]) -> (usize, State, Vec<(Scope, u64)>) {
    let survivor = snaps.iter().position(|s| s.version > 0).unwrap_or(0);
    let mut state = snaps[survivor].state.clone();
    let mut absorbed = Vec::new();
    for (i, snap) in snaps.iter().enumerate() {
        if i != survivor && snap.version > 0 {
            state = state.merge(snap.state.clone());
            absorbed.push((scopes[i].clone(), snap.version));
        }
    }
    (survivor, state, absorbed)
}

/// The rules over a store.
pub struct Engine<S> {
    store: S,
    rules: Arc<RuleBook>,
}

impl<S: StateStore> Engine<S> {
    pub fn new(store: S, rules: Arc<RuleBook>) -> Self {
        Engine { store, rules }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Decides an input and stores the outcome; the events are then the caller's to publish.
    ///
    /// The input's names are resolved to their conversations first. Names of one customer found
    /// in several conversations are merged into one (fail-closed, [`State::merge`]); names not
    /// yet linked are linked to it. Resolution, merge, decision and links commit together,
    /// guarded by the versions read, or the whole is done again.
    pub async fn apply(&self, input: &Input<'_>, now: Millis) -> Result<Applied> {
        let addressed = input.scope();
        let pnid = &addressed.phone_number_id;
        let key = input.key();
        let names = input.names();
        let rules = self.rules.for_number(pnid);
        let retain = rules.timeout.max(rules.session_timeout) + DEDUP_RETENTION;
        for _ in 0..MAX_ATTEMPTS {
            let (found, scopes, mut snaps) =
                self.conversations(addressed, &names, &key, now).await?;
            match snaps[0].seen.take() {
                Some(Seen::Done) => {
                    let a = self.applied(&scopes[0], key, None, Delivery::Duplicate, Vec::new());
                    return Ok(a);
                }
                Some(Seen::Pending(events)) => {
                    let a = self.applied(&scopes[0], key, None, Delivery::Redelivered, events);
                    return Ok(a);
                }
                None => {}
            }
            let (survivor, mut state, absorbed) = merged(&scopes, &snaps);
            let scope = &scopes[survivor];
            let id = scope.customer.clone();
            let links: Vec<Link> = names
                .iter()
                .zip(&found)
                .filter(|(name, link)| Some(*name) != id.as_ref() && link.as_ref() != id.as_ref())
                .map(|(name, link)| Link {
                    name: name.clone(),
                    was: link.clone(),
                })
                .collect();
            if id.is_some() {
                for name in &names {
                    if !state.names.contains(name) {
                        state.names.push(name.clone());
                    }
                }
            }
            let mut d = decide(&state, input, scope, now, rules);
            let events = std::mem::take(&mut d.events);
            // The deadline goes in before the state that needs it: a crash in between leaves a
            // deadline that finds nothing to release, never a pause without a deadline.
            if let Some((member, at)) = &d.schedule {
                self.store.schedule(member, *at).await?;
            }
            let seen = if events.is_empty() {
                Seen::Done
            } else {
                Seen::Pending(events)
            };
            let read = &snaps[survivor];
            let changed = d.state != read.state;
            let identity_changed = !links.is_empty() || !absorbed.is_empty();
            let commit = Commit {
                scope,
                key: &key,
                expected_version: (d.reads_state || identity_changed).then_some(read.version),
                state: changed.then_some(&d.state),
                handback_changed: d.state.handback != read.state.handback,
                seen: &seen,
                retain,
                now,
                links: &links,
                absorbed: &absorbed,
            };
            if self.store.commit(commit).await? == Committed::Yes {
                if let Some(member) = &d.unschedule {
                    self.store.unschedule(member).await?;
                }
                let events = match seen {
                    Seen::Pending(events) => events,
                    Seen::Done => Vec::new(),
                };
                return Ok(self.applied(scope, key, Some(d.rule), Delivery::Fresh, events));
            }
        }
        Err(Error::Contention(format!("{} {key}", addressed.redacted())))
    }

    /// The conversations an input's names point at (the addressed one for number-level inputs),
    /// each with its snapshot, and the links as read. The first name's own conversation is read
    /// with the links, in one round trip; others (rare: names linked elsewhere) after.
    async fn conversations(
        &self,
        addressed: &Scope,
        names: &[CustomerKey],
        key: &str,
        now: Millis,
    ) -> Result<(Vec<Option<CustomerKey>>, Vec<Scope>, Vec<Snapshot>)> {
        let pnid = &addressed.phone_number_id;
        let Some(name) = names.first() else {
            let snap = self.store.load(addressed, key, now).await?;
            return Ok((Vec::new(), vec![addressed.clone()], vec![snap]));
        };
        let own = Scope::conversation(pnid, name.clone());
        let (found, own_snap) = self.store.resolve_and_load(&own, names, key, now).await?;
        let mut scopes: Vec<Scope> = Vec::new();
        for (name, link) in names.iter().zip(&found) {
            let scope = Scope::conversation(pnid, link.clone().unwrap_or_else(|| name.clone()));
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        let mut own_snap = Some(own_snap);
        let mut snaps = Vec::with_capacity(scopes.len());
        for scope in &scopes {
            snaps.push(match own_snap.take() {
                Some(snap) if *scope == own => snap,
                _ => self.store.load(scope, key, now).await?,
            });
        }
        Ok((found, scopes, snaps))
    }

    fn applied(
        &self,
        scope: &Scope,
        key: String,
        rule: Option<Rule>,
        delivery: Delivery,
        events: Vec<Outbound>,
    ) -> Applied {
        Applied {
            scope: scope.clone(),
            key,
            rule,
            delivery,
            events,
            claim: None,
        }
    }

    /// Records that an applied input's events are published (and finishes its deadline claim).
    pub async fn acknowledge(&self, applied: &Applied) -> Result<()> {
        if !applied.events.is_empty() {
            self.store
                .mark_published(&[(applied.scope.clone(), applied.key.clone())])
                .await?;
        }
        if let Some((member, lease)) = &applied.claim {
            self.store.finish_claim(member, *lease).await?;
        }
        Ok(())
    }

    /// Claims the pause deadlines due at `now` and applies each (R7). Publish the events of each,
    /// then acknowledge it; an unacknowledged claim comes due again after [`CLAIM_LEASE`].
    pub async fn release_due(&self, now: Millis, limit: usize) -> Result<Vec<Applied>> {
        let claims = self.store.claim_due(now, CLAIM_LEASE, limit).await?;
        let mut out = Vec::with_capacity(claims.len());
        for (member, lease) in claims {
            let Some((scope, trigger)) = parse_deadline_member(&member) else {
                tracing::warn!(member, "dropping a deadline that names no conversation");
                self.store.finish_claim(&member, lease).await?;
                continue;
            };
            let mut applied = self.apply(&Input::Timeout { scope, trigger }, now).await?;
            applied.claim = Some((member, lease));
            out.push(applied);
        }
        Ok(out)
    }
}
