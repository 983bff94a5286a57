//! The one loop that applies the rules to stored state: resolve the input's names to their
//! conversation, merge conversations found to be one customer's, decide with the pure rules,
//! commit. The worker, `coexist process`, the operator commands and the tests all go through it.
//!
//! [`Applier::apply`] loads a conversation's state and the input's dedup mark, decides, and
//! commits the new state together with the mark and the events still to be published, in one
//! atomic step guarded by the conversation's version. A concurrent change makes the commit fail
//! and the loop decides again on fresh state (a bounded number of times, with a short jittered
//! pause), so transitions are never lost or doubled, also across processes. An input seen before
//! returns its stored events (if they were never confirmed published: effectively once) or
//! nothing (R9).

use crate::core::domain::{CustomerKey, Scope};
use crate::core::engine::event::Outbound;
use crate::core::engine::state::State;
use crate::core::engine::why::{explain, TrailEntry};
use crate::core::engine::{decide, Input, Rule};
use crate::core::numbers::Shelf;
use crate::core::store::{
    Claim, Commit, Committed, Error, Link, Result, Seen, Snapshot, StateStore, CLAIM_LEASE,
    DEDUP_RETENTION,
};
use crate::core::time::Millis;

/// How many times one input is decided again after losing a race before giving up. A race needs
/// two processes deciding for one conversation at once (a partition changing hands, an operator
/// command beside the worker): a few attempts settle it.
const MAX_ATTEMPTS: usize = 32;

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

/// An applied input: the events to publish, then [`Applier::acknowledge`].
#[derive(Debug, Clone)]
pub struct Applied {
    pub scope: Scope,
    pub key: String,
    pub rule: Option<Rule>,
    pub delivery: Delivery,
    pub events: Vec<Outbound>,
    /// Why, as stored in the conversation's trail (empty for a redelivery or a duplicate, and
    /// when the trail is off).
    pub trail: Vec<TrailEntry>,
    /// The deadline claim this came from, finished on acknowledgement.
    claim: Option<Claim>,
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
pub struct Applier<S> {
    store: S,
    /// The numbers' rules now (replaced whole when the registry changes).
    shelf: Shelf,
    /// How many trail entries a conversation keeps (0: no trail).
    trail: usize,
}

impl<S: StateStore> Applier<S> {
    pub fn new(store: S, rules: impl Into<Shelf>) -> Self {
        Applier {
            store,
            shelf: rules.into(),
            trail: crate::core::engine::why::TRAIL_ENTRIES,
        }
    }

    /// The same applier keeping `entries` trail entries per conversation (0: none).
    pub fn with_trail(mut self, entries: usize) -> Self {
        self.trail = entries;
        self
    }

    /// The shelf the rules are read from (shared with the task that keeps it current).
    pub fn shelf(&self) -> &Shelf {
        &self.shelf
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
        let book = self.shelf.current();
        let rules = book.rules.for_number(pnid);
        let retain = rules.timeout.max(rules.session_timeout) + DEDUP_RETENTION;
        let mut pauses = crate::runtime::retry::ConflictPauses::default();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                // Lost a race: the other side is committing now; let it finish.
                tokio::time::sleep(pauses.next_pause()).await;
            }
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
            let trail = match self.trail {
                0 => Vec::new(),
                _ => explain(input, &state, &d, rules, now),
            };
            let events = std::mem::take(&mut d.events);
            // The deadline goes in before the state that needs it: a crash in between leaves a
            // deadline that finds nothing to release, never a pause without a deadline.
            if let Some((deadline, at)) = &d.schedule {
                self.store.schedule(deadline, *at).await?;
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
                trail: &trail,
                trail_keep: self.trail,
            };
            if self.store.commit(commit).await? == Committed::Yes {
                if let Some(deadline) = &d.unschedule {
                    self.store.unschedule(deadline).await?;
                }
                let events = match seen {
                    Seen::Pending(events) => events,
                    Seen::Done => Vec::new(),
                };
                let mut a = self.applied(scope, key, Some(d.rule), Delivery::Fresh, events);
                a.trail = trail;
                return Ok(a);
            }
        }
        Err(Error::Contention(
            format!("{} {key}", addressed.redacted()),
            MAX_ATTEMPTS,
        ))
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
            trail: Vec::new(),
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
        if let Some(claim) = &applied.claim {
            self.store.finish_claim(claim).await?;
        }
        Ok(())
    }

    /// Claims the pause deadlines due at `now` and applies each (R7). Publish the events of each,
    /// then acknowledge it; an unacknowledged claim comes due again after [`CLAIM_LEASE`].
    pub async fn release_due(&self, now: Millis, limit: usize) -> Result<Vec<Applied>> {
        let claims = self.store.claim_due(now, CLAIM_LEASE, limit).await?;
        let mut out = Vec::with_capacity(claims.len());
        for claim in claims {
            let input = Input::Timeout(claim.deadline.clone());
            let mut applied = self.apply(&input, now).await?;
            applied.claim = Some(claim);
            out.push(applied);
        }
        Ok(out)
    }
}
