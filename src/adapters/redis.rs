//! State in Redis. Every key of one business number carries the hash tag `{phone_number_id}`,
//! so a number's conversations, links and dedup marks share a slot: one script commits a
//! decision, the links it makes and a merge of conversations together (also on Redis Cluster).
//!
//! | key | holds | expiry |
//! |---|---|---|
//! | `{ns}:{pnid}:c:{id}:pause` | the pause in force (JSON) | at the pause's deadline (`PXAT`): the truth for routing |
//! | `{ns}:{pnid}:c:{id}:session` | the session (JSON) | at the end of its inactivity timeout (`PXAT`) |
//! | `{ns}:{pnid}:c:{id}:state` | the pause awaiting release, the last reset, the customer's names, the hand (R17), the customer's latest message time (JSON) | timeout + 8 days after the last change |
//! | `{ns}:{pnid}:c:{id}:v` | the version that guards commits | as `state` |
//! | `{ns}:{pnid}:c:{id}:handback` | R16: the human-handled stretch's messages for the AI agent (JSON, bounded: at most `handback_messages` texts of at most 2,000 characters) | as `state` |
//! | `{ns}:{pnid}:c:{id}:sending` | replies of the reply gate in flight to Meta (R17) | 12 s after the latest |
//! | `{ns}:{pnid}:n:{name}` | the conversation id another name of the customer is linked to | as `state` |
//! | `{ns}:{pnid}:seen:{item}` | dedup mark: events not yet published, or `done` | 8 days |
//! | `{ns}:deadlines` | sorted set of pause deadlines (`{pnid}:{id}\|{trigger}` by instant) | none |
//!
//! `{id}` is the conversation's id: the first name the customer was known by (digits, or a
//! business-scoped user id). A commit checks the conversation's version, the links it read and
//! the versions of conversations it merges, so the read-decide-write of
//! [`crate::core::apply::Applier::apply`] is atomic across processes. Deleting the `pause` key by hand
//! releases the pause (routing follows the TTL).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{AsyncCommands, RedisFuture, Script};
use serde::{Deserialize, Serialize};

use crate::core::domain::{CustomerKey, Scope};
use crate::core::engine::event::Outbound;
use crate::core::engine::state::{Pause, Session, State, Stretch};
use crate::core::engine::Deadline;
use crate::core::store::{
    Claim, Commit, Committed, Error, Result, Seen, Snapshot, StateStore, DEDUP_RETENTION,
};
use crate::core::time::Millis;
use crate::runtime::metrics::{REPLICAS_SHORT, REPLICA_SHORTFALLS, REPLICA_WAITS_SKIPPED};
use crate::runtime::secret::Secret;

const DONE: &str = "done";

/// The commit: one script, reading its arguments by name. ARGV[1] is [`CommitArgs`] as JSON
/// (every key it names is also passed in KEYS, which route it and declare what it touches);
/// ARGV[2] is the value of the input's dedup mark (`done`, or the events still to publish), apart
/// so that the events' JSON is not escaped into the arguments' JSON.
const COMMIT: &str = r#"
local c = cjson.decode(ARGV[1])
local conv = c.conversation
-- Checks: the version read, no mark yet, every link as read, every absorbed version as read.
if c.expect and (redis.call('GET', conv.v) or '0') ~= c.expect then return 0 end
if redis.call('EXISTS', c.seen) == 1 then return 0 end
for _, l in ipairs(c.links) do
  if (redis.call('GET', l.key) or '') ~= l.was then return 0 end
end
for _, a in ipairs(c.absorbed) do
  if (redis.call('GET', a.keys.v) or '0') ~= a.version then return 0 end
end
local w = c.write
if w then
  redis.call('INCR', conv.v)
  redis.call('PEXPIRE', conv.v, c.retain)
  if w.pause then redis.call('SET', conv.pause, w.pause, 'PXAT', w.pause_at) else redis.call('DEL', conv.pause) end
  if w.session then redis.call('SET', conv.session, w.session, 'PXAT', w.session_at) else redis.call('DEL', conv.session) end
  redis.call('SET', conv.state, w.state, 'PX', c.retain)
  if w.handback_unchanged then redis.call('PEXPIRE', conv.handback, c.retain)
  elseif w.handback then redis.call('SET', conv.handback, w.handback, 'PX', c.retain)
  else redis.call('DEL', conv.handback) end
