//! State in Redis. Per conversation, under the hash tag `{phone_number_id:customer}` so that one
//! conversation's keys share a slot (its scripts stay valid on Redis Cluster):
//!
//! | key | holds | expiry |
//! |---|---|---|
//! | `{ns}:{c}:pause` | the pause in force (JSON) | at the pause's deadline (`PXAT`): the truth for routing |
//! | `{ns}:{c}:session` | the session (JSON) | at the end of its inactivity timeout (`PXAT`) |
//! | `{ns}:{c}:state` | the pause awaiting release, the last reset (JSON) | timeout + 8 days after the last change |
//! | `{ns}:{c}:v` | the version that guards commits | as `state` |
//! | `{ns}:{c}:handback` | R16: the human-handled stretch's messages for the AI agent (JSON, bounded: at most `handback_messages` texts of at most 2,000 characters) | as `state` |
//! | `{ns}:{c}:seen:{item}` | dedup mark: events not yet published, or `done` | 8 days |
//! | `{ns}:deadlines` | sorted set of pause deadlines (`{c}\|{trigger}` by instant) | none |
//!
//! A commit is one Lua script over the conversation's keys: it checks the version and the dedup
//! mark, then writes everything, so the read-decide-write of [`super::Engine::apply`] is atomic
//! across processes. Deleting the `pause` key by hand releases the pause (routing follows the TTL).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use super::{Commit, Committed, Error, Result, Seen, Snapshot, StateStore};
use crate::domain::Scope;
use crate::engine::event::Outbound;
use crate::engine::state::{Pause, Session, State, Stretch};
use crate::time::Millis;

const DONE: &str = "done";

const COMMIT: &str = r#"
-- KEYS: v, pause, session, state, seen, handback
-- ARGV: expected version ('' = no check), write state ('1'/'0'), pause JSON ('' = none),
--       pause PXAT, session JSON ('' = none), session PXAT, state JSON, retain ms, mark, mark ms,
--       handback JSON ('' = none, '-' = unchanged)
if ARGV[1] ~= '' and (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
if ARGV[2] == '1' then
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
  if ARGV[3] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[3], 'PXAT', ARGV[4]) end
  if ARGV[5] == '' then redis.call('DEL', KEYS[3]) else redis.call('SET', KEYS[3], ARGV[5], 'PXAT', ARGV[6]) end
  redis.call('SET', KEYS[4], ARGV[7], 'PX', ARGV[8])
  if ARGV[11] == '' then redis.call('DEL', KEYS[6])
  elseif ARGV[11] ~= '-' then redis.call('SET', KEYS[6], ARGV[11], 'PX', ARGV[8])
  else redis.call('PEXPIRE', KEYS[6], ARGV[8]) end
end
redis.call('SET', KEYS[5], ARGV[9], 'PX', ARGV[10])
return 1
"#;

/// The handback argument of a commit whose handback did not change.
const UNCHANGED: &str = "-";

const CLAIM: &str = r#"
-- KEYS: deadlines; ARGV: now, lease until, limit
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], m) end
return due
"#;

const FINISH: &str = r#"
-- KEYS: deadlines; ARGV: member, lease until
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
"#;

/// What `{ns}:{c}:state` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    pause: Option<Pause>,
    #[serde(default)]
    last_reset: Option<Millis>,
}

/// A [`StateStore`] in Redis, under one namespace.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    ns: String,
    commit: Script,
    claim: Script,
    finish: Script,
}

impl RedisStore {
    /// Connects (the connection reconnects by itself afterwards).
    pub async fn connect(url: &str, namespace: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
        // Few quick retries per call: a caller that must never give up (the worker) retries
        // around the store with its own backoff; an operator command fails fast.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self::with_connection(conn, namespace))
    }

    pub fn with_connection(conn: ConnectionManager, namespace: &str) -> Self {
        RedisStore {
            conn,
            ns: namespace.to_owned(),
            commit: Script::new(COMMIT),
            claim: Script::new(CLAIM),
            finish: Script::new(FINISH),
        }
    }

    /// The connection (for callers that need raw commands, e.g. tests cleaning a namespace).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn key(&self, scope: &Scope, suffix: &str) -> String {
        format!("{}:{{{}}}:{}", self.ns, scope, suffix)
    }

    fn deadlines(&self) -> String {
        format!("{}:deadlines", self.ns)
    }

    /// Remaining lifetime of the pause key in ms (for `conversation show`), if it exists.
    pub async fn pause_ttl_ms(&self, scope: &Scope) -> Result<Option<i64>> {
        let ttl: i64 = self.conn.clone().pttl(self.key(scope, "pause")).await?;
        Ok((ttl >= 0).then_some(ttl))
    }
}

/// A stored value that does not parse. The error names the key with the customer redacted: it
/// ends up in logs and dead-letter headers.
fn corrupt(ns: &str, scope: &Scope, suffix: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        key: format!("{ns}:{{{}}}:{suffix}", scope.redacted()),
        reason: e.to_string(),
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("state always serialises")
}

