//! What the pipeline and soak benchmarks share: a signed-webhook client, the system under test
//! (an ingress and worker processes in a namespace of their own), and readings of /proc.
#![allow(dead_code)] // each benchmark uses its own part

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "bench-secret";

pub fn amqp_url() -> String {
    std::env::var("COEXIST_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn redis_url() -> String {
    std::env::var("COEXIST_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// One `SCAN` page of the keys of namespace `ns` from `cursor`: the next cursor (0 at the end)
/// and the keys.
pub async fn scan_page(
    conn: &mut impl redis::aio::ConnectionLike,
    ns: &str,
    cursor: u64,
) -> redis::RedisResult<(u64, Vec<String>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(format!("{ns}:*"))
        .arg("COUNT")
        .arg(10_000)
        .query_async(conn)
        .await
}

/// Deletes every key of a benchmark's namespace `ns` (a `SCAN` page at a time: it may hold
/// millions), with `DEL`, so that Redis's memory is freed before it returns.
pub async fn clear_keys(conn: &mut impl redis::aio::ConnectionLike, ns: &str) {
    let mut cursor = 0u64;
    loop {
        let Ok((next, keys)) = scan_page(conn, ns, cursor).await else {
            return;
        };
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query_async(conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// A durable quorum queue `queue` of this benchmark's own, a channel in confirm mode to publish
/// into it, and a consumer of it holding at most `prefetch` unacknowledged (on its own channel).
pub async fn quorum_queue(
    conn: &lapin::Connection,
    queue: &str,
    prefetch: u16,
) -> (lapin::Channel, lapin::Consumer) {
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), durable, quorum())
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let sub = conn.create_channel().await.unwrap();
    sub.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let consumer = sub
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (ch, consumer)
}

/// Business numbers the load is spread over, as a provider's traffic is: each number's items go
/// to one partition and are decided one after the other.
pub const NUMBERS: usize = 64;

pub fn body(i: usize, ts: i64) -> String {
    let customer = 5_215_540_000_000u64 + (i % 2000) as u64;
    let number = 410_000_000_000_000u64 + (i % NUMBERS) as u64;
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"5215550009999","phone_number_id":"{number}"}},"contacts":[{{"profile":{{"name":"Cliente"}},"wa_id":"{customer}"}}],"messages":[{{"from":"{customer}","id":"wamid.P{i}","timestamp":"{ts}","type":"text","text":{{"body":"Hola, ¿tienen envío hoy? {i}"}}}}]}}}}]}}]}}"#
    )
}

/// Posts webhooks `first + k`, k in `0..n`, each at its due time `start + k / rate`, with
/// `clients` keep-alive clients (client `c` posts every `c`-th); `before(k, due)` is told just
/// before each is posted, and every answer must be 200. Each task returns its client (still open).
pub fn paced<F>(
    addr: SocketAddr,
    start: Instant,
    rate: f64,
    (first, n): (usize, usize),
    clients: usize,
    ts: i64,
    before: F,
) -> Vec<tokio::task::JoinHandle<Client>>
where
    F: Fn(usize, Instant) + Clone + Send + 'static,
{
    (0..clients)
        .map(|c| {
            let before = before.clone();
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                let mut k = c;
                while k < n {
                    let due = start + Duration::from_secs_f64(k as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    before(k, due);
                    assert_eq!(client.post(&body(first + k, ts)).await, 200);
                    k += clients;
                }
                client
            })
        })
        .collect()
}

/// A keep-alive HTTP/1.1 client on one connection.
pub struct Client {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Posts a webhook body signed as Meta signs it: the status.
    pub async fn post(&mut self, body: &str) -> u16 {
        let sig = coexist::services::ingress::sign(SECRET, body.as_bytes());
        self.send("/webhook", &format!("X-Hub-Signature-256: {sig}\r\n"), body)
            .await
    }

    /// Posts `body` (JSON) to `path` with `headers` (each line ending in CRLF): the status.
    pub async fn send(&mut self, path: &str, headers: &str, body: &str) -> u16 {
        let req = format!("POST {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}", body.len());
        self.stream.write_all(req.as_bytes()).await.unwrap();
        self.buf.clear();
        loop {
            let mut chunk = [0u8; 1024];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&self.buf);
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if rest.len() >= len {
                    return head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
}

pub fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(b"quorum".to_vec())),
    );
    t
}

