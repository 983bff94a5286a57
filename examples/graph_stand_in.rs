//! A stand-in for Meta's Graph API, for trying the reply gate on one machine (Meta cannot be
//! reached from a laptop without a real number): prints every message that reaches it and
//! answers as Meta does, with a made-up wamid. `scripts/up` starts it and points the gate at it.
//!
//! `cargo run --example graph_stand_in` listens on `STAND_IN_LISTEN` (default `127.0.0.1:8090`).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::http::Uri;
use axum::Router;

static SENT: AtomicU64 = AtomicU64::new(0);

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("STAND_IN_LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("graph stand-in: answering as Meta on http://{listen}");
    let app = Router::new().fallback(|uri: Uri, body: Bytes| async move {
        let n = SENT.fetch_add(1, Ordering::Relaxed) + 1;
        println!("graph stand-in: {uri} {}", String::from_utf8_lossy(&body));
        let sent: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let input = sent["to"]
            .as_str()
            .or(sent["recipient"].as_str())
            .unwrap_or("");
        axum::Json(serde_json::json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": input, "wa_id": input}],
            "messages": [{"id": format!("wamid.STANDIN{n}")}],
        }))
    });
    axum::serve(listener, app).await
}
