//! State in this process's memory: for `coexist process` and tests. Nothing expires on its own;
//! the rules compare deadlines with the clock they are given, so expiry still holds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{Commit, Committed, Result, Seen, Snapshot, StateStore};
use crate::domain::Scope;
use crate::engine::state::State;
use crate::time::Millis;

#[derive(Default)]
struct Conversation {
    version: u64,
    state: State,
    seen: HashMap<String, Seen>,
}

#[derive(Default)]
struct Inner {
    conversations: HashMap<Scope, Conversation>,
    deadlines: HashMap<String, Millis>,
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
    async fn load(&self, scope: &Scope, key: &str, _now: Millis) -> Result<Snapshot> {
        let inner = self.lock();
        Ok(match inner.conversations.get(scope) {
            Some(c) => Snapshot {
                state: c.state.clone(),
                version: c.version,
                seen: c.seen.get(key).cloned(),
            },
            None => Snapshot::default(),
        })
    }

    async fn commit(&self, commit: Commit<'_>) -> Result<Committed> {
        let mut inner = self.lock();
        let c = inner.conversations.entry(commit.scope.clone()).or_default();
        if commit.expected_version.is_some_and(|v| v != c.version)
            || c.seen.contains_key(commit.key)
        {
            return Ok(Committed::Conflict);
        }
        if let Some(state) = commit.state {
            c.state = state.clone();
            c.version += 1;
        }
        c.seen.insert(commit.key.to_owned(), commit.seen.clone());
        Ok(Committed::Yes)
    }

    async fn mark_published(&self, scope: &Scope, key: &str) -> Result<()> {
        if let Some(seen) = self
            .lock()
            .conversations
            .get_mut(scope)
            .and_then(|c| c.seen.get_mut(key))
        {
            *seen = Seen::Done;
        }
        Ok(())
    }

    async fn schedule(&self, member: &str, at: Millis) -> Result<()> {
        self.lock().deadlines.insert(member.to_owned(), at);
        Ok(())
    }

    async fn unschedule(&self, member: &str) -> Result<()> {
        self.lock().deadlines.remove(member);
        Ok(())
    }

    async fn claim_due(
        &self,
        now: Millis,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<(String, Millis)>> {
        let mut inner = self.lock();
        let mut due: Vec<(String, Millis)> = inner
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(m, at)| (m.clone(), *at))
            .collect();
        due.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        due.truncate(limit);
        let lease_until = now.plus(lease);
        for (member, at) in due.iter_mut() {
            inner.deadlines.insert(member.clone(), lease_until);
            *at = lease_until;
        }
        Ok(due)
    }

    async fn finish_claim(&self, member: &str, lease_until: Millis) -> Result<()> {
        let mut inner = self.lock();
        if inner.deadlines.get(member) == Some(&lease_until) {
            inner.deadlines.remove(member);
        }
        Ok(())
    }
}
