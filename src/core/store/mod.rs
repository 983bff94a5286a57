//! Conversation state behind one interface ([`StateStore`]): conversations, the links between a
//! customer's names, dedup marks and the pause deadline schedule. Every method is atomic on its
//! own; [`crate::core::apply`] builds the read-decide-commit loop on them.
//!
//! Stores: [`memory::MemoryStore`] (offline `process`, unit tests) and [`crate::adapters::redis::RedisStore`].

pub mod memory;

use std::future::Future;
use std::time::Duration;

use crate::core::domain::{CustomerKey, Scope};
use crate::core::engine::event::Outbound;
use crate::core::engine::state::State;
use crate::core::engine::Deadline;
use crate::core::time::Millis;

/// How long a dedup mark is kept (R9 asks for at least 7 days).
pub const DEDUP_RETENTION: Duration = Duration::from_secs(8 * 86_400);

/// How long a claimed deadline is held before another worker may claim it again.
pub const CLAIM_LEASE: Duration = Duration::from_secs(30);

/// A store's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("stored state of {key} cannot be read: {reason}")]
    Corrupt { key: String, reason: String },
    /// The apply loop kept losing the race for one conversation.
    #[error("{0}: still conflicting after {1} attempts")]
    Contention(String, usize),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the failure should pass by itself (Redis unreachable, loading, failing over, out
    /// of memory, refusing writes): worth retrying for as long as it lasts, never a reason to
    /// dead-letter.
    pub fn transient(&self) -> bool {
        self.passing().is_some()
    }

    /// For a failure that passes by itself, what it is (a metric label): `unreachable`, `oom`,
    /// `readonly`, `loading`, `misconf`, `tryagain`, `clusterdown`, `moved`, `busy`,
    /// `masterdown`.
    pub fn passing(&self) -> Option<&'static str> {
        let Error::Redis(r) = self else {
            return None;
        };
        if r.is_io_error()
            || r.is_timeout()
            || r.is_connection_dropped()
            || r.is_connection_refusal()
        {
            return Some("unreachable");
        }
        const PASSING: &[(&str, &str)] = &[
            ("OOM", "oom"),
            ("READONLY", "readonly"),
            ("LOADING", "loading"),
            ("MISCONF", "misconf"),
            ("TRYAGAIN", "tryagain"),
            ("CLUSTERDOWN", "clusterdown"),
            ("MOVED", "moved"),
            ("ASK", "moved"),
            ("BUSY", "busy"),
            ("MASTERDOWN", "masterdown"),
            ("NOREPLICAS", "readonly"),
        ];
        if let Some(code) = r.code() {
            if let Some((_, label)) = PASSING.iter().find(|(c, _)| *c == code) {
                return Some(label);
            }
        }
        // A script's error carries the failed command's error inside its message
        // ("ERR Error running script ... OOM command not allowed ...").
        let text = r.to_string();
        PASSING
            .iter()
            .find(|(c, _)| text.contains(&format!("{c} ")) && *c != "ASK")
            .map(|(_, label)| *label)
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
    /// Why: entries for the conversation's trail, kept with the decision (so a redelivery,
    /// which finds the mark, never adds them twice).
    pub trail: &'a [crate::core::engine::why::TrailEntry],
    /// How many entries the trail keeps (0: none).
    pub trail_keep: usize,
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
    /// The conversation's trail (`scope`: the conversation itself, not a linked name), oldest
    /// first.
    fn trail(
        &self,
        scope: &Scope,
    ) -> impl Future<Output = Result<Vec<crate::core::engine::why::TrailEntry>>> + Send;
    /// Marks inputs' events as published (each mark keeps its expiry), in one round trip: each
    /// mark is the conversation its input was decided in and the input's key.
    fn mark_published(&self, marks: &[(Scope, String)]) -> impl Future<Output = Result<()>> + Send;
    /// Puts a pause deadline in the schedule (or moves it).
    fn schedule(&self, deadline: &Deadline, at: Millis) -> impl Future<Output = Result<()>> + Send;
    fn unschedule(&self, deadline: &Deadline) -> impl Future<Output = Result<()>> + Send;
    /// Claims up to `limit` deadlines due at `now`: each is held for `lease` (it comes due again
    /// at `now + lease`), so one claimer gets it; an unfinished claim comes due again.
    fn claim_due(
        &self,
        now: Millis,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Claim>>> + Send;
    /// Removes a claimed deadline, unless it was moved since the claim.
    fn finish_claim(&self, claim: &Claim) -> impl Future<Output = Result<()>> + Send;
}

/// A pause deadline claimed by one worker until `lease_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub deadline: Deadline,
    pub lease_until: Millis,
}
