//! Where the broker's time goes at low depth (#33): what one persistent message costs RabbitMQ
//! (beam.smp's CPU per message, from /proc) when published with a confirm and consumed with an
//! ack, paced at a rate, per queue type: the quorum queue coexist's queues are today, and a
//! classic (version 2) durable queue. No coexist code runs: this is the floor of a hop.
//!
//! `cargo bench --bench broker` paces each type at 100, 500, 1,000 and 2,000 messages/s for 10 s
//! (8 publishers, each awaiting its confirm before the next, as the ingress's requests do; one
//! consumer, prefetch 16, acking each). Under `cargo test` it runs a smoke round. Needs RabbitMQ
//! on 127.0.0.1:5672 and nothing else busy on the machine.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;

fn arguments(kind: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(kind.as_bytes().to_vec())),
    );
    if kind == "classic" {
        t.insert("x-queue-version".into(), AMQPValue::LongInt(2));
    }
    t
}

/// One paced round: beam.smp's CPU µs per message, and publish -> confirm p50 / p99 in ms.
async fn round(kind: &str, rate: f64, secs: f64) -> (f64, f64, f64) {
    let conn = coexist::adapters::broker::connect(&amqp_url(), "bench-broker")
        .await
        .unwrap();
    let queue = format!("bench-broker-{kind}-{}", std::process::id());
    let setup = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    setup
        .queue_declare(queue.as_str().into(), durable, arguments(kind))
        .await
        .unwrap();
    let n = (rate * secs) as usize;
    let sub = conn.create_channel().await.unwrap();
    sub.basic_qos(16, BasicQosOptions::default()).await.unwrap();
    let mut consumer = sub
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let consuming = tokio::spawn(async move {
        for _ in 0..n {
            let d = consumer.next().await.unwrap().unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let beam_before: f64 = server_pids("beam.smp").iter().map(|p| cpu_secs(*p)).sum();
    let publishers = 8;
    let mut channels = Vec::with_capacity(publishers);
    for _ in 0..publishers {
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        channels.push(ch);
    }
    let start = Instant::now();
    let tasks: Vec<_> = channels
        .into_iter()
        .enumerate()
        .map(|(p, ch)| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let payload = vec![b'x'; 600];
                let mut waits = Vec::new();
                for k in (p..n).step_by(publishers) {
                    let due = start + Duration::from_secs_f64(k as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    let sent = Instant::now();
                    let confirm = ch
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions::default(),
                            &payload,
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await
                        .unwrap();
                    assert!(confirm.await.unwrap().is_ack());
                    waits.push(sent.elapsed());
                }
                waits
            })
        })
        .collect();
    let mut waits = Vec::with_capacity(n);
    for t in tasks {
        waits.extend(t.await.unwrap());
    }
    consuming.await.unwrap();
    let beam = server_pids("beam.smp")
        .iter()
        .map(|p| cpu_secs(*p))
        .sum::<f64>()
        - beam_before;
    waits.sort();
    let _ = setup
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    (
        beam / n as f64 * 1e6,
        percentile(&waits, 0.5),
        percentile(&waits, 0.99),
    )
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rates, secs): (&[f64], f64) = if full {
        (&[100.0, 500.0, 1_000.0, 2_000.0], 10.0)
    } else {
        (&[200.0], 0.5)
    };
    println!("broker benchmark: one persistent 600-byte message published with a confirm (8 publishers, each awaiting its confirm) and consumed with an ack, paced; RabbitMQ's CPU per message");
    println!(
        "  | queue type | rate /s | RabbitMQ CPU per message | publish -> confirm p50 | p99 |"
    );
    println!("  |---|---|---|---|---|");
    for kind in ["quorum", "classic"] {
        for &rate in rates {
            let (cpu, p50, p99) = round(kind, rate, secs).await;
            println!("  | {kind} | {rate:.0} | {cpu:.0} µs | {p50:.2} ms | {p99:.2} ms |");
        }
    }
    if !full {
        println!("  (smoke round; `cargo bench --bench broker` for the real figures)");
    }
}
