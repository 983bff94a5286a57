//! Engines over each store (memory, Redis, Redis Cluster) and the events they decide.

use std::sync::Arc;

use super::*;
use coexist::adapters::redis::RedisStore;
use coexist::core::apply::{Applied, Applier};
use coexist::core::engine::input::Item;
use coexist::core::engine::Input;
use coexist::core::engine::RuleBook;
use coexist::core::meta::parse_body;
use coexist::core::store::memory::MemoryStore;
use coexist::core::store::StateStore;
use coexist::core::time::Millis;
use serde_json::Value;

pub fn book(rules: impl Into<RuleBook>) -> Arc<RuleBook> {
    Arc::new(rules.into())
}

/// An engine over memory, with `rules` for every number (or a [`RuleBook`]).
pub fn memory_engine(rules: impl Into<RuleBook>) -> Applier<MemoryStore> {
    Applier::new(MemoryStore::new(), book(rules))
}

/// An engine over the real Redis, in a namespace of its own (deleted with the guard).
pub async fn redis_engine(
    name: &str,
    rules: impl Into<RuleBook>,
) -> (Applier<RedisStore>, NsGuard) {
    let ns = unique_ns(name);
    let store = RedisStore::connect(&redis_url(), &ns)
        .await
        .expect("Redis on 127.0.0.1:6379 (scripts/test starts it)");
    (Applier::new(store, book(rules)), NsGuard(ns))
}

/// Runs a scenario `async fn name<S: StateStore>(e: &Applier<S>, t: i64)` against both stores:
/// memory, and Redis in a namespace of its own. The rules default to [`Rules::default`].
macro_rules! both {
    ($name:ident) => {
        both!($name, coexist::core::engine::Rules::default());
    };
    ($name:ident, $rules:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn memory() {
                super::$name(&memory_engine($rules), t0()).await;
            }
            #[tokio::test]
            async fn redis() {
                let (engine, _ns) = redis_engine(stringify!($name), $rules).await;
                super::$name(&engine, t0()).await;
            }
            #[tokio::test]
            #[ignore = "needs the Redis Cluster of scripts/cluster: scripts/test runs it"]
            async fn redis_cluster() {
                let (engine, _ns) = cluster_engine(stringify!($name), $rules).await;
                super::$name(&engine, t0()).await;
            }
        }
    };
}

/// The seed URLs of the test Redis Cluster (`scripts/cluster up`).
pub fn redis_cluster_seeds() -> Vec<String> {
    let seeds = std::env::var("COEXIST_TEST_REDIS_CLUSTER")
        .expect("COEXIST_TEST_REDIS_CLUSTER: start the clusters with scripts/cluster up, and export what it prints");
    seeds.split(',').map(str::to_owned).collect()
}

/// An engine over the test Redis Cluster, in a namespace of its own (deleted with the guard).
pub async fn cluster_engine(
    name: &str,
    rules: impl Into<RuleBook>,
) -> (Applier<RedisStore>, ClusterNsGuard) {
    let ns = unique_ns(name);
    let store = cluster_store(&ns, 0).await;
    (Applier::new(store, book(rules)), ClusterNsGuard(ns))
}

/// A store on the test Redis Cluster.
pub async fn cluster_store(ns: &str, replicas: u32) -> RedisStore {
    let seeds = redis_cluster_seeds()
        .into_iter()
        .map(coexist::runtime::secret::Secret::new)
        .collect();
    RedisStore::open(
        &coexist::adapters::redis::RedisTarget::Cluster(seeds),
        ns,
        replicas,
    )
    .await
    .expect("the Redis Cluster of scripts/cluster")
}

/// Deletes a namespace's keys on the test Redis Cluster when dropped.
pub struct ClusterNsGuard(pub String);

impl Drop for ClusterNsGuard {
    fn drop(&mut self) {
        let ns = self.0.clone();
        let _ = std::thread::spawn(move || {
            let Ok(client) = redis::cluster::ClusterClient::new(redis_cluster_seeds()) else {
                return;
            };
            let Ok(mut c) = client.get_connection() else {
                return;
            };
            // KEYS goes to every primary; keys of many slots are deleted one by one.
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{ns}:*"))
                .query(&mut c)
                .unwrap_or_default();
            for k in keys {
                let _: Result<i64, _> = redis::cmd("DEL").arg(k).query(&mut c);
            }
        })
        .join();
    }
}

/// Applies every item of a body at `now` (seconds), publishes nothing, acknowledges each.
/// Returns the events as (exchange, type, body).
pub async fn feed<S: StateStore>(engine: &Applier<S>, body: &str, now: i64) -> Vec<Ev> {
    let mut out = Vec::new();
    for applied in apply_body(engine, body, now).await {
        engine.acknowledge(&applied).await.unwrap();
        out.extend(events(&applied));
    }
    out
}

/// Applies every item of a body without acknowledging.
pub async fn apply_body<S: StateStore>(engine: &Applier<S>, body: &str, now: i64) -> Vec<Applied> {
    let items: Vec<Item> = parse_body(body.as_bytes()).expect("a webhook").items;
    let mut out = Vec::new();
    for item in &items {
        out.push(
            engine
                .apply(&Input::Item(item), Millis::from_secs(now))
                .await
                .unwrap(),
        );
    }
    out
}

/// Releases due deadlines at `now` (seconds), acknowledging them.
pub async fn sweep<S: StateStore>(engine: &Applier<S>, now: i64) -> Vec<Ev> {
    let mut out = Vec::new();
    for applied in engine
        .release_due(Millis::from_secs(now), 100)
        .await
        .unwrap()
    {
        engine.acknowledge(&applied).await.unwrap();
        out.extend(events(&applied));
    }
    out
}

/// An event as tests look at it.
#[derive(Debug, Clone)]
pub struct Ev {
    pub exchange: String,
    pub kind: String,
    pub conversation: String,
    pub body: Value,
}

impl Ev {
    pub fn is(&self, exchange: &str, kind: &str) -> bool {
        self.exchange == exchange && self.kind == kind
    }
    pub fn session(&self) -> Option<&str> {
        self.body["session_id"].as_str()
    }
    pub fn text(&self) -> Option<&str> {
        self.body["message"]["text"].as_str()
    }
}

pub fn events(applied: &Applied) -> Vec<Ev> {
    applied
        .events
        .iter()
        .map(|o| {
            let body: Value = serde_json::from_str(&o.event.to_json()).unwrap();
            assert_matches_schema(&body);
            assert_eq!(body["type"].as_str(), Some(o.event.name()), "type");
            assert_eq!(
                body["event_id"].as_str(),
                Some(o.event.event_id.as_str()),
                "event_id"
            );
            Ev {
                exchange: o.exchange.as_str().to_owned(),
                kind: o.event.name().to_owned(),
                conversation: o.conversation.clone(),
                body,
            }
        })
        .collect()
}

/// Fails unless `event` is valid against `docs/events.schema.json` (every event the tests see
/// goes through here: the schema is checked against what the engine really publishes).
pub fn assert_matches_schema(event: &Value) {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        let schema: Value =
            serde_json::from_str(include_str!("../../../docs/events.schema.json")).unwrap();
        jsonschema::draft202012::new(&schema).expect("docs/events.schema.json is a schema")
    });
    if let Err(e) = validator.validate(event) {
        panic!("an event that docs/events.schema.json refuses ({e}): {event}");
    }
}

/// The (exchange, type) pairs of a list of events.
pub fn kinds(evs: &[Ev]) -> Vec<(String, String)> {
    evs.iter()
        .map(|e| (e.exchange.clone(), e.kind.clone()))
        .collect()
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}