end
for _, l in ipairs(c.links) do redis.call('SET', l.key, c.id, 'PX', c.retain) end
for _, k in ipairs(c.refresh) do redis.call('SET', k, c.id, 'PX', c.retain) end
for _, a in ipairs(c.absorbed) do
  redis.call('DEL', a.keys.v, a.keys.pause, a.keys.session, a.keys.state, a.keys.handback)
end
redis.call('SET', c.seen, ARGV[2], 'PX', c.seen_ms)
return 1
"#;

/// A conversation's keys, by name.
#[derive(Debug, Serialize)]
struct ConversationKeys {
    v: String,
    pause: String,
    session: String,
    state: String,
    handback: String,
}

impl ConversationKeys {
    fn all(&self) -> [&String; 5] {
        [
            &self.v,
            &self.pause,
            &self.session,
            &self.state,
            &self.handback,
        ]
    }
}

/// The commit script's arguments (ARGV[1]), named as the script reads them. Numbers travel as
/// strings: Lua would print large ones in exponent form.
#[derive(Debug, Serialize)]
struct CommitArgs {
    conversation: ConversationKeys,
    /// The version read (absent: the decision read no state, no check).
    #[serde(skip_serializing_if = "Option::is_none")]
    expect: Option<String>,
    /// The new state (absent: unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    write: Option<Write>,
    /// How long the conversation's keys and links live after this change, ms.
    retain: String,
    /// The input's dedup mark, and how long it lives (ms).
    seen: String,
    seen_ms: String,
    /// The conversation's id: what its links point to.
    id: String,
    /// Links checked as read, then pointed at this conversation.
    links: Vec<CheckedLink>,
    /// The state's other names' links, kept alive.
    refresh: Vec<String>,
    /// Conversations merged into this one: deleted if still at the version read.
    absorbed: Vec<Absorbed>,
}

/// The state a commit writes.
#[derive(Debug, Serialize)]
struct Write {
    /// The pause in force (JSON) and its deadline; absent: none (the key is deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pause: Option<String>,
    pause_at: String,
    /// The live session (JSON) and its end; absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    session_at: String,
    /// What `state` holds ([`Stored`]).
    state: String,
    /// R16's stretch (JSON); absent: none, unless `handback_unchanged`.
    #[serde(skip_serializing_if = "Option::is_none")]
    handback: Option<String>,
    handback_unchanged: bool,
}

#[derive(Debug, Serialize)]
struct CheckedLink {
    key: String,
    /// The conversation it pointed at when read ('' for none).
    was: String,
}

#[derive(Debug, Serialize)]
struct Absorbed {
    keys: ConversationKeys,
    version: String,
}

impl CommitArgs {
    /// Every key the arguments name, the conversation's first (EVALSHA routes by the first key).
    fn keys(&self) -> Vec<&String> {
        let mut keys: Vec<&String> = self.conversation.all().to_vec();
        keys.push(&self.seen);
        keys.extend(self.links.iter().map(|l| &l.key));
        keys.extend(self.refresh.iter());
        for a in &self.absorbed {
            keys.extend(a.keys.all());
        }
        keys
    }
}

/// A reply about to go through the gate (R17): resolves the customer's name, reads the
/// conversation, and, unless a pause is in force, marks one reply in flight, all at once. A
/// worker that commits a pause waits for the replies in flight before it publishes the handover
/// ([`RedisStore::replies_settled`]): a reply checked before the pause reaches Meta before the
/// handover is published, and one checked after is refused.
const HOLD_FOR_REPLY: &str = r#"
-- KEYS: the name's link; the conversation's pause, session, state, sending
-- ARGV[1]: the conversation id the caller assumes; ARGV[2]: how long the in-flight mark lives, ms
local link = redis.call('GET', KEYS[1])
if link and link ~= ARGV[1] then return {'moved', link} end
local pause = redis.call('GET', KEYS[2])
local session = redis.call('GET', KEYS[3]) or ''
local state = redis.call('GET', KEYS[4]) or ''
if pause then return {'held', pause, session, state} end
redis.call('INCR', KEYS[5])
redis.call('PEXPIRE', KEYS[5], ARGV[2])
return {'free', '', session, state}
"#;

