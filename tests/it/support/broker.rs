//! The broker in tests: namespaces cleaned, events taken, queues counted, connections cut.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use serde_json::Value;

/// A TCP proxy to a real server that a test can cut (dropping every connection, and every new
/// one at once) and restore. It keeps its port all along: nothing else can take it meanwhile.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    open: std::sync::atomic::AtomicBool,
    connections: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: &str) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = target.to_owned();
        Arc::new_cyclic(|me: &std::sync::Weak<TcpProxy>| {
            let me = me.clone();
            let accept = tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let Some(proxy) = me.upgrade() else { return };
                    if !proxy.open.load(Ordering::SeqCst) {
                        drop(inbound); // cut: closed at once
                        continue;
                    }
                    let target = target.clone();
                    let conn = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    proxy.connections.lock().unwrap().push(conn);
                }
            });
            TcpProxy {
                addr,
                open: std::sync::atomic::AtomicBool::new(true),
                connections: Default::default(),
                accept,
            }
        })
    }

    /// Drops every connection; new ones are closed at once until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for t in self.connections.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Passes connections through again.
    pub async fn restore(self: &Arc<Self>) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for t in self.connections.lock().unwrap().drain(..) {
            t.abort();
        }
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
                let Ok(conn) =
                    coexist::adapters::broker::connect(&url, "coexist-test-cleanup").await
                else {
                    return;
                };
                let Ok(ch) = conn.create_channel().await else {
                    return;
                };
                let t = coexist::adapters::broker::Topology::new(&ns, 64);
                // The partitions of the first epochs too (a test may change the count).
                let partitions = (0..4).flat_map(|epoch| {
                    coexist::adapters::broker::Layout { epoch, count: 64 }.queues(&t)
                });
                for q in t.queues().into_iter().chain(partitions) {
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

impl Taken {
    /// The string header `name`, if the event carries one.
    pub fn header(&self, name: &str) -> Option<String> {
        use coexist::adapters::broker::message::{header, text};
        header(self.properties.headers(), name).and_then(text)
    }
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
    let conn = coexist::adapters::broker::connect(url, "coexist-test-reader")
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

/// Takes events from `{ns}.{exchange}.events` until one matches `wanted`: the instant it was
/// taken, and the event (`None` after `within`). The others taken on the way are dropped.
pub async fn first_event(
    ns: &str,
    exchange: &str,
    within: Duration,
    wanted: impl Fn(&Taken) -> bool,
) -> Option<(std::time::Instant, Taken)> {
    let conn = coexist::adapters::broker::connect(&amqp_url(), "coexist-test-watch")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let queue = format!("{ns}.{exchange}.events");
    let deadline = std::time::Instant::now() + within;
    let mut found = None;
    while found.is_none() && std::time::Instant::now() < deadline {
        let get = lapin::options::BasicGetOptions { no_ack: true };
        match ch.basic_get(queue.as_str().into(), get).await {
            Ok(Some(m)) => {
                let body: Value = serde_json::from_slice(&m.delivery.data).unwrap();
                assert_matches_schema(&body);
                let taken = Taken {
                    kind: body["type"].as_str().unwrap_or("").to_owned(),
                    body,
                    properties: m.delivery.properties,
                };
                if wanted(&taken) {
                    found = Some((std::time::Instant::now(), taken));
                }
            }
            Ok(None) | Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    let _ = conn.close(200, "read".into()).await;
    found
}

/// Events of one routing key of an exchange, on a queue of a test's own (exclusive), as they are
/// published.
pub struct Watch {
    _conn: lapin::Connection,
    consumer: lapin::Consumer,
}

impl Watch {
    pub async fn start(ns: &str, exchange: &str, routing_key: &str) -> Watch {
        use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
        let conn = coexist::adapters::broker::connect(&amqp_url(), "coexist-test-watch")
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let own = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare("".into(), own, Default::default())
            .await
            .unwrap();
        let exchange = format!("{ns}.{exchange}");
        ch.queue_bind(
            q.name().as_str().into(),
            exchange.as_str().into(),
            routing_key.into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
        let consumer = ch
            .basic_consume(
                q.name().as_str().into(),
                "watch".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        Watch {
            _conn: conn,
            consumer,
        }
    }

    /// The next event that matches `wanted` (others are dropped), and the instant it arrived;
    /// `None` after `within`.
    pub async fn next_matching(
        &mut self,
        within: Duration,
        wanted: impl Fn(&Taken) -> bool,
    ) -> Option<(std::time::Instant, Taken)> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let d = tokio::time::timeout_at(deadline, self.consumer.next())
                .await
                .ok()??
                .ok()?;
            let at = std::time::Instant::now();
            let body: Value = serde_json::from_slice(&d.data).unwrap();
            assert_matches_schema(&body);
            let taken = Taken {
                kind: body["type"].as_str().unwrap_or("").to_owned(),
                body,
                properties: d.properties,
            };
            if wanted(&taken) {
                return Some((at, taken));
            }
        }
    }
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

/// Asserts that a default queue is empty and stays so for a second (a settled state: an event
/// still on its way would arrive within it), saying `why` otherwise.
pub async fn stays_empty(ns: &str, exchange: &str, why: &str) {
    let until = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let n = queue_len(ns, exchange).await;
        assert_eq!(n, 0, "{exchange}: {why}");
        if std::time::Instant::now() >= until {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Messages ready (not yet delivered to a consumer) in all of a namespace's partitions.
pub async fn partitions_ready(ns: &str, partitions: u16) -> u32 {
    let t = coexist::adapters::broker::Topology::new(ns, partitions);
    let queues: Vec<String> = (0..partitions)
        .map(|p| t.first_layout().queue(&t, p))
        .collect();
    ready_in(&queues).await
}

/// Messages ready in these queues together, read with passive declares.
async fn ready_in(queues: &[String]) -> u32 {
    let conn = coexist::adapters::broker::connect(&amqp_url(), "coexist-test-count")
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

/// Events carry each conversation's sequence numbers (the message text) in increasing order.
pub fn assert_in_order_per_conversation(events: &[Taken]) {
    let mut last: HashMap<String, i64> = HashMap::new();
    for e in events {
        let n: i64 = e.body["message"]["text"].as_str().unwrap().parse().unwrap();
        let c = e.body["customer"]["wa_id"].as_str().unwrap().to_owned();
        assert!(
            last.get(&c).is_none_or(|prev| *prev < n),
            "{c}: {n} after {:?}",
            last.get(&c)
        );
        last.insert(c, n);
    }
}