/// Collects event arrival instants by message id from `{ns}.bot.events`.
pub async fn collect_events(ns: String, arrivals: Arc<Mutex<HashMap<String, Instant>>>) {
    let conn = coexist::adapters::broker::connect(&amqp_url(), "bench-events")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(1000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            format!("{ns}.bot.events").as_str().into(),
            "bench".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    while let Some(Ok(d)) = consumer.next().await {
        let now = Instant::now();
        let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        if let Some(id) = v["message"]["id"].as_str() {
            arrivals.lock().unwrap().entry(id.to_owned()).or_insert(now);
        }
    }
}

pub async fn wait_for(
    arrivals: &Mutex<HashMap<String, Instant>>,
    n: usize,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if arrivals.lock().unwrap().len() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Bucket counts of the latency histogram, summed over the workers.
pub async fn latency_buckets(admins: &[SocketAddr]) -> Vec<(f64, u64)> {
    let mut sum: Vec<(f64, u64)> = Vec::new();
    for a in admins {
        let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        for line in text
            .lines()
            .filter(|l| l.starts_with("coexist_accept_to_confirm_seconds_bucket"))
        {
            let le = line
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("+Inf");
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            let count: u64 = line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64;
            match sum.iter_mut().find(|(b, _)| *b == le) {
                Some(e) => e.1 += count,
                None => sum.push((le, count)),
            }
        }
    }
    sum.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    sum
}

pub fn quantile_bucket(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> String {
    let diff: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, c)| {
            (
                *le,
                c - before.iter().find(|(b, _)| b == le).map_or(0, |x| x.1),
            )
        })
        .collect();
    let total = diff.last().map_or(0, |x| x.1);
    if total == 0 {
        return "no samples".into();
    }
    let want = (total as f64 * q).ceil() as u64;
    match diff.iter().find(|(_, c)| *c >= want) {
        Some((le, _)) if le.is_finite() => format!("<= {:.1} ms", le * 1000.0),
        _ => "> 10 s".into(),
    }
}

pub fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1].as_secs_f64()
        * 1000.0
}

/// (busy, total) jiffies of all cores, from /proc/stat.
pub fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Context switches (voluntary and not) of all of a process's threads so far.
pub fn context_switches(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Pids of the local servers, by process name.
pub fn server_pids(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Starts a `coexist worker` process in `ns`, its admin address on `admin`.
pub fn spawn_worker(ns: &str, partitions: u16, admin: SocketAddr) -> std::process::Child {
    spawn(
        ns,
        partitions,
        "worker",
        ("COEXIST_ADMIN_LISTEN", admin.to_string()),
    )
}

/// Starts `coexist {command}` in namespace `ns` with `listen` set.
fn spawn(ns: &str, partitions: u16, command: &str, listen: (&str, String)) -> std::process::Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_coexist"));
    // BENCH_OTLP=1: the processes export their spans to a receiver in this benchmark.
    if let Some(endpoint) = otlp_endpoint() {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    }
    // BENCH_PROCESS_THREADS=N: the processes' runtime threads (tokio's TOKIO_WORKER_THREADS),
    // the benchmark's own unchanged.
    if let Ok(threads) = std::env::var("BENCH_PROCESS_THREADS") {
        cmd.env("TOKIO_WORKER_THREADS", threads);
    }
    if command == "ingress" {
        // Its admin address (/metrics) on a port of its own, as the workers'.
        cmd.env("COEXIST_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()));
    }
    cmd.arg(command)
        .env("COEXIST_NAMESPACE", ns)
        .env("COEXIST_APP_SECRET", SECRET)
        .env("COEXIST_PARTITIONS", partitions.to_string())
        .env("COEXIST_LOG", "warn")
        .env(listen.0, listen.1)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// With `BENCH_OTLP=1`, an OTLP/HTTP receiver in this process that accepts and drops every
/// span (started on first use): its address.
pub fn otlp_endpoint() -> Option<String> {
    static ENDPOINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            std::env::var("BENCH_OTLP").ok().filter(|v| v == "1")?;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            listener.set_nonblocking(true).unwrap();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let app = axum::Router::new().fallback(|| async { "" });
                    let _ = axum::serve(listener, app).await;
                });
            });
            Some(format!("http://{addr}"))
        })
        .clone()
}

