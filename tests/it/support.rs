//! Helpers: webhook bodies in Meta's shape, engines over each store, per-test Redis namespaces.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coexist::apply::{Applied, Applier};
use coexist::engine::input::Item;
use coexist::engine::Input;
use coexist::engine::RuleBook;
use coexist::meta::parse_body;
use coexist::store::memory::MemoryStore;
use coexist::store::redis::RedisStore;
use coexist::store::StateStore;
use coexist::time::Millis;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const PNID: &str = "410000000000088";
pub const WABA: &str = "310000000000077";
pub const BUSINESS: &str = "5215550009999";
pub const ANA: &str = "5215551230001";
pub const LUIS: &str = "5215551230002";

pub fn redis_url() -> String {
    std::env::var("COEXIST_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A namespace no other test uses.
pub fn unique_ns(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "test-{name}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deletes every key of a namespace when dropped.
pub struct NsGuard(pub String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.0))
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}

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
        both!($name, coexist::engine::Rules::default());
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
        .map(coexist::secret::Secret::new)
        .collect();
    RedisStore::open(
        &coexist::store::redis::RedisTarget::Cluster(seeds),
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

/// Now, in whole seconds (Meta's timestamps are seconds).
pub fn t0() -> i64 {
    Millis::now().0 / 1000
}

pub fn envelope(field: &str, value: Value) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": [{"value": value, "field": field}]}]}).to_string()
}

pub fn metadata() -> Value {
    json!({"display_phone_number": BUSINESS, "phone_number_id": PNID})
}

/// A customer message of any type: `content` is the type's object.
pub fn customer_msg(from: &str, wamid: &str, ts: i64, kind: &str, content: Value) -> String {
    let mut m = json!({"from": from, "id": wamid, "timestamp": ts.to_string(), "type": kind});
    m[kind] = content;
    envelope(
        "messages",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
               "contacts": [{"profile": {"name": "Ana Ruiz"}, "wa_id": from}], "messages": [m]}),
    )
}

pub fn customer_text(from: &str, wamid: &str, ts: i64, body: &str) -> String {
    customer_msg(from, wamid, ts, "text", json!({"body": body}))
}

pub fn echo_msg(to: &str, wamid: &str, ts: i64, kind: &str, content: Value) -> String {
    let mut m =
        json!({"from": BUSINESS, "to": to, "id": wamid, "timestamp": ts.to_string(), "type": kind});
    m[kind] = content;
    envelope(
        "smb_message_echoes",
        json!({"messaging_product": "whatsapp", "metadata": metadata(), "message_echoes": [m]}),
    )
}

pub fn echo_text(to: &str, wamid: &str, ts: i64, body: &str) -> String {
    echo_msg(to, wamid, ts, "text", json!({"body": body}))
}

pub fn status(recipient: &str, wamid: &str, ts: i64, status: &str) -> String {
    envelope(
        "messages",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
               "statuses": [{"id": wamid, "status": status, "timestamp": ts.to_string(), "recipient_id": recipient}]}),
    )
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
            serde_json::from_str(include_str!("../../docs/events.schema.json")).unwrap();
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

/// A TCP proxy to a real server that a test can cut (dropping every connection, refusing new
/// ones) and restore on the same port.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    target: String,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl TcpProxy {
    pub async fn start(target: &str) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(TcpProxy {
            addr: listener.local_addr().unwrap(),
            target: target.to_owned(),
            tasks: Default::default(),
        });
        proxy.serve(listener);
        proxy
    }

    fn serve(self: &Arc<Self>, listener: tokio::net::TcpListener) {
        let me = self.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = me.target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                me.tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Drops every connection and stops listening.
    pub fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restore(self: &Arc<Self>) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

pub fn amqp_url() -> String {
    std::env::var("COEXIST_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Deletes a namespace's exchanges and queues when dropped.
pub struct AmqpNsGuard(pub String);

impl Drop for AmqpNsGuard {
    fn drop(&mut self) {
        clean_amqp(amqp_url(), self.0.clone());
    }
}

/// Deletes a namespace's exchanges and queues on a cluster's nodes when dropped.
pub struct ClusterAmqpNsGuard(pub String, pub String);

impl Drop for ClusterAmqpNsGuard {
    fn drop(&mut self) {
        clean_amqp(self.1.clone(), self.0.clone());
    }
}

fn clean_amqp(url: String, ns: String) {
    {
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok(conn) = coexist::broker::connect(&url, "coexist-test-cleanup").await else {
                    return;
                };
                let Ok(ch) = conn.create_channel().await else {
                    return;
                };
                let t = coexist::broker::Topology::new(&ns, 64);
                for q in t.queues() {
                    let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
                }
                for e in t.exchanges() {
                    let _ = ch.exchange_delete(e.into(), Default::default()).await;
                }
                let _ = conn.close(200, "cleaned".into()).await;
            });
        })
        .join();
    }
}

