//! Items per second through parse -> decide -> serialise, in-memory state, one core.
//!
//! `cargo bench --bench engine` runs it in full; under `cargo test` it runs a small smoke round.

use std::sync::Arc;
use std::time::Instant;

use coexist::core::apply::Applier;
use coexist::core::engine::RuleBook;
use coexist::core::engine::{decide, state::State, Input, Rules};
use coexist::core::meta::parse_body;
use coexist::core::store::memory::MemoryStore;
use coexist::core::time::Millis;

fn body(i: usize) -> Vec<u8> {
    let customer = 5_215_550_000_000u64 + (i % 10_000) as u64;
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"310000000000077","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"5215550009999","phone_number_id":"410000000000088"}},"contacts":[{{"profile":{{"name":"Cliente {i}"}},"wa_id":"{customer}"}}],"messages":[{{"from":"{customer}","id":"wamid.HBgNNTIxNTU1MDAwMDAwMBUCABIYFjNFQjA{i:010}","timestamp":"{}","type":"text","text":{{"body":"Hola, ¿tienen envío a domicilio hoy? Pedido {i}"}}}}]}},"field":"messages"}}]}}]}}"#,
        1_764_000_000 + i / 100
    )
    .into_bytes()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 400_000 } else { 2_000 };
    let bodies: Vec<Vec<u8>> = (0..n).map(body).collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // 1. Parse only.
    let start = Instant::now();
    let mut items = 0usize;
    for b in &bodies {
        items += parse_body(b).unwrap().items.len();
    }
    let parse = start.elapsed();

    // 2. Parse + decide + serialise events, without a store (the pure core).
    let rules = Rules::default();
    let start = Instant::now();
    let mut out_bytes = 0usize;
    for b in &bodies {
        for item in parse_body(b).unwrap().items {
            let d = decide(
                &State::default(),
                &Input::Item(&item),
                &item.scope,
                Millis::from_secs(1_764_000_000),
                &rules,
            );
            for e in &d.events {
                out_bytes += serde_json::to_vec(e).unwrap().len();
            }
        }
    }
    let pure = start.elapsed();

    // 3. The whole engine path over the in-memory store: parse, load, decide, encode, commit, acknowledge.
    let engine = Applier::new(MemoryStore::new(), Arc::new(RuleBook::default()));
    let start = Instant::now();
    let mut events = 0usize;
    rt.block_on(async {
        for (i, b) in bodies.iter().enumerate() {
            for item in parse_body(b).unwrap().items {
                let applied = engine
                    .apply(
                        &Input::Item(&item),
                        Millis::from_secs(1_764_000_000 + (i / 100) as i64),
                    )
                    .await
                    .unwrap();
                events += applied.events.len();
                engine.acknowledge(&applied).await.unwrap();
            }
        }
    });
    let full_path = start.elapsed();
    assert_eq!(events, items, "one event per customer message");

    let rate = |d: std::time::Duration| items as f64 / d.as_secs_f64();
    println!(
        "engine benchmark: {items} single-text-message bodies ({} bytes each on average), one core",
        bytes / n
    );
    println!(
        "  parse only                          {:>10.0} items/s",
        rate(parse)
    );
    println!(
        "  parse + decide + serialise (pure)   {:>10.0} items/s  ({} bytes of events)",
        rate(pure),
        out_bytes
    );
    println!(
        "  parse + engine over memory store    {:>10.0} items/s  (goal: 150000)",
        rate(full_path)
    );
    if !full {
        println!("  (smoke round; `cargo bench --bench engine` for the real figures)");
    }
}
