//! State in this process's memory: for `coexist process` and tests. Nothing expires on its own;
//! the rules compare deadlines with the clock they are given, so expiry still holds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{Claim, Commit, Committed, Result, Seen, Snapshot, StateStore};
use crate::core::domain::{CustomerKey, Scope};
use crate::core::engine::state::State;
use crate::core::engine::why::TrailEntry;
use crate::core::engine::Deadline;
use crate::core::time::Millis;

#[derive(Default)]
struct Conversation {
    version: u64,
    state: State,
}

#[derive(Default)]
struct Inner {
    conversations: HashMap<Scope, Conversation>,
    /// (number, name) -> the conversation the name is linked to.
    links: HashMap<(String, CustomerKey), CustomerKey>,
    /// (number, input key) -> its dedup mark.
    seen: HashMap<(String, String), Seen>,
    deadlines: HashMap<Deadline, Millis>,
    /// Each conversation's trail, oldest first.
    trails: HashMap<Scope, Vec<TrailEntry>>,
}

/// An in-memory [`StateStore`].
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl StateStore for MemoryStore {
    async fn resolve(
        &self,
        phone_number_id: &str,
        names: &[CustomerKey],
    ) -> Result<Vec<Option<CustomerKey>>> {
        let inner = self.lock();
        Ok(names
            .iter()
            .map(|n| {
                inner
                    .links
                    .get(&(phone_number_id.to_owned(), n.clone()))
                    .cloned()
            })
            .collect())
    }

    async fn load(&self, scope: &Scope, key: &str, _now: Millis) -> Result<Snapshot> {
        let inner = self.lock();
        let seen = inner
            .seen
            .get(&(scope.phone_number_id.clone(), key.to_owned()))
            .cloned();
        Ok(match inner.conversations.get(scope) {
            Some(c) => Snapshot {
                state: c.state.clone(),
                version: c.version,
                seen,
            },
            None => Snapshot {
                seen,
                ..Snapshot::default()
            },
        })
    }

    async fn commit(&self, commit: Commit<'_>) -> Result<Committed> {
        let mut inner = self.lock();
        let pnid = commit.scope.phone_number_id.clone();
        let version =
            |inner: &Inner, s: &Scope| inner.conversations.get(s).map_or(0, |c| c.version);
        let moved = commit
            .expected_version
            .is_some_and(|v| v != version(&inner, commit.scope))
            || inner
                .seen
                .contains_key(&(pnid.clone(), commit.key.to_owned()))
            || commit
                .links
                .iter()
                .any(|l| inner.links.get(&(pnid.clone(), l.name.clone())) != l.was.as_ref())
            || commit
                .absorbed
                .iter()
                .any(|(s, v)| version(&inner, s) != *v);
        if moved {
            return Ok(Committed::Conflict);
        }
        let id = commit.scope.customer.clone();
        if let Some(state) = commit.state {
            let c = inner.conversations.entry(commit.scope.clone()).or_default();
            c.state = state.clone();
            c.version += 1;
        }
        if let Some(id) = &id {
            let names = commit.links.iter().map(|l| &l.name);
            let known = commit.state.map(|s| s.names.iter()).into_iter().flatten();
            for name in names.chain(known).filter(|n| *n != id) {
                inner.links.insert((pnid.clone(), name.clone()), id.clone());
            }
        }
        for (absorbed, _) in commit.absorbed {
            inner.conversations.remove(absorbed);
            inner.trails.remove(absorbed);
        }
        if commit.trail_keep > 0 && !commit.trail.is_empty() {
            let trail = inner.trails.entry(commit.scope.clone()).or_default();
            trail.extend_from_slice(commit.trail);
            let over = trail.len().saturating_sub(commit.trail_keep);
            trail.drain(..over);
        }
        inner
            .seen
            .insert((pnid, commit.key.to_owned()), commit.seen.clone());
        Ok(Committed::Yes)
    }

    async fn trail(&self, scope: &Scope) -> Result<Vec<TrailEntry>> {
        Ok(self.lock().trails.get(scope).cloned().unwrap_or_default())
    }

    async fn mark_published(&self, marks: &[(Scope, String)]) -> Result<()> {
        let mut inner = self.lock();
        for (scope, key) in marks {
            if let Some(seen) = inner
                .seen
                .get_mut(&(scope.phone_number_id.clone(), key.clone()))
            {
                *seen = Seen::Done;
            }
        }
        Ok(())
    }

    async fn schedule(&self, deadline: &Deadline, at: Millis) -> Result<()> {
        self.lock().deadlines.insert(deadline.clone(), at);
        Ok(())
    }

    async fn unschedule(&self, deadline: &Deadline) -> Result<()> {
        self.lock().deadlines.remove(deadline);
        Ok(())
    }

    async fn claim_due(&self, now: Millis, lease: Duration, limit: usize) -> Result<Vec<Claim>> {
        let mut inner = self.lock();
        let mut due: Vec<(Millis, Deadline)> = inner
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(d, at)| (*at, d.clone()))
            .collect();
        due.sort();
        due.truncate(limit);
        let lease_until = now.plus(lease);
        let mut claims = Vec::with_capacity(due.len());
        for (_, deadline) in due {
            inner.deadlines.insert(deadline.clone(), lease_until);
            claims.push(Claim {
                deadline,
                lease_until,
            });
        }
        Ok(claims)
    }

    async fn finish_claim(&self, claim: &Claim) -> Result<()> {
        let mut inner = self.lock();
        if inner.deadlines.get(&claim.deadline) == Some(&claim.lease_until) {
            inner.deadlines.remove(&claim.deadline);
        }
        Ok(())
    }
}