/// An ingress and worker processes of `coexist` in a namespace of their own.
pub struct System {
    pub ns: String,
    pub partitions: u16,
    pub ingress_addr: SocketAddr,
    pub admins: Vec<SocketAddr>,
    pub ingress: std::process::Child,
    pub workers: Vec<std::process::Child>,
}

impl System {
    /// Starts one ingress and `workers` workers, and waits until they serve and share the
    /// partitions.
    pub async fn start(name: &str, partitions: u16, workers: usize) -> System {
        let ns = format!("bench-{name}-{}", std::process::id());
        let ingress_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admins: Vec<SocketAddr> = (0..workers)
            .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
            .collect();
        let ingress = spawn(
            &ns,
            partitions,
            "ingress",
            ("COEXIST_LISTEN", ingress_addr.to_string()),
        );
        let workers = admins
            .iter()
            .map(|a| spawn_worker(&ns, partitions, *a))
            .collect();
        for _ in 0..200 {
            let up = tokio::net::TcpStream::connect(ingress_addr).await.is_ok()
                && futures_util::future::join_all(
                    admins.iter().map(|a| tokio::net::TcpStream::connect(*a)),
                )
                .await
                .iter()
                .all(|r| r.is_ok());
            if up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await; // partitions shared out
        System {
            ns,
            partitions,
            ingress_addr,
            admins,
            ingress,
            workers,
        }
    }

    /// Stops the workers (SIGTERM) and waits until they have exited.
    pub fn stop_workers(&mut self) {
        for w in &self.workers {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &w.id().to_string()])
                .status();
        }
        for w in &mut self.workers {
            let _ = w.wait();
        }
        self.workers.clear();
    }

    /// Starts the workers again on their admin addresses.
    pub fn start_workers(&mut self) {
        self.workers = self
            .admins
            .iter()
            .map(|a| spawn_worker(&self.ns, self.partitions, *a))
            .collect();
    }

    /// Messages waiting in the inbound partition queues (ready and unacknowledged).
    pub async fn backlog(&self, ch: &lapin::Channel) -> u32 {
        let t = coexist::adapters::broker::Topology::new(&self.ns, self.partitions);
        let mut sum = 0;
        for p in 0..self.partitions {
            let queue = t.first_layout().queue(&t, p);
            let q = ch
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            sum += q.map_or(0, |q| q.message_count());
        }
        sum
    }

    /// Stops the processes (SIGTERM) and removes the namespace's queues, exchanges and keys.
    pub async fn stop(mut self) {
        for p in self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.ingress))
        {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &p.id().to_string()])
                .status();
        }
        for p in self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.ingress))
        {
            let _ = p.wait();
        }
        remove_namespace(&self.ns, self.partitions).await;
    }
}

/// Removes a benchmark namespace's queues, exchanges and keys.
pub async fn remove_namespace(ns: &str, partitions: u16) {
    let conn = coexist::adapters::broker::connect(&amqp_url(), "bench-cleanup")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let t = coexist::adapters::broker::Topology::new(ns, partitions);
    for q in t.queues().into_iter().chain(t.first_layout().queues(&t)) {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for e in t.exchanges() {
        let _ = ch.exchange_delete(e.into(), Default::default()).await;
    }
    let _ = conn.close(200, "cleaned".into()).await;
    if let Ok(client) = redis::Client::open(redis_url()) {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            clear_keys(&mut c, ns).await;
        }
    }
}

/// Registers `n` numbers (the benchmark's load numbers first) in `ns`'s registry, each with
/// runtime settings of its own, as a platform serving many businesses has them.
pub async fn register_numbers(ns: &str, n: usize) {
    let store = coexist::adapters::redis::RedisStore::connect(&redis_url(), ns)
        .await
        .unwrap();
    let now = coexist::core::time::Millis::now();
    for i in 0..n {
        let pnid = (410_000_000_000_000u64 + i as u64).to_string();
        let added = coexist::adapters::redis::Added {
            waba_id: Some((900_000_000_000_000u64 + (i / 4) as u64).to_string()),
            name: Some(format!("Shop {i}")),
            display_phone_number: None,
        };
        store.add_number(&pnid, &added, now).await.unwrap();
        let changed = serde_json::json!({
            "reset_text": format!("/bot{i}"),
            "timeout": "2d",
            "automated_texts": [format!("Gracias por escribir a la tienda {i}")],
        });
        let change = coexist::core::numbers::Change {
            at: now.rfc3339(),
            by: coexist::core::engine::event::By::system(),
            changed: changed.as_object().cloned().unwrap(),
        };
        store.change_number_settings(&pnid, &change).await.unwrap();
    }
}

