//! What coexist's clients alone cost, a floor under its own CPU per webhook:
//!
//! 1. The broker client: this process's CPU per message when it publishes persistent messages
//!    with confirms into a quorum queue and consumes them with acks (lapin, nothing else), at
//!    several confirm windows. Per webhook the ingress publishes one message and awaits its
//!    confirm; a worker takes the delivery, publishes one event, awaits its confirm and acks:
//!    between them one and a half of these rounds.
//! 2. The state store: this process's CPU per item decided through the Redis store (one MGET,
//!    one EVALSHA, one SET on acknowledgement: what a worker does per item besides the broker),
//!    with 1, 4 and 16 conversations in flight.
//!
//! `cargo bench --bench floor`; under `cargo test` a small smoke round. Everything runs on a
//! multi-threaded tokio runtime as coexist does (`FLOOR_RUNTIME=current_thread`: on one thread).

mod common;

use std::time::Instant;

use common::*;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicPublishOptions, QueueDeleteOptions};
use lapin::BasicProperties;

use coexist::adapters::redis::RedisStore;
use coexist::core::apply::Applier;
use coexist::core::engine::RuleBook;
use coexist::core::engine::{Input, Rules};
use coexist::core::meta::parse_body;
use coexist::core::time::Millis;

/// Messages/s and this process's CPU µs per message with `window` confirms in flight.
async fn run(n: usize, window: usize) -> (f64, f64) {
    let conn = coexist::adapters::broker::connect(&amqp_url(), "bench-floor")
        .await
        .unwrap();
    let queue = format!("bench-floor-{}-{window}", std::process::id());
    let (ch, mut consumer) = quorum_queue(&conn, &queue, window.max(16) as u16).await;
    let payload = vec![b'x'; 600];
    let cpu = cpu_secs(std::process::id());
    let start = Instant::now();
    let consuming = tokio::spawn(async move {
        for _ in 0..n {
            let d = consumer.next().await.unwrap().unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
    });
    let mut pending = std::collections::VecDeque::with_capacity(window);
    for _ in 0..n {
        let c = ch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        pending.push_back(c);
        if pending.len() == window {
            assert!(pending.pop_front().unwrap().await.unwrap().is_ack());
        }
    }
    for c in pending {
        assert!(c.await.unwrap().is_ack());
    }
    consuming.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    let used = cpu_secs(std::process::id()) - cpu;
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    (n as f64 / secs, used / n as f64 * 1e6)
}

/// Items/s and this process's CPU µs per item through the Redis store, `in_flight`
/// conversations at once.
async fn store(n: usize, in_flight: usize) -> (f64, f64) {
    let url = redis_url();
    let ns = format!("bench-floor-{}-{in_flight}", std::process::id());
    let store = RedisStore::connect(&url, &ns)
        .await
        .expect("Redis on 127.0.0.1:6379");
    let rules = RuleBook {
        default: Rules::default(),
        numbers: Default::default(),
    };
    let engine = std::sync::Arc::new(Applier::new(store, std::sync::Arc::new(rules)));
    let ts = Millis::now().0 / 1000;
    let cpu = cpu_secs(std::process::id());
    let start = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|lane| {
            let engine = engine.clone();
            tokio::spawn(async move {
                // Conversation `lane` of each number, so lanes never share one.
                for i in (lane..n).step_by(in_flight) {
                    let body = body(i * 16 + lane % 16, ts);
                    for item in parse_body(body.as_bytes()).unwrap().items {
                        let applied = engine
                            .apply(&Input::Item(&item), Millis::now())
                            .await
                            .unwrap();
                        engine.acknowledge(&applied).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let used = cpu_secs(std::process::id()) - cpu;
    clear_keys(&mut engine.store().connection(), &ns).await;
    (n as f64 / secs, used / n as f64 * 1e6)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 20_000 } else { 200 };
    // FLOOR_RUNTIME=current_thread runs it all on one thread (lapin's I/O thread aside), to
    // compare with the multi-threaded runtime coexist runs on.
    let rt = if std::env::var("FLOOR_RUNTIME").as_deref() == Ok("current_thread") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Runtime::new().unwrap()
    };
    rt.block_on(async {
        println!("broker client floor: lapin publishing persistent messages with confirms into a quorum queue and consuming them with acks, {n} messages each");
        for window in [1, 4, 16, 64] {
            let (rate, us) = run(n, window).await;
            println!("  {window:>3} confirms in flight: {rate:>8.0} msg/s, this process's CPU {us:>5.0} µs per message (publish, confirm, delivery, ack)");
        }
        println!("state store floor: items decided through the Redis store (MGET, EVALSHA, SET on acknowledgement), {n} items each");
        for in_flight in [1, 4, 16] {
            let (rate, us) = store(n, in_flight).await;
            println!("  {in_flight:>3} conversations in flight: {rate:>8.0} items/s, this process's CPU {us:>5.0} µs per item");
        }
        if !full {
            println!("  (smoke round; `cargo bench --bench floor` for the real figures)");
        }
    });
}
