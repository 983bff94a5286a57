//! A local stand-in for Meta's Graph API (which cannot be reached from here): it records every
//! request that reaches it and answers as Meta does: a send with a wamid; for onboarding, the
//! number's fields, `subscribed_apps`, and each sync of `smb_app_data` accepted once per number
//! and refused the second time (as Meta refuses a sync made before).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;

/// A request that reached the stand-in.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub body: Bytes,
    pub at: Instant,
}

#[derive(Default)]
struct Book {
    received: Vec<Received>,
    /// Answer with this status and body instead of accepting.
    answer: Option<(u16, String)>,
    /// Hold every answer this long.
    delay: Duration,
    /// What `GET /{version}/{id}` answers (Meta's fields of a number).
    number: Option<serde_json::Value>,
    /// Syncs accepted so far, by number and `sync_type`.
    syncs: std::collections::HashMap<(String, String), u32>,
    /// `sync_type`s whose answer is lost: the request is recorded (and counts as made), then the
    /// connection breaks before the answer.
    lose: Vec<String>,
}

/// The stand-in, serving until dropped.
pub struct GraphStandIn {
    pub url: String,
    book: Arc<Mutex<Book>>,
    task: tokio::task::JoinHandle<()>,
}

impl GraphStandIn {
    pub async fn start() -> GraphStandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let book: Arc<Mutex<Book>> = Arc::default();
        let app = Router::new().fallback(record).with_state(book.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GraphStandIn { url, book, task }
    }

    /// Everything that reached it so far.
    pub fn received(&self) -> Vec<Received> {
        self.book.lock().unwrap().received.clone()
    }

    /// From now on answers `status` with `body` (Meta refusing), instead of accepting.
    pub fn answer_with(&self, status: u16, body: &str) {
        self.book.lock().unwrap().answer = Some((status, body.to_owned()));
    }

    /// From now on answers `GET /{version}/{id}` with these fields of the number.
    pub fn number_is(&self, fields: serde_json::Value) {
        self.book.lock().unwrap().number = Some(fields);
    }

    /// From now on loses the answer to every `smb_app_data` request of `sync_type` (the request
    /// is made at "Meta", the answer never arrives).
    pub fn lose_answers_to(&self, sync_type: &str) {
        self.book.lock().unwrap().lose.push(sync_type.to_owned());
    }

    /// From now on holds every answer this long.
    pub fn delay(&self, by: Duration) {
        self.book.lock().unwrap().delay = by;
    }
}

impl Drop for GraphStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(book): State<Arc<Mutex<Book>>>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let (n, answer, delay) = {
        let mut book = book.lock().unwrap();
        book.received.push(Received {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: body.clone(),
            at: Instant::now(),
        });
        let n = book.received.len();
        let answer = match book.answer.clone() {
            Some(a) => Some(a),
            None => onboarding_answer(&mut book, &method, uri.path(), &body),
        };
        (n, answer, book.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, body) = match answer {
        Some((0, _)) => {
            // A lost answer: the headers go out, then the connection breaks.
            let broken = futures_util::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("the answer was lost"))
            });
            return (StatusCode::OK, axum::body::Body::from_stream(broken)).into_response();
        }
        Some(a) => a,
        None => {
            let to: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let input = to["to"].as_str().or(to["recipient"].as_str()).unwrap_or("");
            let accepted = serde_json::json!({
                "messaging_product": "whatsapp",
                "contacts": [{"input": input, "wa_id": input}],
                "messages": [{"id": format!("wamid.STANDIN{n}")}],
            });
            (200, accepted.to_string())
        }
    };
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body,
    )
        .into_response()
}

/// Meta's answers to onboarding's calls (`None`: not one of them). Status 0: the answer is lost.
fn onboarding_answer(
    book: &mut Book,
    method: &axum::http::Method,
    path: &str,
    body: &[u8],
) -> Option<(u16, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", [_version, _id]) => {
            let fields = book.number.clone().unwrap_or_else(|| {
                serde_json::json!({"is_on_biz_app": true, "platform_type": "CLOUD_API",
                    "display_phone_number": "+1 555-000-9999", "verified_name": "Test Shop"})
            });
            Some((200, fields.to_string()))
        }
        ("POST", [_version, _waba, "subscribed_apps"]) => {
            Some((200, r#"{"success":true}"#.to_owned()))
        }
        ("POST", [_version, id, "smb_app_data"]) => {
            let asked: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let sync = asked["sync_type"].as_str().unwrap_or("").to_owned();
            let made = book
                .syncs
                .entry((id.to_string(), sync.clone()))
                .or_default();
            *made += 1;
            if *made > 1 {
                let refused = serde_json::json!({"error": {
                    "message": format!("(#100) {sync} was already requested for this phone number"),
                    "type": "OAuthException", "code": 100, "fbtrace_id": "STANDIN"}});
                return Some((400, refused.to_string()));
            }
            if book.lose.contains(&sync) {
                return Some((0, String::new()));
            }
            let accepted = serde_json::json!({"messaging_product": "whatsapp",
                "request_id": format!("REQ-{sync}-{id}")});
            Some((200, accepted.to_string()))
        }
        _ => None,
    }
}
