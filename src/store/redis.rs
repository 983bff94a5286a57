//! State in Redis. Every key of one business number carries the hash tag `{phone_number_id}`,
//! so a number's conversations, links and dedup marks share a slot: one script commits a
//! decision, the links it makes and a merge of conversations together (also on Redis Cluster).
//!
//! | key | holds | expiry |
//! |---|---|---|
//! | `{ns}:{pnid}:c:{id}:pause` | the pause in force (JSON) | at the pause's deadline (`PXAT`): the truth for routing |
//! | `{ns}:{pnid}:c:{id}:session` | the session (JSON) | at the end of its inactivity timeout (`PXAT`) |
//! | `{ns}:{pnid}:c:{id}:state` | the pause awaiting release, the last reset, the customer's names (JSON) | timeout + 8 days after the last change |
//! | `{ns}:{pnid}:c:{id}:v` | the version that guards commits | as `state` |
//! | `{ns}:{pnid}:c:{id}:handback` | R16: the human-handled stretch's messages for the AI agent (JSON, bounded: at most `handback_messages` texts of at most 2,000 characters) | as `state` |
//! | `{ns}:{pnid}:n:{name}` | the conversation id another name of the customer is linked to | as `state` |
//! | `{ns}:{pnid}:seen:{item}` | dedup mark: events not yet published, or `done` | 8 days |
//! | `{ns}:deadlines` | sorted set of pause deadlines (`{pnid}:{id}\|{trigger}` by instant) | none |
//!
//! `{id}` is the conversation's id: the first name the customer was known by (digits, or a
//! business-scoped user id). A commit checks the conversation's version, the links it read and
//! the versions of conversations it merges, so the read-decide-write of
//! [`super::Engine::apply`] is atomic across processes. Deleting the `pause` key by hand
//! releases the pause (routing follows the TTL).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{AsyncCommands, RedisFuture, Script};
use serde::{Deserialize, Serialize};

use super::{Commit, Committed, Error, Result, Seen, Snapshot, StateStore};
use crate::config::RedisTarget;
use crate::domain::{CustomerKey, Scope};
use crate::engine::event::Outbound;
use crate::engine::state::{Pause, Session, State, Stretch};
use crate::metrics::REPLICA_SHORTFALLS;
use crate::time::Millis;

const DONE: &str = "done";

const COMMIT: &str = r#"
-- KEYS: v, pause, session, state, handback, seen, then C checked links and R refreshed links,
--       then 5 keys (v, pause, session, state, handback) per absorbed conversation
-- ARGV: [1] expected version ('' = no check), [2] write state ('1'/'0'), [3] pause JSON ('' = none),
--       [4] pause PXAT, [5] session JSON ('' = none), [6] session PXAT, [7] state JSON,
--       [8] retain ms, [9] mark, [10] mark ms, [11] handback JSON ('' = none, '-' = unchanged),
--       [12] conversation id, [13] C, [14] R, [15] A, then C link values as read ('' = none),
--       then A absorbed versions as read
local C, R, A = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
if ARGV[1] ~= '' and (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[6]) == 1 then return 0 end
for i = 1, C do
  if (redis.call('GET', KEYS[6 + i]) or '') ~= ARGV[15 + i] then return 0 end
end
for j = 1, A do
  if (redis.call('GET', KEYS[6 + C + R + (j - 1) * 5 + 1]) or '0') ~= ARGV[15 + C + j] then return 0 end
end
if ARGV[2] == '1' then
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
  if ARGV[3] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[3], 'PXAT', ARGV[4]) end
  if ARGV[5] == '' then redis.call('DEL', KEYS[3]) else redis.call('SET', KEYS[3], ARGV[5], 'PXAT', ARGV[6]) end
  redis.call('SET', KEYS[4], ARGV[7], 'PX', ARGV[8])
  if ARGV[11] == '' then redis.call('DEL', KEYS[5])
  elseif ARGV[11] ~= '-' then redis.call('SET', KEYS[5], ARGV[11], 'PX', ARGV[8])
  else redis.call('PEXPIRE', KEYS[5], ARGV[8]) end
end
for i = 1, C + R do redis.call('SET', KEYS[6 + i], ARGV[12], 'PX', ARGV[8]) end
for j = 1, A do
  local b = 6 + C + R + (j - 1) * 5
  redis.call('DEL', KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], KEYS[b + 5])
end
redis.call('SET', KEYS[6], ARGV[9], 'PX', ARGV[10])
return 1
"#;

/// The keys the build before identity kept per conversation, read while no key of this layout
/// exists yet (single server only: they lie in other hash slots): v, pause, session, state,
/// handback, and the input's dedup mark.
const LEGACY: [&str; 6] = ["v", "pause", "session", "state", "handback", "seen"];

