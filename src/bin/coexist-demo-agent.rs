//! The reference AI agent: everything an integrator needs to put an agent behind coexist.
//!
//! `target/release/coexist-demo-agent` (built by `scripts/up`, which also starts it). It consumes
//! the AI agent's events from `{ns}.bot.events` and answers each customer message through the
//! reply gate, after "thinking" for `AGENT_THINKING` (default `2s`, as a real model takes): a
//! person who answers from the Business App meanwhile holds the conversation, and the gate
//! refuses the reply (`409 conversation_held`). The whole integration is four things, marked
//! INTEGRATION below:
//!
//! 1. Read `message.received` from `{ns}.bot` (here: its default queue `{ns}.bot.events`).
//! 2. Send the reply to the gate instead of Meta: same path, same body, same `Authorization`;
//!    only the base URL changes (`https://graph.facebook.com` -> the gate's address).
//! 3. Add the event's `reply_token` as `X-Coexist-Reply-Token`. A `409` means "a human holds
//!    this conversation, or it changed hands since": drop the reply (the inbox got it as
//!    `reply.suppressed`).
//! 4. On `session.paused`, stop working on that customer; when they come back, the first
//!    `message.received` carries `handback` (what the human and the customer said meanwhile).
//!
//! Environment: `COEXIST_AMQP_URL`, `COEXIST_NAMESPACE` (as coexist's), `AGENT_GATE_URL`
//! (default `http://127.0.0.1:8081`), `AGENT_META_TOKEN` (your Cloud API token; the gate passes
//! it on and keeps none of its own), `AGENT_GRAPH_VERSION` (default `v21.0`), `AGENT_THINKING`
//! (how long an answer takes, e.g. `500ms`, `2s`; default `2s`).

use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use serde_json::{json, Value};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let amqp = env("COEXIST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    let ns = env("COEXIST_NAMESPACE", "coexist");
    let gate = env("AGENT_GATE_URL", "http://127.0.0.1:8081");
    let meta_token = env("AGENT_META_TOKEN", "local-development-meta-token");
    let version = env("AGENT_GRAPH_VERSION", "v21.0");
    let thinking = humantime::parse_duration(&env("AGENT_THINKING", "2s"))
        .map_err(|e| format!("AGENT_THINKING: {e}"))?;
    let http: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    // INTEGRATION 1: the AI agent's events.
    let conn = lapin::Connection::connect(&amqp, Default::default()).await?;
    let ch = conn.create_channel().await?;
    let queue = format!("{ns}.bot.events");
    let mut events = ch
        .basic_consume(
            queue.as_str().into(),
            "reference-agent".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    println!(
        "agent: reading {queue}, answering through {gate} after thinking {}",
        humantime::format_duration(thinking)
    );

    // Customers' names as their messages gave them (other events name the number only).
    let mut names: std::collections::HashMap<String, String> = Default::default();
    while let Some(delivery) = events.next().await {
        let delivery = delivery?;
        let event: Value = serde_json::from_slice(&delivery.data)?;
        let pnid = event["phone_number_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let customer = event["customer"].clone();
        let id = customer["wa_id"]
            .as_str()
            .or(customer["user_id"].as_str())
            .unwrap_or_default()
            .to_owned();
        if let Some(name) = customer["name"].as_str() {
            names.insert(id.clone(), name.to_owned());
        }
        let who = names.get(&id).cloned().unwrap_or(id);
        match event["type"].as_str() {
            Some("message.received") => {
                let text = event["message"]["text"].as_str().unwrap_or_default();
                // INTEGRATION 4: after a human's stretch, what was said meanwhile.
                let handback = &event["handback"];
                let answer = if handback.is_null() {
                    println!("agent: {who} asked {text:?}; thinking…");
                    format!("You said: {text}")
                } else {
                    let n = handback["messages"].as_array().map_or(0, Vec::len);
                    println!(
                        "agent: {who} is back after a person's stretch ({}): I get the {n} message(s) they exchanged (handback), then {text:?}; thinking…",
                        handback["reason"].as_str().unwrap_or("?")
                    );
                    format!("I'm back (a colleague helped you: {n} message(s)). You said: {text}")
                };
                // A reply addressed as Meta takes it: `to` a phone number, else `recipient`.
                let mut reply = json!({"messaging_product": "whatsapp", "type": "text", "text": {"body": answer}});
                match customer["wa_id"].as_str() {
                    Some(phone) => reply["to"] = json!(phone),
                    None => reply["recipient"] = customer["user_id"].clone(),
                }
                // INTEGRATION 2 and 3: the gate's address, the reply token.
                let request = hyper::Request::post(format!("{gate}/{version}/{pnid}/messages"))
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {meta_token}"))
                    .header(
                        "x-coexist-reply-token",
                        event["reply_token"].as_str().unwrap_or_default(),
                    )
                    .body(Full::new(Bytes::from(reply.to_string())))?;
                // The model takes its time; meanwhile the next events are read (a person may
                // take the conversation: the gate then refuses this reply).
                let http = http.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(thinking).await;
                    match http.request(request).await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body = match response.into_body().collect().await {
                                Ok(b) => b.to_bytes(),
                                Err(_) => Bytes::new(),
                            };
                            let body: Value = serde_json::from_slice(&body).unwrap_or_default();
                            match status {
                                200..=299 => println!(
                                    "agent: answered {who} (Meta's id {})",
                                    body["messages"][0]["id"]
                                ),
                                409 => println!(
                                    "agent: my reply to {who} was REFUSED by the gate: 409 {} (a person holds the conversation; the inbox got my reply as reply.suppressed)",
                                    body["error"]["error_data"]["reason"].as_str().unwrap_or("?")
                                ),
                                _ => println!(
                                    "agent: Meta or the gate said {status} for {who}: {body}"
                                ),
                            }
                        }
                        Err(e) => println!("agent: the gate is unreachable: {e}"),
                    }
                });
            }
            // INTEGRATION 4: a human took over: stop working on this customer (a reply already
            // on its way is refused by the gate).
            Some("session.paused") => {
                println!(
                    "agent: a person took {who}'s conversation from the Business App (until {})",
                    event["paused_until"].as_str().unwrap_or("?")
                );
            }
            Some(other) => println!("agent: {other} for {who}"),
            None => {}
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}
