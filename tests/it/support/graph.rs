//! A local stand-in for Meta's Graph API (which cannot be reached from here): it records every
//! request that reaches it and answers as Meta does.

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
    pub path: String,
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
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let (n, answer, delay) = {
        let mut book = book.lock().unwrap();
        book.received.push(Received {
            path: uri.path().to_owned(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: body.clone(),
            at: Instant::now(),
        });
        (book.received.len(), book.answer.clone(), book.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, body) = answer.unwrap_or_else(|| {
        let to: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let input = to["to"].as_str().or(to["recipient"].as_str()).unwrap_or("");
        let accepted = serde_json::json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": input, "wa_id": input}],
            "messages": [{"id": format!("wamid.STANDIN{n}")}],
        });
        (200, accepted.to_string())
    });
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body,
    )
}