/// A key of the build before identity: `{ns}:{pnid:customer}:{suffix}` (`seen:{key}` for marks).
fn legacy_key(ns: &str, scope: &Scope, suffix: &str, key: &str) -> String {
    match suffix {
        "seen" => format!("{ns}:{{{scope}}}:seen:{key}"),
        _ => format!("{ns}:{{{scope}}}:{suffix}"),
    }
}

/// The handback argument of a commit whose handback did not change.
const UNCHANGED: &str = "-";

/// The conversation keys a commit writes, in the script's order.
const CONVERSATION_KEYS: [&str; 5] = ["v", "pause", "session", "state", "handback"];

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

/// What `{ns}:{pnid}:c:{id}:state` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    pause: Option<Pause>,
    #[serde(default)]
    last_reset: Option<Millis>,
    #[serde(default)]
    names: Vec<CustomerKey>,
}

/// A connection to one Redis server (or a managed primary endpoint), or to a Redis Cluster.
/// Both reconnect by themselves; the cluster's follows failovers and reloads scripts a
/// promoted replica lacks (`NOSCRIPT`: [`Script`] loads and retries).
#[derive(Clone)]
pub enum Conn {
    Server(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::Server(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Server(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// How long one command may take, and to connect: a caller that must never give up (the worker)
/// retries around the store with its own backoff; an operator command fails fast.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a commit waits for its replicas (`COEXIST_REDIS_REPLICAS`).
const WAIT_MS: u64 = 1000;

/// A [`StateStore`] in Redis, under one namespace.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    ns: String,
    /// Also read (and mark) the keys of the build before identity, so that pauses in force and
    /// unpublished events survive the upgrade. One server only: those keys lie in other slots.
    legacy: bool,
    /// Replicas that must acknowledge a commit before it counts as made (0: no `WAIT`).
    replicas: u32,
    commit: Script,
    claim: Script,
    finish: Script,
}

impl RedisStore {
    /// Connects to one server (the connection reconnects by itself afterwards).
    pub async fn connect(url: &str, namespace: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self::with_connection(Conn::Server(conn), namespace))
    }

    /// Connects to where the configuration keeps state, one server or a cluster, and waits for
    /// `replicas` acknowledgements of each commit.
    pub async fn open(target: &RedisTarget, namespace: &str, replicas: u32) -> Result<Self> {
        let mut store = match target {
            RedisTarget::Server(url) => Self::connect(url.expose(), namespace).await?,
            RedisTarget::Cluster(seeds) => {
                let client = redis::cluster::ClusterClient::builder(
                    seeds.iter().map(|s| s.expose().to_owned()),
                )
                .retries(4)
                .connection_timeout(CONNECTION_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .build()?;
                let conn = client.get_async_connection().await?;
                let mut store = Self::with_connection(Conn::Cluster(conn), namespace);
                // The previous layout's keys lie in other slots than this one's.
                store.legacy = false;
                store
            }
        };
        store.replicas = replicas;
        Ok(store)
    }

    pub fn with_connection(conn: Conn, namespace: &str) -> Self {
        RedisStore {
            conn,
            ns: namespace.to_owned(),
            legacy: true,
            replicas: 0,
            commit: Script::new(COMMIT),
            claim: Script::new(CLAIM),
            finish: Script::new(FINISH),
        }
    }

    /// Waits (at most [`WAIT_MS`]) until the configured number of replicas hold the writes made
    /// so far; a shortfall is counted and logged, and does not fail the commit.
    async fn replicated(&self) -> Result<()> {
        if self.replicas == 0 {
            return Ok(());
        }
        let acked: i64 = redis::cmd("WAIT")
            .arg(self.replicas)
            .arg(WAIT_MS)
            .query_async(&mut self.conn.clone())
            .await?;
        if acked < self.replicas as i64 {
            metrics::counter!(REPLICA_SHORTFALLS).increment(1);
            tracing::warn!(
                acked,
                wanted = self.replicas,
                "a commit reached fewer Redis replicas than COEXIST_REDIS_REPLICAS within 1 s; publishing anyway"
            );
        }
        Ok(())
    }

    /// The connection (for callers that need raw commands, e.g. tests cleaning a namespace).
    pub fn connection(&self) -> Conn {
        self.conn.clone()
    }

    /// A key of a conversation: `{ns}:{pnid}:c:{id}:{suffix}`.
    fn key(&self, scope: &Scope, suffix: &str) -> String {
        let id = scope.customer.as_ref().map_or("", |c| c.as_str());
        format!("{}:{{{}}}:c:{id}:{suffix}", self.ns, scope.phone_number_id)
    }

    /// The link of one of a customer's names: `{ns}:{pnid}:n:{name}`.
    fn link_key(&self, pnid: &str, name: &CustomerKey) -> String {
        format!("{}:{{{pnid}}}:n:{name}", self.ns)
    }

    /// The dedup mark of an input of a number: `{ns}:{pnid}:seen:{key}`.
    fn seen_key(&self, pnid: &str, key: &str) -> String {
        format!("{}:{{{pnid}}}:seen:{key}", self.ns)
    }

    fn deadlines(&self) -> String {
        format!("{}:deadlines", self.ns)
    }

    /// The keys a snapshot of `scope` reads (with the previous layout's, on one server).
    fn snapshot_keys(&self, scope: &Scope, key: &str) -> Vec<String> {
        let mut keys = vec![
            self.key(scope, "v"),
            self.key(scope, "pause"),
            self.key(scope, "session"),
            self.key(scope, "state"),
            self.key(scope, "handback"),
            self.seen_key(&scope.phone_number_id, key),
        ];
        if self.legacy {
            keys.extend(
                LEGACY
                    .iter()
                    .map(|suffix| legacy_key(&self.ns, scope, suffix, key)),
            );
        }
        keys
    }

    /// A snapshot from the values of [`RedisStore::snapshot_keys`].
    fn snapshot(
        &self,
        scope: &Scope,
        mut values: Vec<Option<String>>,
        now: Millis,
    ) -> Result<Snapshot> {
        let mut legacy = values.split_off(6);
        let mut seen = values.pop().flatten();
        let from_legacy = values.iter().all(Option::is_none) && legacy.len() == 6;
        if from_legacy {
            // Not yet in this layout: the state the build before identity kept, if any (its
            // version does not guard this layout's keys, which do not exist yet: 0).
            seen = seen.or(legacy.pop().flatten());
            values = legacy;
            values[0] = None;
        } else if legacy.len() == 6 {
            seen = seen.or(legacy.pop().flatten());
        }
        let mut fields = values.into_iter();
        let mut next = || fields.next().flatten();
        let (v, pause_key, session, stored, handback) = (next(), next(), next(), next(), next());
        let parse = |what: &str, text: &str| corrupt(&self.ns, scope, what, text);
        let stored: Stored = match stored {
            Some(s) => serde_json::from_str(&s).map_err(|e| parse("state", &e.to_string()))?,
            None => Stored::default(),
        };
        let handback: Option<Stretch> = match handback {
            Some(h) => {
                Some(serde_json::from_str(&h).map_err(|e| parse("handback", &e.to_string()))?)
            }
            None => None,
        };
        let session: Option<Session> = match session {
            Some(s) => {
                Some(serde_json::from_str(&s).map_err(|e| parse("session", &e.to_string()))?)
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
                    .map_err(|e| parse("seen", &e.to_string()))?,
            )),
        };
        let version = match v {
            Some(v) => v.parse().map_err(|_| parse("v", "not a number"))?,
            None => 0,
        };
        Ok(Snapshot {
            state: State {
                pause,
                session,
                last_reset: stored.last_reset,
                handback,
                names: stored.names,
            },
            version,
            seen,
        })
    }

    /// The pauses in force at `now`, soonest deadline first: read from the deadline set and the
    /// conversations' pause keys (never a scan of the keyspace). Each with its deadline member's
    /// conversation.
    pub async fn paused(&self, now: Millis) -> Result<Vec<(Scope, Pause)>> {
        let due: Vec<(String, f64)> = self
            .conn
            .clone()
            .zrangebyscore_withscores(self.deadlines(), format!("({}", now.0), "+inf")
            .await?;
        let members: Vec<(Scope, String)> = due
            .into_iter()
            .filter_map(|(member, _)| crate::engine::parse_deadline_member(&member))
            .collect();
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (scope, _) in &members {
            pipe.get(self.key(scope, "pause"));
            if self.legacy {
                pipe.get(legacy_key(&self.ns, scope, "pause", ""));
            }
        }
        let values: Vec<Option<String>> = pipe.query_async(&mut self.conn.clone()).await?;
        let per = if self.legacy { 2 } else { 1 };
        let mut out: Vec<(Scope, Pause)> = Vec::new();
        for ((scope, trigger), found) in members.into_iter().zip(values.chunks(per)) {
            let Some(text) = found.iter().flatten().next() else {
                continue; // released, or moved to another conversation by a merge
            };
            let pause: Pause =
                serde_json::from_str(text).map_err(|e| corrupt(&self.ns, &scope, "pause", e))?;
            // The conversation's pause in force, once (older deadlines of it are stale).
            if pause.trigger == trigger
                && pause.until > now
                && !out.iter().any(|(s, _)| *s == scope)
            {
                out.push((scope, pause));
            }
        }
        Ok(out)
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
    let (pnid, id) = scope.redacted_parts();
    Error::Corrupt {
        key: format!("{ns}:{{{pnid}}}:c:{id}:{suffix}"),
        reason: e.to_string(),
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("state always serialises")
}

impl StateStore for RedisStore {
    async fn resolve(
        &self,
        phone_number_id: &str,
        names: &[CustomerKey],
    ) -> Result<Vec<Option<CustomerKey>>> {
        let keys: Vec<String> = names
            .iter()
            .map(|n| self.link_key(phone_number_id, n))
            .collect();
        let links: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(links
            .into_iter()
            .map(|l| l.as_deref().and_then(CustomerKey::parse))
            .collect())
    }

    async fn load(&self, scope: &Scope, key: &str, now: Millis) -> Result<Snapshot> {
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(self.snapshot_keys(scope, key))
            .query_async(&mut self.conn.clone())
            .await?;
        self.snapshot(scope, values, now)
    }

    async fn resolve_and_load(
        &self,
        scope: &Scope,
        names: &[CustomerKey],
        key: &str,
        now: Millis,
    ) -> Result<(Vec<Option<CustomerKey>>, Snapshot)> {
        // One round trip: the links, and the addressed name's own conversation (the one that
        // is wanted unless a link says otherwise).
        // One MGET: the links, then the snapshot's keys.
        let mut keys: Vec<String> = names
            .iter()
            .map(|n| self.link_key(&scope.phone_number_id, n))
            .collect();
        keys.extend(self.snapshot_keys(scope, key));
        let mut values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn.clone())
            .await?;
        let snapshot = values.split_off(names.len());
        let links = values
            .into_iter()
            .map(|l| l.as_deref().and_then(CustomerKey::parse))
            .collect();
        Ok((links, self.snapshot(scope, snapshot, now)?))
    }
    async fn commit(&self, c: Commit<'_>) -> Result<Committed> {
        let pnid = &c.scope.phone_number_id;
        let id = c.scope.customer.as_ref();
        let mut inv = self.commit.prepare_invoke();
        for suffix in CONVERSATION_KEYS {
            inv.key(self.key(c.scope, suffix));
        }
        inv.key(self.seen_key(pnid, c.key));
        // Links checked as read, then the state's other names, whose links are kept alive.
        for link in c.links {
            inv.key(self.link_key(pnid, &link.name));
        }
        let refreshed: Vec<&CustomerKey> = match (c.state, id) {
            (Some(state), Some(id)) => state
                .names
                .iter()
                .filter(|n| *n != id && !c.links.iter().any(|l| l.name == **n))
                .collect(),
            _ => Vec::new(),
        };
        for name in &refreshed {
            inv.key(self.link_key(pnid, name));
        }
        for (absorbed, _) in c.absorbed {
            for suffix in CONVERSATION_KEYS {
                inv.key(self.key(absorbed, suffix));
            }
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
                        names: state.names.clone(),
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
        inv.arg(id.map_or("", |id| id.as_str()))
            .arg(c.links.len())
            .arg(refreshed.len())
            .arg(c.absorbed.len());
        for link in c.links {
            inv.arg(link.was.as_ref().map_or("", |w| w.as_str()));
        }
        for (_, version) in c.absorbed {
            inv.arg(version);
        }
        let ok: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        if ok != 1 {
            return Ok(Committed::Conflict);
        }
        self.replicated().await?;
        Ok(Committed::Yes)
    }

    async fn mark_published(&self, marks: &[(Scope, String)]) -> Result<()> {
        if marks.is_empty() {
            return Ok(());
        }
        let mark = |pipe: &mut redis::Pipeline, key: String| {
            pipe.cmd("SET").arg(key).arg(DONE).arg("XX").arg("KEEPTTL");
        };
        let mut pipe = redis::pipe();
        for (scope, key) in marks {
            mark(&mut pipe, self.seen_key(&scope.phone_number_id, key));
        }
        let marked: Vec<Option<String>> = pipe.query_async(&mut self.conn.clone()).await?;
        if self.legacy {
            // No mark in this layout: the events came from the previous build's mark.
            let mut pipe = redis::pipe();
            for ((scope, key), _) in marks.iter().zip(&marked).filter(|(_, m)| m.is_none()) {
                mark(&mut pipe, legacy_key(&self.ns, scope, "seen", key));
            }
            if !pipe.is_empty() {
                let _: Vec<Option<String>> = pipe.query_async(&mut self.conn.clone()).await?;
            }
        }
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
