//! The reply gate: replies per second through it against a local stand-in for Meta's Graph API,
//! and the latency it adds over calling the stand-in directly, in the same run; then the window
//! that remains: from a human's echo being POSTed to the moment the gate refuses the AI agent.
//!
//! `cargo bench --bench gate`: an ingress, a worker and a gate as processes, RabbitMQ and Redis
//! on 127.0.0.1, the stand-in in this process. Under `cargo test` it runs a small smoke round.
//!
//! 1. Seeding: one customer message for each of 2,000 conversations (so each has a service
//!    window), through ingress and worker.
//! 2. Maximum rate: 32 keep-alive clients send text replies as fast as answered, for 5 s,
//!    through the gate, then straight to the stand-in.
//! 3. Paced: 1,000 replies/s for 10 s (`GATE_RATE=N` to change), through the gate, then straight
//!    to the stand-in: p50/p99/max of each, and what the gate adds (goal: p99 added at most
//!    2 ms at 1,000/s).
//! 4. The window: under paced replies at half that rate, for each of 30 fresh conversations an
//!    agent replies in a tight loop while a human's echo is POSTed; the time from the echo's
//!    POST to the first refusal.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use common::*;

const PNID_BASE: u64 = 410_000_000_000_000;

/// A stand-in for Meta: accepts every send with a made-up wamid.
async fn stand_in() -> SocketAddr {
    static N: AtomicU64 = AtomicU64::new(0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(|| async {
        let n = N.fetch_add(1, Ordering::Relaxed);
        (
            [("content-type", "application/json")],
            format!(r#"{{"messaging_product":"whatsapp","contacts":[{{"input":"x","wa_id":"x"}}],"messages":[{{"id":"wamid.B{n}"}}]}}"#),
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// How many conversations are seeded (each gets a customer message, so a service window).
static SEEDED: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// The reply to conversation `i` of the seeded ones (`common::body`'s customer and number).
fn reply(i: usize) -> (String, String) {
    let i = i % SEEDED.get().copied().unwrap_or(1);
    let customer = 5_215_540_000_000u64 + (i % 2000) as u64;
    let number = PNID_BASE + (i % NUMBERS) as u64;
    let body = format!(
        r#"{{"messaging_product":"whatsapp","to":"{customer}","type":"text","text":{{"body":"Gracias, te ayudo con eso {i}"}}}}"#
    );
    (format!("/v21.0/{number}/messages"), body)
}

const AUTH: &str = "Authorization: Bearer bench-agent-token\r\n";

/// Replies from `clients` keep-alive clients to `addr` until `until` (unpaced): replies/s.
async fn flat_out(addr: SocketAddr, clients: usize, for_: Duration) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                let mut n = 0usize;
                let mut i = c;
                while start.elapsed() < for_ {
                    let (path, body) = reply(i);
                    assert_eq!(client.send(&path, AUTH, &body).await, 200);
                    n += 1;
                    i += clients;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Replies to `addr` at `rate` per second for `for_`, from `clients` clients: each latency.
async fn paced_replies(
    addr: SocketAddr,
    rate: f64,
    for_: Duration,
    clients: usize,
) -> Vec<Duration> {
    let n = (rate * for_.as_secs_f64()) as usize;
    let start = Instant::now() + Duration::from_millis(100);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                let mut took = Vec::new();
                let mut k = c;
                while k < n {
                    let due = start + Duration::from_secs_f64(k as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    let (path, body) = reply(k);
                    let sent = Instant::now();
                    assert_eq!(client.send(&path, AUTH, &body).await, 200);
                    took.push(sent.elapsed());
                    k += clients;
                }
                took
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

fn ms(d: f64) -> String {
    format!("{d:.2} ms")
}

#[tokio::main]
async fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rate: f64 = std::env::var("GATE_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000.0);
    let (seed, flat_for, paced_for, rounds) = match smoke {
        true => (50, Duration::from_millis(500), Duration::from_secs(1), 3),
        false => (2000, Duration::from_secs(5), Duration::from_secs(10), 30),
    };
    SEEDED.set(seed).expect("set once");
    let graph = stand_in().await;
    let system = System::start("gate", 4, 1).await;
    let gate_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut gate = std::process::Command::new(env!("CARGO_BIN_EXE_coexist"))
        .arg("gate")
        .env("COEXIST_NAMESPACE", &system.ns)
        .env("COEXIST_PARTITIONS", system.partitions.to_string())
        .env("COEXIST_GATE_LISTEN", gate_addr.to_string())
        .env("COEXIST_GRAPH_URL", format!("http://{graph}"))
        .env("COEXIST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(gate_addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("reply gate benchmark: the gate as a process against a stand-in for Meta in this process, RabbitMQ and Redis on this machine");
    // 1. Seeding: a customer message for every conversation replied to.
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut client = Client::connect(system.ingress_addr).await;
    for i in 0..seed {
        assert_eq!(client.post(&body(i, ts)).await, 200);
    }
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let last = format!(
        "{}:{{{}}}:c:{}:state",
        system.ns,
        PNID_BASE + ((seed - 1) % NUMBERS) as u64,
        5_215_540_000_000u64 + ((seed - 1) % 2000) as u64
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !redis::AsyncCommands::exists::<_, bool>(&mut redis, &last)
        .await
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the seeded messages were not decided"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 2. Maximum rate.
    let through = flat_out(gate_addr, 32, flat_for).await;
    let direct = flat_out(graph, 32, flat_for).await;
    println!("  maximum rate, 32 keep-alive clients: through the gate {through:.0} replies/s; straight to the stand-in {direct:.0} replies/s");
    // 3. Paced.
    let via = paced_replies(gate_addr, rate, paced_for, 16).await;
    let straight = paced_replies(graph, rate, paced_for, 16).await;
    let (g50, g99, gmax) = (
        percentile(&via, 0.5),
        percentile(&via, 0.99),
        percentile(&via, 1.0),
    );
    let (d50, d99, dmax) = (
        percentile(&straight, 0.5),
        percentile(&straight, 0.99),
        percentile(&straight, 1.0),
    );
    println!(
        "  at {rate:.0} replies/s for {paced_for:?} ({} replies each way):",
        via.len()
    );
    println!(
        "    through the gate      p50 {}, p99 {}, max {}",
        ms(g50),
        ms(g99),
        ms(gmax)
    );
    println!(
        "    straight to Meta      p50 {}, p99 {}, max {}",
        ms(d50),
        ms(d99),
        ms(dmax)
    );
    println!(
        "    added by the gate     p50 {}, p99 {}   (goal: p99 added at most 2 ms)",
        ms(g50 - d50),
        ms(g99 - d99)
    );
    // 4. The window: an echo POSTed while an agent replies in a tight loop.
    let load_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = load_stop.clone();
        tokio::spawn(async move {
            let mut client = Client::connect(gate_addr).await;
            let mut k = 0;
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let due = start + Duration::from_secs_f64(k as f64 / (rate / 2.0));
                tokio::time::sleep_until(due.into()).await;
                let (path, body) = reply(k);
                let _ = client.send(&path, AUTH, &body).await;
                k += 1;
            }
        })
    };
    let mut windows = Vec::new();
    for round in 0..rounds {
        let customer = 5_215_549_000_000u64 + round as u64;
        let number = PNID_BASE + 7;
        let msg = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"5215550009999","phone_number_id":"{number}"}},"contacts":[{{"profile":{{"name":"C"}},"wa_id":"{customer}"}}],"messages":[{{"from":"{customer}","id":"wamid.W{round}a","timestamp":"{ts}","type":"text","text":{{"body":"hola"}}}}]}}}}]}}]}}"#
        );
        assert_eq!(client.post(&msg).await, 200);
        let path = format!("/v21.0/{number}/messages");
        let body = format!(r#"{{"to":"{customer}","type":"text","text":{{"body":"bot"}}}}"#);
        let mut agent = Client::connect(gate_addr).await;
        // The agent's replies pass until the human's reply is decided.
        while agent.send(&path, AUTH, &body).await != 200 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let echo = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"smb_message_echoes","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"5215550009999","phone_number_id":"{number}"}},"message_echoes":[{{"from":"5215550009999","to":"{customer}","id":"wamid.W{round}b","timestamp":"{ts}","type":"text","text":{{"body":"te atiendo"}}}}]}}}}]}}]}}"#
        );
        let mut human = Client::connect(system.ingress_addr).await;
        let posted = Instant::now();
        let echo_task = tokio::spawn(async move { human.post(&echo).await });
        loop {
            if agent.send(&path, AUTH, &body).await == 409 {
                windows.push(posted.elapsed());
                break;
            }
            assert!(posted.elapsed() < Duration::from_secs(30), "never refused");
        }
        assert_eq!(echo_task.await.unwrap(), 200);
    }
    load_stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    windows.sort();
    println!(
        "  the window that remains (echo POSTed -> the gate refuses), {rounds} rounds under {:.0} replies/s: p50 {}, p99 {}, max {}",
        rate / 2.0,
        ms(percentile(&windows, 0.5)),
        ms(percentile(&windows, 0.99)),
        ms(percentile(&windows, 1.0))
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &gate.id().to_string()])
        .status();
    let _ = gate.wait();
    system.stop().await;
}