/// The business number of [`fill`]'s conversations (not one of the load's [`NUMBERS`]).
const FILL_PNID: &str = "410000000000088";
/// Conversations [`fill`] writes at a time.
pub const IN_FLIGHT: usize = 64;

/// A customer's message to `FILL_PNID` (a 41-character text, as a question usually is).
fn fill_message(c: u64, id: &str, ts: i64) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"metadata":{{"display_phone_number":"5215550009999","phone_number_id":"{FILL_PNID}"}},"contacts":[{{"profile":{{"name":"Cliente {c}"}},"wa_id":"{c}"}}],"messages":[{{"from":"{c}","id":"{id}","timestamp":"{ts}","type":"text","text":{{"body":"¿Tienen la talla M en azul para mañana?"}}}}]}}}}]}}]}}"#
    )
}

/// The Business App's reply to customer `c` (an echo: it pauses the AI agent).
fn fill_echo(c: u64, id: &str, ts: i64) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"smb_message_echoes","value":{{"metadata":{{"display_phone_number":"5215550009999","phone_number_id":"{FILL_PNID}"}},"message_echoes":[{{"from":"5215550009999","to":"{c}","id":"{id}","timestamp":"{ts}","type":"text","text":{{"body":"Sí, te la separo. ¿A qué hora pasas?"}}}}]}}}}]}}]}}"#
    )
}

/// The story each conversation of a fill is given.
#[derive(Clone, Copy, PartialEq)]
pub enum Story {
    /// One customer message: a conversation the AI agent is answering.
    Idle,
    /// A customer message, then the App's reply: paused, with a deadline.
    Paused,
    /// As `Paused`, then the customer again: the handback holds the human stretch.
    PausedWithHandback,
}

fn fill_customer(i: usize) -> u64 {
    5_215_550_000_000 + i as u64
}

/// Writes `n` conversations of `story` (customers 5215550000000 + i of one number) into `ns` through the commit path, with a trail of
/// `trail` entries (0: off). Returns the items applied per second.
pub async fn fill(ns: &str, n: usize, story: Story, trail: usize) -> f64 {
    let store = coexist::adapters::redis::RedisStore::connect(&redis_url(), ns)
        .await
        .unwrap();
    let applier = Arc::new(
        coexist::core::apply::Applier::new(
            store,
            Arc::new(coexist::core::engine::RuleBook {
                default: coexist::core::engine::Rules::default(),
                numbers: Default::default(),
            }),
        )
        .with_trail(trail),
    );
    let t = coexist::core::time::Millis::now().0 / 1000;
    let start = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|lane| {
            let applier = applier.clone();
            tokio::spawn(async move {
                let mut items = 0usize;
                for i in (lane..n).step_by(IN_FLIGHT) {
                    let c = fill_customer(i);
                    let mut bodies = vec![fill_message(c, &format!("wamid.S{i}a"), t - 60)];
                    if story != Story::Idle {
                        bodies.push(fill_echo(c, &format!("wamid.S{i}b"), t - 30));
                    }
                    if story == Story::PausedWithHandback {
                        bodies.push(fill_message(c, &format!("wamid.S{i}c"), t - 10));
                    }
                    for body in bodies {
                        for item in coexist::core::meta::parse_body(body.as_bytes())
                            .unwrap()
                            .items
                        {
                            let applied = applier
                                .apply(
                                    &coexist::core::engine::Input::Item(&item),
                                    coexist::core::time::Millis::from_secs(t),
                                )
                                .await
                                .unwrap();
                            applier.acknowledge(&applied).await.unwrap();
                            items += 1;
                        }
                    }
                }
                items
            })
        })
        .collect();
    let mut items = 0;
    for task in tasks {
        items += task.await.unwrap();
    }
    items as f64 / start.elapsed().as_secs_f64()
}
