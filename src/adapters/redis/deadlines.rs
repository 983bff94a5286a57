//! The pause deadlines (`{ns}:deadlines`): scheduled by commits, claimed by the timeout
//! sweeper, and read for the list of conversations with a human now.

use std::time::Duration;

use redis::AsyncCommands;

use super::{corrupt, RedisStore};
use crate::core::domain::Scope;
use crate::core::engine::state::Pause;
use crate::core::engine::Deadline;
use crate::core::store::{Claim, Result};
use crate::core::time::Millis;

pub(super) const CLAIM: &str = r#"
-- KEYS: deadlines; ARGV: now, lease until, limit
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], m) end
return due
"#;

pub(super) const FINISH: &str = r#"
-- KEYS: deadlines; ARGV: member, lease until
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
"#;

/// Where the next page of [`RedisStore::paused_page`] starts: after the `same` deadlines at
/// instant `score` already shown (deadlines are ms instants; several may share one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    pub score: i64,
    pub same: u32,
}

impl PageCursor {
    /// How many members at the cursor's instant to skip (none once that instant is past).
    fn skip(self, now: Millis) -> u32 {
        if self.score > now.0 {
            self.same
        } else {
            0
        }
    }

    /// As written in a link: `{score}.{same}`.
    pub fn encode(self) -> String {
        format!("{}.{}", self.score, self.same)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (score, same) = s.split_once('.')?;
        Some(PageCursor {
            score: score.parse().ok()?,
            same: same.parse().ok()?,
        })
    }
}

impl RedisStore {
    /// A page of the pauses in force at `now`, soonest deadline first, from `after` (the start
    /// when `None`): read from the deadline set (`ZRANGEBYSCORE ... LIMIT`, O(log n + page)) and
    /// the page's pause keys, never a scan of the keyspace nor a read of the whole set. Returns
    /// the page and where the next one starts (`None`: this was the last).
    pub async fn paused_page(
        &self,
        now: Millis,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<(Vec<(Scope, Pause)>, Option<PageCursor>)> {
        let (min, skip) = match after {
            None => (format!("({}", now.0), 0),
            Some(c) => (c.score.max(now.0 + 1).to_string(), c.skip(now)),
        };
        let due: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.deadlines())
            .arg(&min)
            .arg("+inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(skip)
            .arg(limit)
            .query_async(&mut self.conn.clone())
            .await?;
        let next = match due.last() {
            Some((_, last)) if due.len() == limit => {
                let last = *last as i64;
                let same = due.iter().filter(|(_, s)| *s as i64 == last).count() as u32;
                let earlier = match after {
                    Some(c) if c.score == last => c.same,
                    _ => 0,
                };
                Some(PageCursor {
                    score: last,
                    same: earlier + same,
                })
            }
            _ => None,
        };
        let deadlines: Vec<Deadline> = due
            .iter()
            .filter_map(|(member, _)| parse_member(member))
            .collect();
        if deadlines.is_empty() {
            return Ok((Vec::new(), next));
        }
        let mut pipe = redis::pipe();
        for d in &deadlines {
            pipe.get(self.key(&d.scope, "pause"));
        }
        let values: Vec<Option<String>> = pipe.query_async(&mut self.conn.clone()).await?;
        let mut out: Vec<(Scope, Pause)> = Vec::with_capacity(deadlines.len());
        for (d, found) in deadlines.into_iter().zip(values) {
            let Some(text) = found else {
                continue; // released, or moved to another conversation by a merge
            };
            let pause: Pause =
                serde_json::from_str(&text).map_err(|e| corrupt(&self.ns, &d.scope, "pause", e))?;
            // The deadline of the conversation's pause in force (one per pause: its trigger);
            // an older deadline of the conversation is stale.
            if pause.trigger == d.trigger && pause.until > now {
                out.push((d.scope, pause));
            }
        }
        Ok((out, next))
    }

    /// How many pauses are in force at `now`, counted in the deadline set (one deadline per
    /// pause; a released pause's is removed): for `/metrics`, without reading every pause.
    pub async fn paused_count(&self, now: Millis) -> Result<u64> {
        let n: u64 = self
            .conn
            .clone()
            .zcount(self.deadlines(), format!("({}", now.0), "+inf")
            .await?;
        Ok(n)
    }

    pub(super) async fn schedule_deadline(&self, deadline: &Deadline, at: Millis) -> Result<()> {
        let _: i64 = self
            .conn
            .clone()
            .zadd(self.deadlines(), member(deadline), at.0)
            .await?;
        Ok(())
    }

    pub(super) async fn unschedule_deadline(&self, deadline: &Deadline) -> Result<()> {
        let _: i64 = self
            .conn
            .clone()
            .zrem(self.deadlines(), member(deadline))
            .await?;
        Ok(())
    }

    pub(super) async fn claim_deadlines(
        &self,
        now: Millis,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claim>> {
        let lease_until = now.plus(lease);
        let due: Vec<String> = self
            .claim
            .key(self.deadlines())
            .arg(now.0)
            .arg(lease_until.0)
            .arg(limit)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut claims = Vec::with_capacity(due.len());
        for m in due {
            match parse_member(&m) {
                Some(deadline) => claims.push(Claim {
                    deadline,
                    lease_until,
                }),
                None => {
                    tracing::warn!(
                        member = %crate::core::domain::redact_digits(&m),
                        "dropping a deadline that names no conversation"
                    );
                    let _: i64 = self.conn.clone().zrem(self.deadlines(), &m).await?;
                }
            }
        }
        Ok(claims)
    }

    pub(super) async fn finish_deadline_claim(&self, claim: &Claim) -> Result<()> {
        let _: i64 = self
            .finish
            .key(self.deadlines())
            .arg(member(&claim.deadline))
            .arg(claim.lease_until.0)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

/// A deadline as a member of `{ns}:deadlines`: `{phone_number_id}:{conversation id}|{trigger}`.
fn member(d: &Deadline) -> String {
    format!("{}|{}", d.scope, d.trigger)
}

/// Reads a member of `{ns}:deadlines` back.
fn parse_member(member: &str) -> Option<Deadline> {
    let (scope, trigger) = member.split_once('|')?;
    Some(Deadline {
        scope: Scope::parse(scope)?,
        trigger: trigger.to_owned(),
    })
}
