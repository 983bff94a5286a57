//! `coexist ingress`: Meta's webhook endpoint (docs/contract.md, "Ingress").
//!
//! `POST /webhook` checks `X-Hub-Signature-256` (HMAC-SHA256 of the raw body under any configured
//! app secret, compared in constant time), splits the body into one unit per business number,
//! publishes each to its number's partition, and answers `200` only once the broker has
//! confirmed every message. A correctly signed body that cannot be read is parked in `{ns}.dead`
//! with the reason and still answered `200`. Broker down or a publish unconfirmed: `503`, and
//! Meta retries.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{started, Part};
use crate::adapters::broker::{Link, Outgoing, Stage, Topology, ITEM_TYPE, WEBHOOK_TYPE};
use crate::core::meta::parse_body;
use crate::core::time::Millis;
use crate::core::unit;
use crate::runtime::config::Config;
use crate::runtime::http::BodyBudget;
use crate::runtime::metrics::{DEAD_LETTERS, WEBHOOKS};
use crate::runtime::secret::Secret;
use crate::runtime::supervise::{Ended, Handle};

/// The ingress's shared state.
#[derive(Clone)]
pub struct Ingress {
    secrets: Arc<Vec<Secret>>,
    verify_token: Option<Secret>,
    /// Shared, not copied: the state is cloned for every request.
    topology: Arc<Topology>,
    link: Arc<Link>,
    /// Bodies in memory at once, and how long one may take to arrive.
    bodies: BodyBudget,
    /// Webhooks waiting for broker confirms; when none is left, `503` at once (load shedding).
    pending: Arc<Semaphore>,
}

impl Ingress {
    pub fn new(config: &Config, link: Arc<Link>) -> Self {
        Ingress {
            secrets: Arc::new(config.app_secrets.clone()),
            verify_token: config.verify_token.clone(),
            topology: Arc::new(Topology::new(&config.namespace, config.partitions)),
            link,
            bodies: BodyBudget::new(
                config.http.max_buffered_bytes,
                config.max_body_bytes,
                config.http.body_timeout,
            ),
            pending: Arc::new(Semaphore::new(config.http.max_pending)),
        }
    }

    /// The public routes: `/webhook` (GET handshake, POST), `/healthz`, `/readyz`. `/metrics`
    /// is on the admin address only ([`start_with`]).
    pub fn router(self) -> Router {
        let ready = self.readiness();
        Router::new()
            .route("/webhook", get(handshake).post(receive))
            .with_state(self)
            .merge(crate::runtime::http::probe_routes(ready))
    }

    fn readiness(&self) -> crate::runtime::http::Readiness {
        let link = self.link.clone();
        Arc::new(move || vec![("rabbitmq", link.check())])
    }
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under one of the secrets.
pub fn signature_valid(secrets: &[Secret], header: Option<&str>, body: &[u8]) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    // Every secret is tried (no early exit), so timing does not tell which one matched.
    secrets.iter().fold(false, |found, secret| {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(body);
        mac.verify_slice(&expected).is_ok() | found
    })
}