/// An event taken from a default queue, with its AMQP properties.
#[derive(Debug, Clone)]
pub struct Taken {
    pub kind: String,
    pub body: Value,
    pub properties: lapin::BasicProperties,
}

/// Takes (and acknowledges) events from `{ns}.{exchange}.events` until `want` arrived or the
/// time is up; returns what arrived.
pub async fn take_events(ns: &str, exchange: &str, want: usize, within: Duration) -> Vec<Taken> {
    take_events_at(&amqp_url(), ns, exchange, want, within).await
}

/// [`take_events`] from the broker at `url` (several comma-separated nodes: a cluster).
pub async fn take_events_at(
    url: &str,
    ns: &str,
    exchange: &str,
    want: usize,
    within: Duration,
) -> Vec<Taken> {
    let conn = coexist::broker::connect(url, "coexist-test-reader")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let queue = format!("{ns}.{exchange}.events");
    let deadline = std::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < want && std::time::Instant::now() < deadline {
        match ch
            .basic_get(
                queue.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
        {
            Ok(Some(m)) => {
                let d = m.delivery;
                let body: Value = serde_json::from_slice(&d.data).unwrap();
                assert_matches_schema(&body);
                out.push(Taken {
                    kind: body["type"].as_str().unwrap_or("").to_owned(),
                    body,
                    properties: d.properties,
                });
            }
            Ok(None) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let _ = conn.close(200, "read".into()).await;
    out
}

pub const SECRET: &str = "test-app-secret";

/// Configuration for a test stack: its own namespace, ports picked by the OS.
pub fn stack_config(ns: &str, extra: &[(&str, &str)]) -> coexist::config::Config {
    let mut vars: std::collections::HashMap<String, String> = [
        ("COEXIST_NAMESPACE", ns),
        ("COEXIST_APP_SECRET", SECRET),
        ("COEXIST_VERIFY_TOKEN", "verify-me"),
        ("COEXIST_LISTEN", "127.0.0.1:0"),
        ("COEXIST_ADMIN_LISTEN", "127.0.0.1:0"),
        ("COEXIST_PARTITIONS", "4"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.insert("COEXIST_AMQP_URL".into(), amqp_url());
    vars.insert("COEXIST_REDIS_URL".into(), redis_url());
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    coexist::config::Config::load(None, |k| vars.get(k).cloned()).expect("test configuration")
}

/// An ingress and workers in this process, in their own namespace.
pub struct Stack {
    pub ns: String,
    pub config: coexist::config::Config,
    pub ingress: coexist::ingress::Running,
    pub workers: Vec<coexist::worker::Worker>,
    shutdown: CancellationToken,
    _redis: NsGuard,
    _amqp: AmqpNsGuard,
}

impl Stack {
    pub async fn start(name: &str, workers: usize, extra: &[(&str, &str)]) -> Stack {
        let ns = unique_ns(name);
        let config = stack_config(&ns, extra);
        let shutdown = CancellationToken::new();
        let ingress = coexist::ingress::start(&config, &shutdown).await.unwrap();
        let mut ws = Vec::new();
        for _ in 0..workers {
            ws.push(coexist::worker::start(&config, &shutdown).await.unwrap());
        }
        let stack = Stack {
            ns: ns.clone(),
            config,
            ingress,
            workers: ws,
            shutdown,
            _redis: NsGuard(ns.clone()),
            _amqp: AmqpNsGuard(ns),
        };
        stack.wait_ready().await;
        stack
    }

    /// Waits until the ingress is connected and the workers share every partition (generously:
    /// a loaded machine is slow to connect and rebalance).
    pub async fn wait_ready(&self) {
        let partitions = self.config.partitions as usize;
        eventually(READY_WITHIN, "the stack to be ready", || async {
            let shares: Vec<Vec<u16>> = self.workers.iter().map(|w| w.owned()).collect();
            let owned: usize = shares.iter().map(Vec::len).sum();
            if !self.ingress.link.is_connected() {
                return Err("the ingress is not connected to RabbitMQ".into());
            }
            if !self.workers.is_empty() && owned != partitions {
                return Err(format!(
                    "the workers own {owned} of {partitions} partitions: {shares:?}"
                ));
            }
            if let Some(i) = shares.iter().position(Vec::is_empty) {
                return Err(format!("worker {i} owns no partition yet: {shares:?}"));
            }
            Ok(())
        })
        .await;
    }

    /// Posts a body signed with the test secret; returns the status.
    pub async fn post(&self, body: &str) -> u16 {
        post_signed(self.ingress.addr, body).await
    }

    /// Posts until answered 200 (as Meta retries); panics after `within`.
    pub async fn post_until_ok(&self, body: &str, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let status = self.post(body).await;
            if status == 200 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never accepted (last status {status})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for w in self.workers {
            w.stopped().await.expect("the worker stopped cleanly");
        }
        self.ingress
            .stopped()
            .await
            .expect("the ingress stopped cleanly");
    }
}

/// How long a test waits for a stack (or a process) to become ready.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// Checks `check` every 50 ms until it passes; after `within`, fails naming `what` and what
/// `check` last said was missing.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        let missing = match check().await {
            Ok(()) => return,
            Err(missing) => missing,
        };
        assert!(
            std::time::Instant::now() < deadline,
            "waited {within:?} for {what}; still missing: {missing}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts `body` (signed) to `addr` until it is answered `200`; fails naming `what` after `within`.
pub async fn accepted_within(addr: std::net::SocketAddr, body: &str, within: Duration, what: &str) {
    eventually(within, what, || async {
        match post_signed(addr, body).await {
            200 => Ok(()),
            s => Err(format!("status {s}")),
        }
    })
    .await;
}

/// `rabbitmqctl` (on `node`, or the machine's own broker) with `args`, waiting for it.
pub fn rabbitmqctl(node: Option<&str>, args: &[&str]) {
    let mut cmd = std::process::Command::new("rabbitmqctl");
    cmd.arg("-q");
    if let Some(node) = node {
        cmd.args(["-n", node]);
    }
    let status = cmd
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {node:?} {args:?} failed");
}

/// Starts a RabbitMQ application (on a node, or the machine's own broker) again when dropped,
/// also when the test that stopped it fails.
pub struct StartsApp(pub Option<String>);

impl Drop for StartsApp {
    fn drop(&mut self) {
        let mut cmd = std::process::Command::new("rabbitmqctl");
        cmd.arg("-q");
        if let Some(node) = &self.0 {
            cmd.args(["-n", node]);
        }
        let _ = cmd
            .arg("start_app")
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// Posts a body signed with the test secret to `addr`'s `/webhook`: the status.
pub async fn post_signed(addr: std::net::SocketAddr, body: &str) -> u16 {
    let sig = coexist::ingress::sign(SECRET, body.as_bytes());
    http(
        addr,
        "POST",
        "/webhook",
        &[("X-Hub-Signature-256", sig)],
        body.as_bytes(),
    )
    .await
    .0
}

/// A minimal HTTP/1.1 request over a fresh connection: (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // A server refusing a large body may close before reading it all: write what it takes.
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Like [`take_events`], but counts distinct events: a redelivered copy (same `event_id`, which
/// the contract allows after a failure) is counted once. Returns the distinct events in order of
/// first arrival, and how many copies were seen in all.
pub async fn take_distinct(
    ns: &str,
    exchange: &str,
    want: usize,
    within: Duration,
) -> (Vec<Taken>, usize) {
    take_distinct_at(&amqp_url(), ns, exchange, want, within).await
}

/// [`take_distinct`] from the broker at `url`.
pub async fn take_distinct_at(
    url: &str,
    ns: &str,
    exchange: &str,
    want: usize,
    within: Duration,
) -> (Vec<Taken>, usize) {
    let deadline = std::time::Instant::now() + within;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut copies = 0;
    while out.len() < want && std::time::Instant::now() < deadline {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        for e in take_events_at(
            url,
            ns,
            exchange,
            want - out.len(),
            left.min(Duration::from_secs(2)),
        )
        .await
        {
            copies += 1;
            if seen.insert(e.body["event_id"].as_str().unwrap_or_default().to_owned()) {
                out.push(e);
            }
        }
    }
    (out, copies)
}

/// Messages ready in `{ns}.{exchange}.events` now (nothing is taken).
pub async fn queue_len(ns: &str, exchange: &str) -> u32 {
    ready_in(&[format!("{ns}.{exchange}.events")]).await
}

/// Messages ready (not yet delivered to a consumer) in all of a namespace's partitions.
pub async fn partitions_ready(ns: &str, partitions: u16) -> u32 {
    let t = coexist::broker::Topology::new(ns, partitions);
    let queues: Vec<String> = (0..partitions)
        .map(|p| t.partition_queue(p).to_owned())
        .collect();
    ready_in(&queues).await
}

/// Messages ready in these queues together, read with passive declares.
async fn ready_in(queues: &[String]) -> u32 {
    let conn = coexist::broker::connect(&amqp_url(), "coexist-test-count")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut ready = 0;
    for queue in queues {
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare(queue.as_str().into(), passive, Default::default())
            .await
            .unwrap();
        ready += q.message_count();
    }
    let _ = conn.close(200, "counted".into()).await;
    ready
}

/// Waits until the item `key` of the conversation `{PNID}:{customer}` has been decided and its
/// events published (its dedup mark says `done`).
pub async fn wait_done(ns: &str, customer: &str, key: &str) {
    let redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _ = customer; // marks are kept per business number
    let mark = format!("{ns}:{{{PNID}}}:seen:{key}");
    eventually(READY_WITHIN, &format!("{key} to be published"), || {
        let (mut redis, mark) = (redis.clone(), mark.clone());
        async move {
            let v: Option<String> = redis::AsyncCommands::get(&mut redis, &mark).await.unwrap();
            match v.as_deref() {
                Some("done") => Ok(()),
                Some(_) => Err("decided, events not yet confirmed".into()),
                None => Err("not decided".into()),
            }
        }
    })
    .await;
}

/// A `coexist` process with JSON logs; its bound addresses are read from its log as it starts.
pub struct Process {
    pub child: std::process::Child,
    /// Where `/healthz`, `/readyz` and `/metrics` answer: the worker's admin address (worker,
    /// serve), or the ingress's own (ingress).
    pub admin: std::net::SocketAddr,
    /// `addr` of "ingress listening" (ingress, serve).
    pub listen: Option<std::net::SocketAddr>,
    log: Arc<std::sync::Mutex<String>>,
}

impl Process {
    /// Starts `coexist <command>` with only `env` (plus JSON logs and ports picked by the OS) and
    /// waits until it has logged its addresses.
    pub async fn start(command: &str, env: &[(&str, &str)]) -> Process {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_coexist"));
        cmd.arg(command)
            .env_clear()
            .env("COEXIST_AMQP_URL", amqp_url())
            .env("COEXIST_REDIS_URL", redis_url())
            .env("COEXIST_LISTEN", "127.0.0.1:0")
            .env("COEXIST_ADMIN_LISTEN", "127.0.0.1:0")
            .env("COEXIST_LOG", "warn,coexist=info")
            .env("COEXIST_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<Value>();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (wants_admin, wants_listen) = (command != "ingress", command != "worker");
        let (mut admin, mut listen) = (None, None);
        let deadline = std::time::Instant::now() + READY_WITHIN;
        while (wants_admin && admin.is_none()) || (wants_listen && listen.is_none()) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(v) = rx.recv_timeout(left) else {
                panic!(
                    "coexist {command} did not log its addresses within {READY_WITHIN:?}:\n{}",
                    log.lock().unwrap()
                );
            };
            let fields = &v["fields"];
            match fields["message"].as_str() {
                Some("worker started") => {
                    admin = fields["admin"].as_str().map(|a| a.parse().unwrap())
                }
                Some("ingress listening") => {
                    listen = fields["addr"].as_str().map(|a| a.parse().unwrap())
                }
                _ => {}
            }
        }
        // Keep draining, so the process never blocks on a full pipe.
        std::thread::spawn(move || rx.into_iter().for_each(drop));
        Process {
            child,
            admin: admin.or(listen).expect("an address"),
            listen,
            log,
        }
    }

    /// Starts `coexist serve` and waits until its ingress answers `/readyz` with 200.
    pub async fn serving(env: &[(&str, &str)]) -> (Process, std::net::SocketAddr) {
        let serve = Process::start("serve", env).await;
        let listen = serve.listen.expect("the ingress address");
        eventually(READY_WITHIN, "serve to be ready", || async {
            let ready = http(listen, "GET", "/readyz", &[], b"").await.0 == 200;
            ready.then_some(()).ok_or("/readyz is not 200".to_owned())
        })
        .await;
        (serve, listen)
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Its `/metrics` page.
    pub async fn metrics(&self) -> String {
        http(self.admin, "GET", "/metrics", &[], b"").await.1
    }

    /// The sum of a counter's series whose `reason` label is `reason` (0 when none).
    pub async fn labelled(&self, name: &str, reason: &str) -> f64 {
        let label = format!("reason=\"{reason}\"");
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The value of an unlabelled gauge or counter on its `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = http(self.admin, "GET", "/metrics", &[], b"").await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// The exit code of a process that must exit within `limit` of `since`.
pub async fn exit_within(
    child: &mut std::process::Child,
    since: std::time::Instant,
    limit: Duration,
) -> Option<i32> {
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        assert!(since.elapsed() < limit, "still running {limit:?} later");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
