//! A stand-in for Meta's Graph API, for trying coexist on one machine (Meta cannot be reached
//! from a laptop without a real number): prints every request that reaches it and answers as
//! Meta does: a send with a made-up wamid; onboarding's calls (`coexist number onboard`) with a
//! number on the Business App, `subscribed_apps`, and each sync accepted once per number and
//! refused the second time, as Meta does. `scripts/up` starts it and points the gate at it.
//!
//! `target/release/coexist-demo-graph` (built and started by `scripts/up`) listens on
//! `STAND_IN_LISTEN` (default `127.0.0.1:8090`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::Router;
use serde_json::{json, Value};

static SENT: AtomicU64 = AtomicU64::new(0);
static SYNCS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("STAND_IN_LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("graph stand-in: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    println!("graph stand-in: answering as Meta on http://{listen}");
    let app = Router::new().fallback(|method: Method, uri: Uri, body: Bytes| async move {
        println!(
            "graph stand-in: {method} {uri} {}",
            String::from_utf8_lossy(&body)
        );
        let (status, answer) = answer(&method, uri.path(), &body);
        (status, axum::Json(answer))
    });
    axum::serve(listener, app).await
}

fn answer(method: &Method, path: &str, body: &[u8]) -> (StatusCode, Value) {
    let sent: Value = serde_json::from_slice(body).unwrap_or_default();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", [_, _id]) => (
            StatusCode::OK,
            json!({"is_on_biz_app": true, "platform_type": "CLOUD_API",
                   "display_phone_number": "+1 555-000-9999", "verified_name": "Demo Shop"}),
        ),
        ("POST", [_, _, "subscribed_apps"]) => (StatusCode::OK, json!({"success": true})),
        ("POST", [_, id, "smb_app_data"]) => {
            let sync = sent["sync_type"].as_str().unwrap_or("").to_owned();
            let mut made = SYNCS.lock().unwrap();
            match made
                .get_or_insert_with(HashSet::new)
                .insert(format!("{id}:{sync}"))
            {
                true => (
                    StatusCode::OK,
                    json!({"messaging_product": "whatsapp", "request_id": format!("REQ-{sync}-{id}")}),
                ),
                false => (
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"message": format!("(#100) {sync} was already requested for this phone number"), "type": "OAuthException", "code": 100}}),
                ),
            }
        }
        _ => {
            let n = SENT.fetch_add(1, Ordering::Relaxed) + 1;
            let input = sent["to"]
                .as_str()
                .or(sent["recipient"].as_str())
                .unwrap_or("");
            (
                StatusCode::OK,
                json!({
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": input, "wa_id": input}],
                    "messages": [{"id": format!("wamid.STANDIN{n}")}],
                }),
            )
        }
    }
}
