//! How soon a runtime setting is used: the time from `number set` (here its operation,
//! `tools::numbers::change`, returning) to the first App message decided with the new reset
//! command, over 100 changes, with one ingress and one worker process on RabbitMQ and Redis here.
//!
//! Each round pauses a customer of its own with an App message, changes the number's reset text
//! to a new one, then posts App messages with the new text every 20 ms until the
//! `conversation.released` of that customer arrives: the figure is from the change to that
//! event, so it includes one trip through the pipeline and up to 20 ms of the posting interval
//! (an upper bound of the time the change takes to reach the worker).
//!
//! `cargo bench --bench numbers` runs 100 rounds; under `cargo test`, 3.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;

const PNID: &str = "410000000000000";

fn echo(customer: &str, wamid: &str, ts: i64, text: &str) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"smb_message_echoes","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"5215550009999","phone_number_id":"{PNID}"}},"message_echoes":[{{"from":"5215550009999","to":"{customer}","id":"{wamid}","timestamp":"{ts}","type":"text","text":{{"body":"{text}"}}}}]}}}}]}}]}}"#
    )
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { 100 } else { 3 };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let system = System::start("numbers", 4, 1).await;
        let ns = system.ns.clone();
        let vars = [
            ("COEXIST_NAMESPACE", ns.clone()),
            ("COEXIST_AMQP_URL", amqp_url()),
            ("COEXIST_REDIS_URL", redis_url()),
            ("COEXIST_PARTITIONS", "4".to_owned()),
        ];
        let config = coexist::runtime::config::Config::load(None, |k| {
            vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        })
        .unwrap();
        let store = coexist::adapters::redis::RedisStore::connect(&redis_url(), &ns).await.unwrap();
        let conn = coexist::adapters::broker::connect(&amqp_url(), "bench-numbers").await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut human = ch
            .basic_consume(
                format!("{ns}.human_chat.events").as_str().into(),
                "bench".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut client = Client::connect(system.ingress_addr).await;
        let ts = coexist::core::time::Millis::now().0 / 1000;
        let mut took = Vec::with_capacity(rounds);
        let mut sent = 0usize;
        for round in 0..rounds {
            let customer = format!("52155512{round:05}");
            // Paused by an App message, and the handover seen.
            assert_eq!(client.post(&echo(&customer, &format!("wamid.H{round}"), ts, "hola")).await, 200);
            loop {
                let d = human.next().await.unwrap().unwrap();
                let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
                if v["type"] == "conversation.handover" && v["customer"]["wa_id"] == customer.as_str() {
                    break;
                }
            }
            let reset = format!("/r{round}");
            let asked = vec![("reset_text".to_owned(), Some(serde_json::Value::String(reset.clone())))];
            coexist::tools::numbers::change(&store, &config, PNID, &asked, Some("bench".into()))
                .await
                .unwrap();
            let changed = Instant::now();
            let released = loop {
                sent += 1;
                let body = echo(&customer, &format!("wamid.R{sent}"), ts, &reset);
                assert_eq!(client.post(&body).await, 200);
                let wait = tokio::time::timeout(Duration::from_millis(20), async {
                    loop {
                        let d = human.next().await.unwrap().unwrap();
                        let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
                        if v["type"] == "conversation.released" && v["customer"]["wa_id"] == customer.as_str() {
                            return Instant::now();
                        }
                    }
                });
                if let Ok(at) = wait.await {
                    break at;
                }
            };
            took.push(released.duration_since(changed));
        }
        took.sort();
        let ms = |q: f64| {
            let i = ((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1;
            took[i].as_secs_f64() * 1000.0
        };
        println!("runtime settings: `number set` -> first App message decided with the new reset command ({rounds} changes, one worker, App messages posted every 20 ms)");
        println!("  p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms   (contract: within 2 s; each process reads the registry's version every 500 ms)", ms(0.5), ms(0.99), ms(1.0));
        let _ = conn.close(200, "done".into()).await;
        system.stop().await;
    });
}
