//! Items per second through the Redis store with 64 conversations in flight, beside the figure of
//! `redis-benchmark -t set -c 64 -q` taken in the same run.
//!
//! `cargo bench --bench redis_store` runs it in full; under `cargo test` it runs a smoke round.
//! Needs Redis on 127.0.0.1:6379 (COEXIST_TEST_REDIS_URL overrides).

mod common;

use std::sync::Arc;
use std::time::Instant;

use coexist::adapters::redis::RedisStore;
use coexist::core::apply::Applier;
use coexist::core::engine::RuleBook;
use coexist::core::engine::{Input, Rules};
use coexist::core::meta::parse_body;
use coexist::core::time::Millis;

const IN_FLIGHT: usize = 64;

fn body(conv: usize, i: usize, ts: i64) -> Vec<u8> {
    let customer = 5_215_550_000_000u64 + conv as u64;
    // Every 50th item of a conversation is an echo (a handover), the rest customer messages.
    if i % 50 == 25 {
        format!(r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"smb_message_echoes","value":{{"metadata":{{"display_phone_number":"5215550009999","phone_number_id":"410000000000088"}},"message_echoes":[{{"from":"5215550009999","to":"{customer}","id":"wamid.E{conv}.{i}","timestamp":"{ts}","type":"text","text":{{"body":"te atiendo"}}}}]}}}}]}}]}}"#).into_bytes()
    } else {
        format!(r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"metadata":{{"display_phone_number":"5215550009999","phone_number_id":"410000000000088"}},"contacts":[{{"profile":{{"name":"C"}},"wa_id":"{customer}"}}],"messages":[{{"from":"{customer}","id":"wamid.C{conv}.{i}","timestamp":"{ts}","type":"text","text":{{"body":"hola {i}"}}}}]}}}}]}}]}}"#).into_bytes()
    }
}

fn redis_benchmark(n: usize) -> String {
    match std::process::Command::new("redis-benchmark")
        .args(["-t", "set", "-c", "64", "-q", "-n", &n.to_string()])
        .output()
    {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            text.rsplit('\r').next().unwrap_or(&text).trim().to_owned()
        }
        Ok(o) => format!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("redis-benchmark not available: {e}"),
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let per_conv = if full { 1_600 } else { 20 };
    let url = common::redis_url();
    let ns = format!("bench-{}-{}", std::process::id(), Millis::now().0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Millis::now().0 / 1000;
    let (items, elapsed, events) = rt.block_on(async {
        let store = RedisStore::connect(&url, &ns)
            .await
            .expect("Redis on 127.0.0.1:6379");
        let engine = Arc::new(Applier::new(
            store,
            Arc::new(RuleBook {
                default: Rules::default(),
                numbers: Default::default(),
            }),
        ));
        let start = Instant::now();
        let tasks: Vec<_> = (0..IN_FLIGHT)
            .map(|conv| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let mut events = 0;
                    for i in 0..per_conv {
                        let b = body(conv, i, t);
                        for item in parse_body(&b).unwrap().items {
                            let applied = engine
                                .apply(&Input::Item(&item), Millis::from_secs(t))
                                .await
                                .unwrap();
                            events += applied.events.len();
                            engine.acknowledge(&applied).await.unwrap();
                        }
                    }
                    events
                })
            })
            .collect();
        let mut events = 0;
        for task in tasks {
            events += task.await.unwrap();
        }
        let elapsed = start.elapsed();
        common::clear_keys(&mut engine.store().connection(), &ns).await;
        (IN_FLIGHT * per_conv, elapsed, events)
    });
    let reference = redis_benchmark(if full { 200_000 } else { 2_000 });
    println!("redis store benchmark: {items} items ({IN_FLIGHT} conversations in flight, 1 echo per 50 items), {events} events");
    println!(
        "  engine over Redis store             {:>10.0} items/s  (goal: 30000)",
        items as f64 / elapsed.as_secs_f64()
    );
    println!("  redis-benchmark -t set -c 64 -q     {reference}");
    println!("  (each item is one MGET and one EVALSHA commit, plus a SET on acknowledgement)");
    if !full {
        println!("  (smoke round; `cargo bench --bench redis_store` for the real figures)");
    }
}