/// How long a reply's in-flight mark lives at most: longer than the gate waits for Meta, so a
/// gate that dies mid-send holds a handover back this long at worst.
pub const REPLY_IN_FLIGHT: Duration = Duration::from_secs(12);

/// A conversation as the gate found it.
#[derive(Debug)]
pub struct ForReply {
    /// The conversation (its number and id).
    pub scope: Scope,
    /// Its state now (the pause from its key: the truth for routing).
    pub state: State,
    /// Whether a reply was marked in flight (no pause in force): release it with
    /// [`RedisStore::reply_done`] once Meta answered or the reply was refused after all.
    pub in_flight: bool,
}

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
    #[serde(default)]
    hand: u64,
    #[serde(default)]
    last_customer_at: Option<Millis>,
}

/// Where state lives: `COEXIST_REDIS_CLUSTER` when set, else `COEXIST_REDIS_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server, or a managed primary endpoint.
    Server(Secret),
    /// Seed URLs of a Redis Cluster.
    Cluster(Vec<Secret>),
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
/// While replicas are short, how often a commit probes whether they acknowledge again, and how
/// long that probe waits.
const PROBE_EVERY: Duration = Duration::from_secs(5);
const PROBE_MS: u64 = 100;

/// Since when replicas have been short, and when they were last probed.
#[derive(Debug, Clone, Copy)]
struct Short {
    since: std::time::Instant,
    probed: std::time::Instant,
}

