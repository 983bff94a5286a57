//! End-to-end throughput and latency of the pipeline on this machine, beside the raw broker
//! ceiling measured in the same run.
//!
//! `cargo bench --bench pipeline` runs it in full (one ingress and two worker processes, RabbitMQ
//! and Redis on 127.0.0.1); under `cargo test` it runs a small smoke round.
//!
//! 1. Broker ceiling: persistent messages published with confirms (256 in flight) into a quorum
//!    queue and consumed with acks, no logic.
//! 2. Maximum rate: signed single-message webhooks (2,000 customers of 64 business numbers)
//!    posted by 32 keep-alive clients, until every event has arrived on `{ns}.bot.events`.
//! 3. Half that rate for a while: latency from acceptance to confirmed events (the workers'
//!    histogram), and from sending the POST to receiving the event (measured here).
//! 4. Worker memory: peak and current RSS of each worker process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "bench-secret";

fn amqp_url() -> String {
    std::env::var("COEXIST_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Business numbers the load is spread over, as a provider's traffic is: each number's items go
/// to one partition and are decided one after the other.
const NUMBERS: usize = 64;

fn body(i: usize, ts: i64) -> String {
    let customer = 5_215_540_000_000u64 + (i % 2000) as u64;
    let number = 410_000_000_000_000u64 + (i % NUMBERS) as u64;
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"5215550009999","phone_number_id":"{number}"}},"contacts":[{{"profile":{{"name":"Cliente"}},"wa_id":"{customer}"}}],"messages":[{{"from":"{customer}","id":"wamid.P{i}","timestamp":"{ts}","type":"text","text":{{"body":"Hola, ¿tienen envío hoy? {i}"}}}}]}}}}]}}]}}"#
    )
}

/// A keep-alive HTTP/1.1 client on one connection.
struct Client {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    async fn post(&mut self, body: &str) -> u16 {
        let sig = coexist::ingress::sign(SECRET, body.as_bytes());
        let req = format!("POST /webhook HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nX-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
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

fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(b"quorum".to_vec())),
    );
    t
}

/// Persistent messages with confirms into a quorum queue, consumed with acks: messages/s.
async fn broker_ceiling(n: usize) -> f64 {
    let conn = coexist::broker::connect(&amqp_url(), "bench-ceiling")
        .await
        .unwrap();
    let queue = format!("bench-ceiling-{}", std::process::id());
    let pub_ch = conn.create_channel().await.unwrap();
    pub_ch
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            quorum(),
        )
        .await
        .unwrap();
    pub_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let sub_ch = conn.create_channel().await.unwrap();
    sub_ch
        .basic_qos(256, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = sub_ch
        .basic_consume(
            queue.as_str().into(),
            "ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let payload = vec![b'x'; 600];
    let start = Instant::now();
    let consuming = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            let d = consumer.next().await.unwrap().unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
            got += 1;
        }
    });
    let mut window = Vec::with_capacity(256);
    for _ in 0..n {
        let c = pub_ch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        window.push(c);
        if window.len() == 256 {
            for c in window.drain(..) {
                assert!(c.await.unwrap().is_ack());
            }
        }
    }
    for c in window.drain(..) {
        assert!(c.await.unwrap().is_ack());
    }
    consuming.await.unwrap();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = pub_ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    rate
}