impl StateStore for RedisStore {
    async fn load(&self, scope: &Scope, key: &str, now: Millis) -> Result<Snapshot> {
        let keys = [
            self.key(scope, "v"),
            self.key(scope, "pause"),
            self.key(scope, "session"),
            self.key(scope, "state"),
            self.key(scope, &format!("seen:{key}")),
            self.key(scope, "handback"),
        ];
        type Row = (
            Option<u64>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let (v, pause_key, session, stored, seen, handback): Row = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn.clone())
            .await?;
        let stored: Stored = match stored {
            Some(s) => {
                serde_json::from_str(&s).map_err(|e| corrupt(&self.ns, scope, "state", e))?
            }
            None => Stored::default(),
        };
        let handback: Option<Stretch> = match handback {
            Some(h) => Some(
                serde_json::from_str(&h).map_err(|e| corrupt(&self.ns, scope, "handback", e))?,
            ),
            None => None,
        };
        let session: Option<Session> = match session {
            Some(s) => {
                Some(serde_json::from_str(&s).map_err(|e| corrupt(&self.ns, scope, "session", e))?)
            }
            None => None,
        };
        let mut pause = stored.pause;
        if let Some(p) = pause.as_mut().filter(|p| p.until > now) {
            // The pause key's TTL is the truth: gone means over (also when deleted by hand).
            if pause_key.is_none() {
                p.until = now;
            }
        }
        let seen = match seen.as_deref() {
            None => None,
            Some(DONE) => Some(Seen::Done),
            Some(s) => Some(Seen::Pending(
                serde_json::from_str::<Vec<Outbound>>(s)
                    .map_err(|e| corrupt(&self.ns, scope, "seen", e))?,
            )),
        };
        Ok(Snapshot {
            state: State {
                pause,
                session,
                last_reset: stored.last_reset,
                handback,
            },
            version: v.unwrap_or(0),
            seen,
        })
    }

    async fn commit(&self, c: Commit<'_>) -> Result<Committed> {
        let keys = [
            self.key(c.scope, "v"),
            self.key(c.scope, "pause"),
            self.key(c.scope, "session"),
            self.key(c.scope, "state"),
            self.key(c.scope, &format!("seen:{}", c.key)),
            self.key(c.scope, "handback"),
        ];
        let mut inv = self.commit.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        inv.arg(
            c.expected_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
        );
        match c.state {
            Some(state) => {
                let live_pause = state.pause.as_ref().filter(|p| p.until > c.now);
                let live_session = state.session.as_ref().filter(|s| s.expires > c.now);
                inv.arg("1")
                    .arg(live_pause.map(json).unwrap_or_default())
                    .arg(live_pause.map_or(0, |p| p.until.0))
                    .arg(live_session.map(json).unwrap_or_default())
                    .arg(live_session.map_or(0, |s| s.expires.0))
                    .arg(json(&Stored {
                        pause: state.pause.clone(),
                        last_reset: state.last_reset,
                    }));
            }
            None => {
                inv.arg("0").arg("").arg(0).arg("").arg(0).arg("");
            }
        }
        inv.arg(c.retain.as_millis() as u64);
        match c.seen {
            Seen::Done => inv.arg(DONE),
            Seen::Pending(events) => inv.arg(json(events)),
        };
        inv.arg(super::DEDUP_RETENTION.as_millis() as u64);
        match (c.state, c.handback_changed) {
            (Some(state), true) => inv.arg(state.handback.as_ref().map(json).unwrap_or_default()),
            _ => inv.arg(UNCHANGED),
        };
        let ok: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(if ok == 1 {
            Committed::Yes
        } else {
            Committed::Conflict
        })
    }

    async fn mark_published(&self, scope: &Scope, key: &str) -> Result<()> {
        let _: Option<String> = redis::cmd("SET")
            .arg(self.key(scope, &format!("seen:{key}")))
            .arg(DONE)
            .arg("XX")
            .arg("KEEPTTL")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn schedule(&self, member: &str, at: Millis) -> Result<()> {
        let _: i64 = self
            .conn
            .clone()
            .zadd(self.deadlines(), member, at.0)
            .await?;
        Ok(())
    }

    async fn unschedule(&self, member: &str) -> Result<()> {
        let _: i64 = self.conn.clone().zrem(self.deadlines(), member).await?;
        Ok(())
    }

    async fn claim_due(
        &self,
        now: Millis,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<(String, Millis)>> {
        let lease_until = now.plus(lease);
        let due: Vec<String> = self
            .claim
            .key(self.deadlines())
            .arg(now.0)
            .arg(lease_until.0)
            .arg(limit)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(due.into_iter().map(|m| (m, lease_until)).collect())
    }

    async fn finish_claim(&self, member: &str, lease_until: Millis) -> Result<()> {
        let _: i64 = self
            .finish
            .key(self.deadlines())
            .arg(member)
            .arg(lease_until.0)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}
