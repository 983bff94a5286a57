//! Where the broker's time goes at low depth (#33): what one persistent message costs RabbitMQ
//! (beam.smp's CPU per message, from /proc) when published with a confirm and consumed with an
//! ack, paced at a rate, per queue type: the quorum queue coexist's queues are today, and a
//! classic (version 2) durable queue. No coexist code runs: this is the floor of a hop.
//!
//! `cargo bench --bench broker` paces each type at 100, 500, 1,000 and 2,000 messages/s for 10 s
//! (8 publishers, each awaiting its confirm before the next, as the ingress's requests do; one
//! consumer, prefetch 16, acking each). Then a hop taken apart, quorum at 500/s: published and
//! confirmed with no consumer; consumed with `no-ack` (the queue settles on delivery); acks
//! gathered for 10 ms and sent as one (`multiple`); the same rate published in gatherings (every
//! 2, 5 or 10 ms the messages due go together, as `publish_gather` does); and a stream's hop. Under `cargo test` it runs
//! a smoke round. Needs RabbitMQ on 127.0.0.1:5672 and nothing else busy on the machine.

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

/// How a round's messages are consumed.
#[derive(Clone, Copy, PartialEq)]
enum Consume {
    /// Each acknowledged as it arrives (coexist's workers, the usual agent).
    EachAcked,
    /// Not consumed while the round runs (what publishing with a confirm costs alone).
    Not,
    /// Consumed with `no-ack`: the queue settles each on delivery.
    NoAck,
    /// Acknowledged together every 10 ms (`multiple`).
    AckedEvery10Ms,
}

impl Consume {
    fn label(self) -> &'static str {
        match self {
            Consume::EachAcked => "each acked",
            Consume::Not => "not consumed",
            Consume::NoAck => "no-ack",
            Consume::AckedEvery10Ms => "acks every 10 ms",
        }
    }
}

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

/// Publishes one persistent 600-byte message: its confirm, to await.
async fn publish(ch: &lapin::Channel, queue: &str) -> lapin::PublisherConfirm {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        &[b'x'; 600],
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap()
}

/// The same rate published in gatherings: every `every`, the messages due by then published
/// together on one channel and their confirms awaited together. Each message's wait counts from
/// when it was due.
async fn gathered(
    ch: lapin::Channel,
    queue: String,
    start: Instant,
    rate: f64,
    n: usize,
    every: Duration,
) -> Vec<Duration> {
    let mut waits = Vec::with_capacity(n);
    let mut k = 0;
    let mut tick = start;
    while k < n {
        tick += every;
        tokio::time::sleep_until(tick.into()).await;
        let mut confirms = Vec::new();
        let first = k;
        while k < n && start + Duration::from_secs_f64(k as f64 / rate) <= tick {
            confirms.push(publish(&ch, &queue).await);
            k += 1;
        }
        for (i, c) in confirms.into_iter().enumerate() {
            assert!(c.await.unwrap().is_ack());
            let due = start + Duration::from_secs_f64((first + i) as f64 / rate);
            waits.push(due.elapsed());
        }
    }
    waits
}

/// One paced round: beam.smp's CPU µs per message, and publish -> confirm p50 / p99 in ms.
async fn round(
    kind: &str,
    how: Consume,
    gather: Option<Duration>,
    rate: f64,
    secs: f64,
) -> (f64, f64, f64) {
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
    let mut consume_args = FieldTable::default();
    if kind == "stream" {
        // A stream is read from an offset: the round's messages are the ones after now.
        consume_args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString("next".into()),
        );
    }
    let mut consumer = sub
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions {
                no_ack: how == Consume::NoAck,
                ..Default::default()
            },
            consume_args,
        )
        .await
        .unwrap();
    if how == Consume::Not {
        // Cancelled at once: the round's messages stay in the queue (deleted after).
        sub.basic_cancel("bench".into(), Default::default())
            .await
            .unwrap();
    }
    let consuming = tokio::spawn(async move {
        if how == Consume::Not {
            return;
        }
        let mut last_flush = Instant::now();
        let mut pending: Option<u64> = None;
        let mut got = 0;
        while got < n {
            let next = if how == Consume::AckedEvery10Ms {
                tokio::time::timeout(Duration::from_millis(10), consumer.next()).await
            } else {
                Ok(consumer.next().await)
            };
            if let Ok(d) = next {
                let d = d.unwrap().unwrap();
                got += 1;
                match how {
                    Consume::EachAcked => {
                        d.ack(BasicAckOptions::default()).await.unwrap();
                    }
                    Consume::AckedEvery10Ms => pending = Some(d.delivery_tag),
                    _ => {}
                }
            }
            let due = last_flush.elapsed() >= Duration::from_millis(10) || got == n;
            if let (Some(tag), true) = (pending, due) {
                sub.basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
                    .unwrap();
                pending = None;
                last_flush = Instant::now();
            }
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
    let tasks: Vec<_> = match gather {
        Some(every) => vec![tokio::spawn(gathered(
            channels.swap_remove(0),
            queue.clone(),
            start,
            rate,
            n,
            every,
        ))],
        None => channels
            .into_iter()
            .enumerate()
            .map(|(p, ch)| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut waits = Vec::new();
                    for k in (p..n).step_by(publishers) {
                        let due = start + Duration::from_secs_f64(k as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                        let sent = Instant::now();
                        assert!(publish(&ch, &queue).await.await.unwrap().is_ack());
                        waits.push(sent.elapsed());
                    }
                    waits
                })
            })
            .collect(),
    };
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
            let (cpu, p50, p99) = round(kind, Consume::EachAcked, None, rate, secs).await;
            println!("  | {kind} | {rate:.0} | {cpu:.0} µs | {p50:.2} ms | {p99:.2} ms |");
        }
    }
    // A hop taken apart at one rate: what the publish, the delivery and the settling cost.
    let rate = if full { 500.0 } else { 200.0 };
    println!("a hop taken apart at {rate:.0} messages/s:");
    println!("  | queue type | published | consumed | RabbitMQ CPU per message | publish -> confirm p50 | p99 |");
    println!("  |---|---|---|---|---|---|");
    let ms = Duration::from_millis;
    let parts = [
        ("quorum", None, Consume::EachAcked),
        ("quorum", None, Consume::Not),
        ("quorum", None, Consume::NoAck),
        ("quorum", None, Consume::AckedEvery10Ms),
        ("quorum", Some(ms(2)), Consume::EachAcked),
        ("quorum", Some(ms(5)), Consume::EachAcked),
        ("quorum", Some(ms(10)), Consume::EachAcked),
        ("quorum", Some(ms(10)), Consume::AckedEvery10Ms),
        ("stream", None, Consume::EachAcked),
        ("stream", None, Consume::Not),
    ];
    for (kind, gather, how) in parts {
        let (cpu, p50, p99) = round(kind, how, gather, rate, secs).await;
        let published = match gather {
            None => "each alone".to_owned(),
            Some(d) => format!("gathered every {} ms", d.as_millis()),
        };
        println!(
            "  | {kind} | {published} | {} | {cpu:.0} µs | {p50:.2} ms | {p99:.2} ms |",
            how.label()
        );
    }
    if !full {
        println!("  (smoke round; `cargo bench --bench broker` for the real figures)");
    }
}