/// Collects event arrival instants by message id from `{ns}.bot.events`.
async fn collect_events(ns: String, arrivals: Arc<Mutex<HashMap<String, Instant>>>) {
    let conn = coexist::broker::connect(&amqp_url(), "bench-events")
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

async fn wait_for(arrivals: &Mutex<HashMap<String, Instant>>, n: usize, within: Duration) -> bool {
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
async fn latency_buckets(admins: &[SocketAddr]) -> Vec<(f64, u64)> {
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

fn quantile_bucket(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> String {
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

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1].as_secs_f64()
        * 1000.0
}

/// (busy, total) jiffies of all cores, from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
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
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Pids of the local servers, by process name.
fn server_pids(name: &str) -> Vec<u32> {
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

fn rss_kib(pid: u32) -> (u64, u64) {
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

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (ceiling_n, max_n, half_secs) = if full {
        (30_000, 20_000, 20)
    } else {
        (500, 200, 2)
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let ceiling = broker_ceiling(ceiling_n).await;

        // BENCH_PARTITIONS sets the partition count (default 16, as in production).
        let partitions: u16 = std::env::var("BENCH_PARTITIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
        let ns = format!("bench-pipeline-{}", std::process::id());
        let ingress_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admins: Vec<SocketAddr> = (0..2).map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap()).collect();
        let spawn = |args: &[&str], listen: (&str, String)| {
            std::process::Command::new(env!("CARGO_BIN_EXE_coexist"))
                .args(args)
                .env("COEXIST_NAMESPACE", &ns)
                .env("COEXIST_APP_SECRET", SECRET)
                .env("COEXIST_PARTITIONS", partitions.to_string())
                .env("COEXIST_LOG", "warn")
                .env(listen.0, listen.1)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let mut ingress = spawn(&["ingress"], ("COEXIST_LISTEN", ingress_addr.to_string()));
        let mut workers: Vec<_> = admins.iter().map(|a| spawn(&["worker"], ("COEXIST_ADMIN_LISTEN", a.to_string()))).collect();
        // Ready when the ingress is connected and both workers serve their admin address.
        for _ in 0..200 {
            let up = tokio::net::TcpStream::connect(ingress_addr).await.is_ok() && futures_util::future::join_all(admins.iter().map(|a| tokio::net::TcpStream::connect(*a))).await.iter().all(|r| r.is_ok());
            if up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await; // partitions shared out
        let arrivals = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(collect_events(ns.clone(), arrivals.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ts = coexist::time::Millis::now().0 / 1000;

        // Maximum rate.
        let clients = 32;
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                tokio::spawn(async move {
                    let mut client = Client::connect(ingress_addr).await;
                    let mut i = c;
                    while i < max_n {
                        assert_eq!(client.post(&body(i, ts)).await, 200);
                        i += clients;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let accepted_in = start.elapsed();
        assert!(wait_for(&arrivals, max_n, Duration::from_secs(120)).await, "every event arrives");
        let end_to_end = max_n as f64 / start.elapsed().as_secs_f64();

        // Half the maximum rate, paced.
        let rate = end_to_end / 2.0;
        let before = latency_buckets(&admins).await;
        let cpu_before = cpu_jiffies();
        let mut procs: Vec<(String, Vec<u32>)> = vec![("ingress".into(), vec![ingress.id()])];
        procs.extend(workers.iter().enumerate().map(|(i, w)| (format!("worker {i}"), vec![w.id()])));
        procs.push(("rabbitmq (beam.smp)".into(), server_pids("beam.smp")));
        procs.push(("redis-server".into(), server_pids("redis-server")));
        procs.push(("this benchmark".into(), vec![std::process::id()]));
        let proc_before: Vec<f64> = procs.iter().map(|(_, pids)| pids.iter().map(|p| cpu_secs(*p)).sum()).collect();
        let n_half = (rate * half_secs as f64) as usize;
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let pace_start = Instant::now();
        let per_client = 8;
        let tasks: Vec<_> = (0..per_client)
            .map(|c| {
                let sent = sent.clone();
                tokio::spawn(async move {
                    let mut client = Client::connect(ingress_addr).await;
                    let mut k = c;
                    while k < n_half {
                        let due = pace_start + Duration::from_secs_f64(k as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                        let i = max_n + k;
                        sent.lock().unwrap().insert(format!("wamid.P{i}"), Instant::now());
                        assert_eq!(client.post(&body(i, ts)).await, 200);
                        k += per_client;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(wait_for(&arrivals, max_n + n_half, Duration::from_secs(60)).await);
        let cpu_after = cpu_jiffies();
        let proc_after: Vec<f64> = procs.iter().map(|(_, pids)| pids.iter().map(|p| cpu_secs(*p)).sum()).collect();
        let cpu_busy = (cpu_after.0 - cpu_before.0) as f64 / (cpu_after.1 - cpu_before.1).max(1) as f64 * 100.0;
        let after = latency_buckets(&admins).await;
        let mut lat: Vec<Duration> = {
            let arrivals = arrivals.lock().unwrap();
            sent.lock().unwrap().iter().filter_map(|(id, t)| arrivals.get(id).map(|a| a.saturating_duration_since(*t))).collect()
        };
        lat.sort();
        let mem: Vec<(u64, u64)> = workers.iter().map(|w| rss_kib(w.id())).collect();

        println!("pipeline benchmark: one ingress and two worker processes, {partitions} partitions, RabbitMQ and Redis on this machine");
        println!("  broker ceiling (persistent, confirms, quorum queue, consumed with acks) {:>9.0} msg/s   ({ceiling_n} messages)", ceiling);
        println!("  end to end at maximum rate ({clients} keep-alive clients)                {:>9.0} webhooks/s ({max_n} webhooks, all accepted in {:.1} s)", end_to_end, accepted_in.as_secs_f64());
        println!("  end to end / ceiling                                                 {:>8.0} %    (goal: at least 40 %)", end_to_end / ceiling * 100.0);
        println!("  at half that rate ({rate:.0}/s for {half_secs} s, {n_half} webhooks; machine CPU busy {cpu_busy:.0} % of {} cores):", std::thread::available_parallelism().map_or(0, |n| n.get()));
        println!("    acceptance -> confirmed events, workers' histogram: p50 {}, p99 {}   (goal: p99 at most 25 ms)", quantile_bucket(&before, &after, 0.5), quantile_bucket(&before, &after, 0.99));
        println!("    POST sent -> event received here: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", percentile(&lat, 0.5), percentile(&lat, 0.99), percentile(&lat, 1.0));
        let per_k = |secs: f64| secs / n_half as f64 * 1000.0 * 1000.0;
        for ((name, _), (b, a)) in procs.iter().zip(proc_before.iter().zip(&proc_after)) {
            println!("    CPU of {name:<22} {:>6.1} s  ({:.0} µs per webhook)", a - b, per_k(a - b));
        }
        for (i, (hwm, rss)) in mem.iter().enumerate() {
            println!("  worker {i} memory: peak RSS {:.1} MiB, now {:.1} MiB   (goal: at most 64 MiB)", *hwm as f64 / 1024.0, *rss as f64 / 1024.0);
        }
        if !full {
            println!("  (smoke round; `cargo bench --bench pipeline` for the real figures)");
        }

        for w in workers.iter_mut().chain(std::iter::once(&mut ingress)) {
            let _ = std::process::Command::new("kill").args(["-TERM", &w.id().to_string()]).status();
        }
        for w in workers.iter_mut().chain(std::iter::once(&mut ingress)) {
            let _ = w.wait();
        }
        // Clean the namespace: queues and exchanges, Redis keys.
        let conn = coexist::broker::connect(&amqp_url(), "bench-cleanup").await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let t = coexist::broker::Topology::new(&ns, partitions);
        use coexist::engine::event::Exchange;
        let mut queues = vec![t.dead(), t.default_queue(Exchange::Bot), t.default_queue(Exchange::HumanChat)];
        queues.extend((0..partitions).map(|i| t.partition_queue(i)));
        for q in queues {
            let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
        }
        for e in [t.inbound_exchange(), t.dead(), t.exchange(Exchange::Bot), t.exchange(Exchange::HumanChat)] {
            let _ = ch.exchange_delete(e.as_str().into(), Default::default()).await;
        }
        if let Ok(client) = redis::Client::open("redis://127.0.0.1:6379") {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{ns}:*")).query_async(&mut c).await.unwrap_or_default();
                for chunk in keys.chunks(1000) {
                    let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query_async(&mut c).await;
                }
            }
        }
    });
}
