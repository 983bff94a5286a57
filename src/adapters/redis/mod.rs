//! State in Redis ([`RedisStore`]); the commit script is in [`commit`], the reply gate's keys in
//! [`reply`], the deadline schedule in [`deadlines`], the number registry in [`numbers`], the
//! partition layout's record in [`partitions`].
//!
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
//! | `{ns}:{pnid}:c:{id}:trail` | why: the latest `trail_entries` decisions explained (JSON each, oldest first), written by the commit with the decision, and the gate's refusals and sends | as `state` (from its latest entry) |
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

pub(crate) mod commit;
pub(crate) mod deadlines;
pub(crate) mod numbers;
pub mod partitions;
pub(crate) mod reply;

pub use deadlines::PageCursor;
pub use numbers::Added;
pub use reply::{ForReply, REPLY_IN_FLIGHT};

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{AsyncCommands, RedisFuture, Script};
use serde::{Deserialize, Serialize};

use crate::core::domain::{CustomerKey, Scope};
use crate::core::engine::event::Outbound;
use crate::core::engine::state::{Pause, Session, State, Stretch};
use crate::core::engine::Deadline;
use crate::core::store::{Claim, Commit, Committed, Error, Result, Seen, Snapshot, StateStore};
use crate::core::time::Millis;
use crate::runtime::metrics::{REPLICAS_SHORT, REPLICA_SHORTFALLS, REPLICA_WAITS_SKIPPED};
use crate::runtime::secret::Secret;

const DONE: &str = "done";

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
    done: Script,
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
            commit: Script::new(commit::COMMIT),
            claim: Script::new(deadlines::CLAIM),
            finish: Script::new(deadlines::FINISH),
            hold: Script::new(reply::HOLD_FOR_REPLY),
            done: Script::new(reply::REPLY_DONE),
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

    /// Aligns `clock` with Redis's own (`TIME`): the clock that expires pause keys. The
    /// reading is taken as of the middle of the round trip.
    pub async fn align(&self, clock: &crate::core::time::Clock) -> Result<()> {
        let before = clock.reading_now();
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut self.conn.clone())
            .await?;
        let after = clock.reading_now();
        let server = Millis(secs * 1000 + micros / 1000);
        clock.align(server, Millis(before.0 + (after.0 - before.0) / 2));
        Ok(())
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

impl RedisStore {
    /// The latest `n` trail entries of each conversation, in one round trip (oldest first each).
    pub async fn trails_tail(
        &self,
        scopes: &[Scope],
        n: usize,
    ) -> Result<Vec<Vec<crate::core::engine::why::TrailEntry>>> {
        if scopes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for scope in scopes {
            pipe.lrange(self.key(scope, "trail"), -(n as isize), -1);
        }
        let raw: Vec<Vec<String>> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(raw
            .iter()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| serde_json::from_str(e).ok())
                    .collect()
            })
            .collect())
    }

    /// Adds an entry to a conversation's trail outside a commit (the reply gate's judgements),
    /// keeping the latest `keep`, alive for `retain`.
    pub async fn trail_add(
        &self,
        scope: &Scope,
        entry: &crate::core::engine::why::TrailEntry,
        keep: usize,
        retain: Duration,
    ) -> Result<()> {
        let key = self.key(scope, "trail");
        redis::pipe()
            .atomic()
            .rpush(&key, json(entry))
            .ignore()
            .ltrim(&key, -(keep as isize), -1)
            .ignore()
            .pexpire(&key, retain.as_millis() as i64)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }
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

    async fn trail(&self, scope: &Scope) -> Result<Vec<crate::core::engine::why::TrailEntry>> {
        let raw: Vec<String> = self
            .conn
            .clone()
            .lrange(self.key(scope, "trail"), 0, -1)
            .await?;
        Ok(raw
            .iter()
            .filter_map(|e| serde_json::from_str(e).ok())
            .collect())
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

    async fn commit(&self, c: Commit<'_>) -> Result<Committed> {
        self.commit_decision(c).await
    }

    async fn schedule(&self, deadline: &Deadline, at: Millis) -> Result<()> {
        self.schedule_deadline(deadline, at).await
    }

    async fn unschedule(&self, deadline: &Deadline) -> Result<()> {
        self.unschedule_deadline(deadline).await
    }

    async fn claim_due(&self, now: Millis, lease: Duration, limit: usize) -> Result<Vec<Claim>> {
        self.claim_deadlines(now, lease, limit).await
    }

    async fn finish_claim(&self, claim: &Claim) -> Result<()> {
        self.finish_deadline_claim(claim).await
    }
}