/// A [`StateStore`] in Redis, under one namespace.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    ns: String,
    /// Replicas that must acknowledge a commit before it counts as made (0: no `WAIT`).
    replicas: u32,
    /// Set while replicas fall short (shared by every clone of the store).
    short: std::sync::Arc<std::sync::Mutex<Option<Short>>>,
    commit: Script,
    claim: Script,
    finish: Script,
    hold: Script,
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
                Self::with_connection(Conn::Cluster(conn), namespace)
            }
        };
        store.replicas = replicas;
        Ok(store)
    }

    /// [`open`](Self::open) for a process starting up: retried until Redis answers, or until
    /// `stop` is cancelled or the retries give up (then one line saying why).
    pub async fn open_until(
        target: &RedisTarget,
        namespace: &str,
        replicas: u32,
        stop: &tokio_util::sync::CancellationToken,
    ) -> std::io::Result<Self> {
        use crate::runtime::retry::{until_ok, Stopped};
        let opened = until_ok(
            "connecting to Redis",
            stop,
            |_, _| false,
            || Self::open(target, namespace, replicas),
        )
        .await;
        opened.map_err(|stopped| {
            std::io::Error::other(match stopped {
                Stopped::GaveUp { error, .. } => format!("Redis: {error}"),
                Stopped::Interrupted => "Redis: stopped before it answered".to_owned(),
            })
        })
    }

    pub fn with_connection(conn: Conn, namespace: &str) -> Self {
        RedisStore {
            conn,
            ns: namespace.to_owned(),
            replicas: 0,
            short: Default::default(),
            commit: Script::new(COMMIT),
            claim: Script::new(CLAIM),
            finish: Script::new(FINISH),
            hold: Script::new(HOLD_FOR_REPLY),
        }
    }

    /// Waits (at most [`WAIT_MS`]) until the configured number of replicas hold the writes made
    /// so far; a shortfall is counted and logged, and does not fail the commit.
    ///
    /// After a shortfall (a primary failed over and its replacement has no replica yet) the
    /// store stops waiting: every commit would otherwise wait the full second, and a number's
    /// items would crawl. It probes instead, once every [`PROBE_EVERY`], with a short `WAIT`;
    /// when the replicas acknowledge again, it waits again. While short, each commit skipped is
    /// counted (`coexist_redis_replica_waits_skipped_total`), the gauge
    /// `coexist_redis_replicas_short` is 1 and the worker's `/readyz` says so (docs/deploy.md,
    /// the trade-off).
    async fn replicated(&self) -> Result<()> {
        if self.replicas == 0 {
            return Ok(());
        }
        let probe = {
            let mut short = self.short.lock().expect("replica state");
            match short.as_mut() {
                None => None,
                Some(s) if s.probed.elapsed() >= PROBE_EVERY => {
                    s.probed = std::time::Instant::now();
                    Some(PROBE_MS)
                }
                Some(_) => {
                    metrics::counter!(REPLICA_WAITS_SKIPPED).increment(1);
                    return Ok(());
                }
            }
        };
        let wait = probe.unwrap_or(WAIT_MS);
        let acked: i64 = redis::cmd("WAIT")
            .arg(self.replicas)
            .arg(wait)
            .query_async(&mut self.conn.clone())
            .await?;
        let enough = acked >= self.replicas as i64;
        let mut short = self.short.lock().expect("replica state");
        match (enough, short.is_some()) {
            (true, true) => {
                *short = None;
                metrics::gauge!(REPLICAS_SHORT).set(0.0);
                tracing::info!(
                    acked,
                    "Redis replicas acknowledge commits again: waiting for them again"
                );
            }
            (false, false) => {
                metrics::counter!(REPLICA_SHORTFALLS).increment(1);
                metrics::gauge!(REPLICAS_SHORT).set(1.0);
                *short = Some(Short {
                    since: std::time::Instant::now(),
                    probed: std::time::Instant::now(),
                });
                tracing::warn!(
                    acked,
                    wanted = self.replicas,
                    "a commit reached fewer Redis replicas than COEXIST_REDIS_REPLICAS within 1 s: publishing without waiting until they acknowledge again (probed every 5 s)"
                );
            }
            (false, true) => metrics::counter!(REPLICA_SHORTFALLS).increment(1),
            (true, false) => {}
        }
        Ok(())
    }

    /// Why commits do not wait for replicas now (`None`: they do, or none is asked for).
    pub fn replicas_short(&self) -> Option<String> {
        let short = self.short.lock().expect("replica state");
        short.as_ref().map(|s| {
            format!(
                "fewer than {} replica(s) acknowledge commits, for {} s: publishing without waiting, probing every {} s",
                self.replicas,
                s.since.elapsed().as_secs(),
                PROBE_EVERY.as_secs()
            )
        })
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

    /// The keys a snapshot of `scope` reads: the conversation's, then the input's dedup mark.
    fn snapshot_keys(&self, scope: &Scope, key: &str) -> [String; 6] {
        let c = self.conversation_keys(scope);
        [
            c.v,
            c.pause,
            c.session,
            c.state,
            c.handback,
            self.seen_key(&scope.phone_number_id, key),
        ]
    }

    /// A conversation's keys, by name.
    fn conversation_keys(&self, scope: &Scope) -> ConversationKeys {
        ConversationKeys {
            v: self.key(scope, "v"),
            pause: self.key(scope, "pause"),
            session: self.key(scope, "session"),
            state: self.key(scope, "state"),
            handback: self.key(scope, "handback"),
        }
    }

    /// A snapshot from the values of [`RedisStore::snapshot_keys`].
    fn snapshot(
        &self,
        scope: &Scope,
        values: Vec<Option<String>>,
        now: Millis,
    ) -> Result<Snapshot> {
        let mut fields = values.into_iter();
        let mut next = || fields.next().flatten();
        let (v, pause_key, session, stored, handback) = (next(), next(), next(), next(), next());
        let seen = next();
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
                hand: stored.hand,
                last_customer_at: stored.last_customer_at,
            },
            version,
            seen,
        })
    }

    /// The pauses in force at `now`, soonest deadline first: read from the deadline set and the
    /// conversations' pause keys (never a scan of the keyspace).
    pub async fn paused(&self, now: Millis) -> Result<Vec<(Scope, Pause)>> {
        let due: Vec<(String, f64)> = self
            .conn
            .clone()
            .zrangebyscore_withscores(self.deadlines(), format!("({}", now.0), "+inf")
            .await?;
        let deadlines: Vec<Deadline> = due
            .iter()
            .filter_map(|(member, _)| parse_member(member))
            .collect();
        if deadlines.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for d in &deadlines {
            pipe.get(self.key(&d.scope, "pause"));
        }
        let values: Vec<Option<String>> = pipe.query_async(&mut self.conn.clone()).await?;
        let mut out: Vec<(Scope, Pause)> = Vec::new();
        for (d, found) in deadlines.into_iter().zip(values) {
            let Some(text) = found else {
                continue; // released, or moved to another conversation by a merge
            };
            let pause: Pause =
                serde_json::from_str(&text).map_err(|e| corrupt(&self.ns, &d.scope, "pause", e))?;
            // The conversation's pause in force, once (older deadlines of it are stale).
            if pause.trigger == d.trigger
                && pause.until > now
                && !out.iter().any(|(s, _)| *s == d.scope)
            {
                out.push((d.scope, pause));
            }
        }
        Ok(out)
    }

    /// The conversation a customer's `name` belongs to in a number, read for a reply about to
    /// go through the gate; a reply is marked in flight unless a pause is in force.
    pub async fn hold_for_reply(
        &self,
        phone_number_id: &str,
        name: &CustomerKey,
        now: Millis,
    ) -> Result<ForReply> {
        let link = self.link_key(phone_number_id, name);
        let mut id = name.clone();
        for _ in 0..2 {
            let scope = Scope::conversation(phone_number_id, id.clone());
            let c = self.conversation_keys(&scope);
            let answer: Vec<String> = self
                .hold
                .key(&link)
                .key(&c.pause)
                .key(&c.session)
                .key(&c.state)
                .key(self.key(&scope, "sending"))
                .arg(id.as_str())
                .arg(REPLY_IN_FLIGHT.as_millis() as u64)
                .invoke_async(&mut self.conn.clone())
                .await?;
            let mut answer = answer.into_iter();
            let (what, pause, session, state) = (
                answer.next().unwrap_or_default(),
                answer.next(),
                answer.next(),
                answer.next(),
            );
            if what == "moved" {
                let Some(to) = pause.as_deref().and_then(CustomerKey::parse) else {
                    return Err(corrupt(&self.ns, &scope, "link", "not a customer"));
                };
                id = to;
                continue;
            }
            let some = |v: Option<String>| v.filter(|v| !v.is_empty());
            let values = vec![None, some(pause), some(session), some(state), None, None];
            let snapshot = self.snapshot(&scope, values, now)?;
            return Ok(ForReply {
                scope,
                state: snapshot.state,
                in_flight: what == "free",
            });
        }
        Err(Error::Contention(
            format!("{phone_number_id}: a link that keeps moving"),
            2,
        ))
    }

    /// A reply marked in flight by [`RedisStore::hold_for_reply`] is done (sent, failed or
    /// refused).
    pub async fn reply_done(&self, scope: &Scope) -> Result<()> {
        let _: i64 = self
            .conn
            .clone()
            .decr(self.key(scope, "sending"), 1)
            .await?;
        Ok(())
    }

    /// Waits until no reply of the gate is in flight for the conversation (at most
    /// [`REPLY_IN_FLIGHT`]): called after a pause is committed, before its handover is published.
    pub async fn replies_settled(&self, scope: &Scope) -> Result<()> {
        let key = self.key(scope, "sending");
        let deadline = tokio::time::Instant::now() + REPLY_IN_FLIGHT;
        loop {
            let n: Option<i64> = self.conn.clone().get(&key).await?;
            if n.unwrap_or(0) <= 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("a reply stayed in flight past its bound; publishing the handover");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
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
            .arg(&self.snapshot_keys(scope, key))
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
        let retain = c.retain.as_millis().to_string();
        // The state's other names, beside the links checked as read: their links are kept alive.
        let refresh: Vec<String> = match (c.state, id) {
            (Some(state), Some(id)) => state
                .names
                .iter()
                .filter(|n| *n != id && !c.links.iter().any(|l| l.name == **n))
                .map(|n| self.link_key(pnid, n))
                .collect(),
            _ => Vec::new(),
        };
        let write = c.state.map(|state| {
            let live_pause = state.pause.as_ref().filter(|p| p.until > c.now);
            let live_session = state.session.as_ref().filter(|s| s.expires > c.now);
            Write {
                pause: live_pause.map(json),
                pause_at: live_pause.map_or(0, |p| p.until.0).to_string(),
                session: live_session.map(json),
                session_at: live_session.map_or(0, |s| s.expires.0).to_string(),
                state: json(&Stored {
                    pause: state.pause.clone(),
                    last_reset: state.last_reset,
                    names: state.names.clone(),
                    hand: state.hand,
                    last_customer_at: state.last_customer_at,
                }),
                handback: state.handback.as_ref().map(json),
                handback_unchanged: !c.handback_changed,
            }
        });
        let args = CommitArgs {
            conversation: self.conversation_keys(c.scope),
            expect: c.expected_version.map(|v| v.to_string()),
            write,
            retain,
            seen: self.seen_key(pnid, c.key),
            seen_ms: DEDUP_RETENTION.as_millis().to_string(),
            id: id.map_or("", |id| id.as_str()).to_owned(),
            links: c
                .links
                .iter()
                .map(|l| CheckedLink {
                    key: self.link_key(pnid, &l.name),
                    was: l.was.as_ref().map_or("", |w| w.as_str()).to_owned(),
                })
                .collect(),
            refresh,
            absorbed: c
                .absorbed
                .iter()
                .map(|(scope, version)| Absorbed {
                    keys: self.conversation_keys(scope),
                    version: version.to_string(),
                })
                .collect(),
        };
        let mut inv = self.commit.prepare_invoke();
        for key in args.keys() {
            inv.key(key);
        }
        inv.arg(json(&args));
        match c.seen {
            Seen::Done => inv.arg(DONE),
            Seen::Pending(events) => inv.arg(json(events)),
        };
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
        let _: Vec<Option<String>> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    async fn schedule(&self, deadline: &Deadline, at: Millis) -> Result<()> {
        let _: i64 = self
            .conn
            .clone()
            .zadd(self.deadlines(), member(deadline), at.0)
            .await?;
        Ok(())
    }

    async fn unschedule(&self, deadline: &Deadline) -> Result<()> {
        let _: i64 = self
            .conn
            .clone()
            .zrem(self.deadlines(), member(deadline))
            .await?;
        Ok(())
    }

    async fn claim_due(&self, now: Millis, lease: Duration, limit: usize) -> Result<Vec<Claim>> {
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

    async fn finish_claim(&self, claim: &Claim) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn keys(prefix: &str) -> ConversationKeys {
        ConversationKeys {
            v: format!("{prefix}:v"),
            pause: format!("{prefix}:pause"),
            session: format!("{prefix}:session"),
            state: format!("{prefix}:state"),
            handback: format!("{prefix}:handback"),
        }
    }

    /// Every argument with every optional part present.
    fn full() -> CommitArgs {
        CommitArgs {
            conversation: keys("c"),
            expect: Some("3".into()),
            write: Some(Write {
                pause: Some("{}".into()),
                pause_at: "1".into(),
                session: Some("{}".into()),
                session_at: "1".into(),
                state: "{}".into(),
                handback: Some("{}".into()),
                handback_unchanged: false,
            }),
            retain: "1".into(),
            seen: "seen".into(),
            seen_ms: "1".into(),
            id: "id".into(),
            links: vec![CheckedLink {
                key: "n:a".into(),
                was: String::new(),
            }],
            refresh: vec!["n:b".into()],
            absorbed: vec![Absorbed {
                keys: keys("x"),
                version: "1".into(),
            }],
        }
    }

    /// The names the script reads from each table it decodes: `c.name`, `w.name`, ...
    fn read_by_script(table: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let pattern = format!("{table}.");
        for (i, _) in COMMIT.match_indices(&pattern) {
            let before = COMMIT[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                continue; // part of a longer name (`a.keys.v` read as `keys.`)
            }
            let name: String = COMMIT[i + pattern.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
        names
    }

    fn fields(v: &serde_json::Value) -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn the_commit_script_reads_every_argument_by_the_name_it_is_written_under() {
        let args = serde_json::to_value(full()).unwrap();
        // Tables as the script names them, and what the Rust side writes there.
        let tables = [
            ("c", &args),
            ("conv", &args["conversation"]),
            ("w", &args["write"]),
            ("l", &args["links"][0]),
            ("a", &args["absorbed"][0]),
            ("a.keys", &args["absorbed"][0]["keys"]),
        ];
        for (table, written) in tables {
            let mut read = read_by_script(table);
            if table == "a" {
                read.remove("keys"); // read through `a.keys.*`
                read.insert("keys".into());
            }
            assert_eq!(read, fields(written), "table `{table}`");
        }
        // Every key named in the arguments is declared in KEYS, the conversation's first.
        let full = full();
        let declared: Vec<&String> = full.keys();
        assert_eq!(declared[0], "c:v");
        for key in [
            "c:v",
            "c:handback",
            "seen",
            "n:a",
            "n:b",
            "x:v",
            "x:handback",
        ] {
            assert!(declared.iter().any(|k| *k == key), "{key} declared");
        }
        assert_eq!(declared.len(), 5 + 1 + 1 + 1 + 5);
    }
}