/// The `X-Hub-Signature-256` value for a body (for tests and load tools).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(serde::Deserialize)]
struct HandshakeQuery {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

async fn handshake(
    State(s): State<Ingress>,
    Query(q): Query<HandshakeQuery>,
) -> (StatusCode, String) {
    let token_ok = match (&s.verify_token, &q.token) {
        (Some(want), Some(got)) => bool::from(want.expose().as_bytes().ct_eq(got.as_bytes())),
        _ => false,
    };
    match (q.mode.as_deref(), q.challenge) {
        (Some("subscribe"), Some(challenge)) if token_ok => (StatusCode::OK, challenge),
        _ => (StatusCode::FORBIDDEN, String::new()),
    }
}

fn rejected(reason: &'static str) {
    metrics::counter!(WEBHOOKS, "result" => "rejected", "reason" => reason).increment(1);
}

async fn receive(State(s): State<Ingress>, headers: HeaderMap, body: Body) -> Response {
    let held = match s.bodies.read(&headers, body).await {
        Ok(held) => held,
        Err(refusal) => {
            rejected(refusal.reason());
            return refusal.response();
        }
    };
    // The webhook's trace: continued from a proxy's `traceparent`, else begun here.
    let server = crate::runtime::trace::server("POST", "/webhook", &headers);
    let status = accept(&s, &headers, &held.bytes, &server).await;
    drop(held);
    crate::runtime::trace::end_server(&server, status, "refused");
    status.into_response()
}

/// Checks, splits and publishes one webhook's body; the status to answer.
async fn accept(
    s: &Ingress,
    headers: &HeaderMap,
    body: &[u8],
    server: &opentelemetry::Context,
) -> StatusCode {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature_valid(&s.secrets, signature, body) {
        rejected("signature");
        tracing::warn!(
            bytes = body.len(),
            "webhook with a missing or wrong signature refused"
        );
        return StatusCode::UNAUTHORIZED;
    }
    // Past this many webhooks awaiting confirms, queueing would only add latency: Meta retries.
    // Refused before any work is spent on the body.
    let Ok(_pending) = s.pending.try_acquire() else {
        rejected("shed");
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    let accepted_at = Millis::now();
    let (messages, parked) = match parse_body(body) {
        Err(e) => {
            tracing::warn!(error = %e, bytes = body.len(), "signed body that is not a webhook: parked in the dead-letter queue");
            let id = crate::core::domain::stable_id(&[&String::from_utf8_lossy(body)]);
            let letter = Outgoing::dead_letter(
                &s.topology,
                body.to_vec(),
                WEBHOOK_TYPE,
                Some(&id),
                &e.to_string(),
                Stage::Ingress,
                0,
            );
            (vec![letter], 1)
        }
        Ok(parsed) => {
            crate::core::meta::report(&parsed);
            let units = unit::split(parsed.items, accepted_at);
            let parked = parsed.unreadable.len();
            let mut out = Vec::with_capacity(units.len() + parked);
            out.extend(
                units
                    .iter()
                    .map(|u| Outgoing::unit(&s.topology, u, accepted_at)),
            );
            for part in parsed.unreadable {
                tracing::warn!(
                    reason = part.reason,
                    "part of a signed body cannot be placed: parked in the dead-letter queue"
                );
                out.push(Outgoing::dead_letter(
                    &s.topology,
                    part.raw.get().as_bytes().to_vec(),
                    ITEM_TYPE,
                    Some(&part.key),
                    &part.reason,
                    Stage::Ingress,
                    0,
                ));
            }
            (out, parked)
        }
    };
    // While the broker blocks publishers (a resource alarm): 503 at once, nothing published.
    if s.link.blocked().is_some() {
        rejected("broker_blocked");
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    // Every message carries the trace on to the worker.
    let key = match &messages[..] {
        [one] => Some(one.routing_key.as_str()),
        _ => None,
    };
    let sending =
        crate::runtime::trace::send(server, s.topology.inbound_exchange(), key, messages.len());
    let messages: Vec<Outgoing> = messages.into_iter().map(|m| m.traced(&sending)).collect();
    // Unconfirmed within the publisher's bound, or blocked meanwhile: 503, and Meta retries.
    let published = s.link.publish_all(&messages).await;
    crate::runtime::trace::end(&sending, published.as_ref().err().map(|_| "not confirmed"));
    match published {
        Ok(()) => {
            if parked > 0 {
                metrics::counter!(DEAD_LETTERS, "stage" => Stage::Ingress.as_str())
                    .increment(parked as u64);
            }
            let reason = if parked > 0 { "parked" } else { "ok" };
            metrics::counter!(WEBHOOKS, "result" => "accepted", "reason" => reason).increment(1);
            StatusCode::OK
        }
        Err(crate::adapters::broker::Error::Blocked(reason)) => {
            tracing::debug!(
                reason,
                "the broker blocks publishers: answered 503 (Meta retries)"
            );
            rejected("broker_blocked");
            StatusCode::SERVICE_UNAVAILABLE
        }
        Err(e) => {
            tracing::warn!(error = %e, "publishing a webhook failed: answered 503 (Meta retries)");
            rejected("broker_unavailable");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// A running ingress. Dropping it stops it (and its broker link).
pub struct Running {
    pub addr: std::net::SocketAddr,
    /// Where its `/healthz`, `/readyz` and `/metrics` answer (`None`: it serves none of its own,
    /// as in `serve`, where the worker's admin address serves the process's metrics).
    pub admin_addr: Option<std::net::SocketAddr>,
    pub link: Arc<Link>,
    handle: Handle,
}

impl Running {
    /// Stops gracefully and waits until it has.
    pub async fn stop(self) {
        self.handle.stop().await
    }

    /// Resolves when it has stopped: after its stop token was cancelled (`Ok`), or because one
    /// of its tasks ended by itself (`Err`, naming it).
    pub async fn stopped(self) -> Result<(), Ended> {
        self.handle.stopped().await
    }
}

/// Starts the ingress on `config.listen` (port 0 picks one), with its admin address on
/// `config.admin_listen`, until `shutdown` is cancelled.
pub async fn start(config: &Config, shutdown: &CancellationToken) -> std::io::Result<Running> {
    start_with(config, shutdown, true).await
}

/// [`start`], with an admin address of its own or not (`serve` has the worker's).
pub async fn start_with(
    config: &Config,
    shutdown: &CancellationToken,
    admin: bool,
) -> std::io::Result<Running> {
    crate::runtime::metrics::handle(); // the recorder must exist before the first count
    let topology = Topology::new(&config.namespace, config.partitions);
    let mut part = Part::new("ingress supervisor", shutdown);
    // The link outlives the HTTP server, so requests in flight at shutdown still get confirms.
    // On each connection it lays out the partitions if nobody has (a fresh namespace).
    let laying_out =
        super::layout::LayingOut::new(config, format!("ingress-{}", std::process::id()));
    let link = part.link_with(
        config,
        "coexist-ingress".into(),
        &topology,
        Some(Arc::new(laying_out)),
    );
    let ingress = Ingress::new(config, link.clone());
    let ready = ingress.readiness();
    let router = ingress.router();
    let limits = crate::runtime::http::Limits::new(config, WEBHOOKS);
    let stop = part.stop().clone();
    let (addr, http) = started!(
        part,
        crate::runtime::http::serve(config.listen, router, limits, stop.clone()).await
    );
    part.add("webhook server", http);
    let admin_addr = match admin {
        false => None,
        true => {
            let limits =
                crate::runtime::http::Limits::new(config, crate::runtime::metrics::ADMIN_CUTS);
            let routes = crate::runtime::http::admin_routes(ready);
            let (admin_addr, admin) = started!(
                part,
                crate::runtime::http::serve(config.admin_listen, routes, limits, stop).await
            );
            part.add("admin server", admin);
            Some(admin_addr)
        }
    };
    tracing::info!(%addr, admin = admin_addr.map(|a| a.to_string()), "ingress listening");
    Ok(Running {
        addr,
        admin_addr,
        link,
        handle: part.supervise(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let secrets = vec![
            Config::load(None, |k| {
                (k == "COEXIST_APP_SECRET").then(|| "old,new".to_owned())
            })
            .unwrap()
            .app_secrets,
        ]
        .remove(0);
        let good = sign("new", body);
        assert!(
            signature_valid(&secrets, Some(&good), body),
            "any configured secret (rotation)"
        );
        assert!(signature_valid(&secrets, Some(&sign("old", body)), body));
        assert!(!signature_valid(&secrets, Some(&sign("other", body)), body));
        assert!(!signature_valid(&secrets, None, body));
        assert!(!signature_valid(&secrets, Some("sha256=zz"), body));
        assert!(
            !signature_valid(&secrets, Some(good.trim_start_matches("sha256=")), body),
            "prefix required"
        );
        let mut tampered = body.to_vec();
        tampered[5] ^= 1;
        assert!(!signature_valid(&secrets, Some(&good), &tampered));
        assert!(
            !signature_valid(&[], Some(&good), body),
            "no secret, no entry"
        );
    }
}
