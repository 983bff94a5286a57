//! `coexist gate`: the reply gate (docs/contract.md, "Reply gate"; R17). The AI agent sends its
//! WhatsApp messages through it instead of straight to Meta, changing only its Graph API base
//! URL (and adding the `reply_token` of the message it answers).
//!
//! For `POST /{version}/{phone_number_id}/messages` it reads the conversation's state from Redis
//! as it is now, by any of the customer's names, and in the same step marks the reply in flight
//! unless a pause is in force ([`RedisStore::hold_for_reply`]); a worker that commits a pause
//! waits for the replies in flight before it publishes the handover. So once the handover is
//! published, nothing more of the AI agent's reaches Meta. It refuses (`409`, Meta's error shape)
//! while a human holds the conversation, for a token that names an earlier hand, and for a
//! free-form message past the service window; otherwise it forwards the body as it came, with
//! the agent's `Authorization`, and answers Meta's status and body as they are. Refusals publish
//! `reply.suppressed`, accepted replies `message.sent_by_bot` (human_chat); a message is judged
//! only once its event has a place in the publishing queue (`503` when none comes free in 2 s).
//! Meta unreachable or silent for 10 s: `502`, nothing published, nothing retried.
//!
//! `graph.rs` is the client to Meta; `events.rs` builds and publishes the gate's events.

pub mod events;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::{started, Part};
use crate::adapters::broker::Topology;
use crate::adapters::graph::Graph;
use crate::adapters::redis::RedisStore;
use crate::core::domain::{
    numeric_phone_number_id, valid_graph_version, valid_phone_number_id, CustomerKey, Scope,
};
use crate::core::engine::event::Refusal;
use crate::core::engine::reply::{judge, Reply};
use crate::core::engine::reply_token;
use crate::core::meta::reply::Send;
use crate::core::numbers::{LifeState, Shelf};
use crate::core::store::StateStore;
use crate::core::time::Clock;
use crate::runtime::config::Config;
use crate::runtime::http::{BodyBudget, Check};
use crate::runtime::metrics::{GATE_CUTS, GATE_SECONDS, REPLIES};
use crate::runtime::secret::Secret;
use crate::runtime::supervise::Listening;
use crate::services::numbers;
use events::Events;

/// The gate's own routes (besides `/healthz`, `/readyz`, `/metrics`): every one is in
/// docs/openapi.yaml, and the other way round (a test holds them together).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/{version}/{phone_number_id}/messages"),
    ("GET", "/v1/conversations/{phone_number_id}/{customer}"),
];

/// The header the agent names the message it answers with.
pub const REPLY_TOKEN_HEADER: &str = "x-coexist-reply-token";
/// The header that carries `COEXIST_GATE_TOKEN`.
pub const GATE_TOKEN_HEADER: &str = "x-coexist-gate-token";
/// The largest reply body taken.
const MAX_BODY: usize = 1 << 20;
/// How often Redis is checked for `/readyz`.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the gate's handlers share.
struct Gate {
    store: RedisStore,
    /// The numbers' rules and states now (followed from the registry).
    shelf: Shelf,
    graph: Graph,
    events: Events,
    token: Option<Secret>,
    /// Whether a message must carry the reply token of the message it answers.
    require_token: bool,
    bodies: BodyBudget,
    clock: Clock,
    log_content: bool,
    redis_ok: AtomicBool,
    /// Trail entries a conversation keeps (0: the gate writes none).
    trail: usize,
}

impl Gate {
    /// Adds a judged reply to its conversation's trail, beside the answer (best effort: the
    /// trail explains, it decides nothing).
    fn note(&self, scope: &Scope, entry: crate::core::engine::why::TrailEntry) {
        if self.trail == 0 {
            return;
        }
        let rules = self.shelf.current();
        let rules = rules.rules.for_number(&scope.phone_number_id);
        let retain = rules.timeout.max(rules.session_timeout) + crate::core::store::DEDUP_RETENTION;
        let (store, scope, keep) = (self.store.clone(), scope.clone(), self.trail);
        tokio::spawn(async move {
            if let Err(e) = store.trail_add(&scope, &entry, keep, retain).await {
                tracing::debug!(error = %e, "a reply's trail entry was not written");
            }
        });
    }
}

/// A running gate: [`Listening`]. Dropping it stops it.
pub type Running = Listening;

/// Why the gate refuses to start: one line.
pub fn check(config: &Config) -> Result<(), String> {
    if config.gate.token.is_none() && !config.gate.listen.ip().is_loopback() {
        return Err(format!(
            "config: gate_token: the reply gate listens on {} (not loopback) and needs COEXIST_GATE_TOKEN",
            config.gate.listen
        ));
    }
    Ok(())
}

/// Starts the gate on `config.gate.listen` (port 0 picks one) until `shutdown` is cancelled.
pub async fn start(config: &Config, shutdown: &CancellationToken) -> std::io::Result<Running> {
    check(config).map_err(std::io::Error::other)?;
    crate::runtime::metrics::handle();
    let topology = Topology::new(&config.namespace, config.partitions);
    let mut part = Part::new("gate supervisor", shutdown);
    let stop = part.stop().clone();
    let store = RedisStore::open_until(&config.redis, &config.namespace, 0, &stop).await?;
    // The link and the event publisher outlive the HTTP server: replies answered at shutdown
    // still get their events published (the publisher stops before the link it publishes on).
    let link = part.link(config, "coexist-gate".into(), &topology);
    let events_layer = part.layer();
    let (events, publisher) = Events::spawn(link.clone(), topology, events_layer.stop.clone());
    part.add_to(&events_layer, "gate events", publisher);
    let (shelf, following) = started!(part, numbers::shelf(&store, config, &stop).await);
    part.spawn("number registry", following);
    let gate = Arc::new(Gate {
        store,
        shelf,
        graph: Graph::new(&config.gate.graph_url),
        events,
        token: config.gate.token.clone(),
        require_token: config.gate.require_token,
        bodies: BodyBudget::new(
            config.http.max_buffered_bytes,
            MAX_BODY,
            config.http.body_timeout,
        ),
        clock: Clock::system(),
        log_content: config.log_content,
        redis_ok: AtomicBool::new(true),
        trail: config.trail_entries,
    });
    // Aligned before the first reply is judged (Redis answered just now).
    let _ = gate.store.align(&gate.clock).await;
    let redis_check = check_redis(gate.clone(), stop.clone());
    let ready_gate = gate.clone();
    let ready: crate::runtime::http::Readiness = Arc::new(move || {
        let redis_ok = ready_gate.redis_ok.load(Ordering::SeqCst);
        vec![
            ("redis", Check::from(redis_ok, "cannot reach Redis")),
            ("rabbitmq", link.check()),
        ]
    });
    let router = Router::new()
        .route("/{version}/{phone_number_id}/messages", post(send))
        .route(
            "/v1/conversations/{phone_number_id}/{customer}",
            get(conversation),
        )
        .with_state(gate)
        .merge(crate::runtime::http::admin_routes(ready));
    let limits = crate::runtime::http::Limits::new(config, GATE_CUTS);
    let (addr, http) = started!(
        part,
        crate::runtime::http::serve(config.gate.listen, router, limits, stop).await
    );
    part.add("gate server", http);
    part.spawn("redis check", redis_check);
    tracing::info!(%addr, "reply gate listening");
    Ok(Listening {
        addr,
        handle: part.supervise(),
    })
}

/// Keeps `/readyz`'s Redis check current (every [`CHECK_EVERY`]), and the gate's clock aligned with Redis's (the one
/// that expires pause keys: the gate and routing read one time).
async fn check_redis(gate: Arc<Gate>, stop: CancellationToken) {
    loop {
        let aligned = gate.store.align(&gate.clock).await;
        gate.redis_ok.store(aligned.is_ok(), Ordering::SeqCst);
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// An answer in the shape of Meta's errors: `{"error": {"message", "type", "code", ...}}`.
fn meta_error(status: StatusCode, kind: &str, message: &str, data: serde_json::Value) -> Response {
    let mut error = json!({
        "message": message,
        "type": kind,
        "code": status.as_u16(),
    });
    if !data.is_null() {
        error["error_data"] = data;
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

fn counted(result: &'static str, reason: &'static str) {
    metrics::counter!(REPLIES, "result" => result, "reason" => reason).increment(1);
}

impl Gate {
    /// Whether the request carries the gate token (when one is configured).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let given = headers
            .get(GATE_TOKEN_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        bool::from(want.expose().as_bytes().ct_eq(given))
    }

    fn state_unavailable(&self, e: &crate::core::store::Error) -> Response {
        self.redis_ok.store(false, Ordering::SeqCst);
        tracing::warn!(error = %e, "the reply gate cannot read conversation state: refusing to forward");
        counted("failed", "state_unavailable");
        meta_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "coexist_state_unavailable",
            "the conversation's state cannot be read now; nothing was sent",
            serde_json::Value::Null,
        )
    }
}

/// `401`: the gate token is missing or wrong.
fn unauthorized() -> Response {
    counted("failed", "unauthorized");
    meta_error(
        StatusCode::UNAUTHORIZED,
        "coexist_unauthorized",
        "X-Coexist-Gate-Token is missing or wrong",
        serde_json::Value::Null,
    )
}

/// `503`: no place for the reply's event came free in time (the broker is away or does not
/// keep up); nothing was judged or sent.
fn busy() -> Response {
    counted("failed", "events_backlogged");
    let mut response = meta_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "coexist_events_backlogged",
        "the gate's events cannot be published now (the broker is away or does not keep up); nothing was sent",
        serde_json::Value::Null,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// How long an agent is told to wait before sending again for an offboarded number (Meta
/// reconnects one by itself, usually within minutes).
const OFFBOARDED_RETRY_AFTER: &str = "60";

/// `503 number_offboarded` / `409 number_disconnected` for a number in that state; nothing for
/// the others.
fn number_refuses(state: LifeState) -> Option<Response> {
    let (status, reason) = match state {
        LifeState::Offboarded => (StatusCode::SERVICE_UNAVAILABLE, "number_offboarded"),
        LifeState::Disconnected => (StatusCode::CONFLICT, "number_disconnected"),
        _ => return None,
    };
    counted("refused", reason);
    let mut response = meta_error(
        status,
        "coexist_reply_refused",
        &format!("not sent: {}", crate::core::numbers::remedy(state, None)),
        json!({ "reason": reason }),
    );
    if state == LifeState::Offboarded {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(OFFBOARDED_RETRY_AFTER),
        );
    }
    Some(response)
}

fn bad_request(message: &str) -> Response {
    counted("failed", "bad_request");
    meta_error(
        StatusCode::BAD_REQUEST,
        "coexist_bad_request",
        message,
        serde_json::Value::Null,
    )
}

/// `POST /{version}/{phone_number_id}/messages`.
async fn send(
    State(gate): State<Arc<Gate>>,
    Path((version, pnid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    if !gate.authorized(&headers) {
        return unauthorized();
    }
    // The reply's trace continues here, and on to Meta and to the gate's events.
    let server =
        crate::runtime::trace::server("POST", "/{version}/{phone_number_id}/messages", &headers);
    let response = send_traced(&gate, &version, &pnid, &headers, body, started, &server).await;
    crate::runtime::trace::end_server(&server, response.status(), "failed");
    response
}

#[allow(clippy::too_many_arguments)]
async fn send_traced(
    gate: &Arc<Gate>,
    version: &str,
    pnid: &str,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
    trace: &opentelemetry::Context,
) -> Response {
    let held = match gate.bodies.read(headers, body).await {
        Ok(held) => held,
        Err(refusal) => {
            counted("failed", refusal.reason());
            return refusal.response();
        }
    };
    // Only Meta's forms reach the Graph URL: no dot segment can climb out of its path.
    if !valid_graph_version(version) || !numeric_phone_number_id(pnid) {
        return bad_request(
            "the path is not /{version}/{phone_number_id}/messages (a version such as v23.0, an id of digits)",
        );
    }
    // A number Meta suspended or removed: nothing is forwarded (docs/contract.md, "Numbers").
    if let Some(refused) = number_refuses(gate.shelf.current().state(pnid)) {
        return refused;
    }
    let mut reply = match crate::core::meta::reply::read(&held.bytes) {
        Ok(reply) => reply,
        Err(e) => return bad_request(&e),
    };
    // The event a message will publish (refused or accepted) has its place before anything is
    // judged or sent: while the broker does not keep up the gate slows down, then answers 503.
    let place = match reply.message {
        true => match gate.events.place().await {
            Some(place) => Some(place),
            None => return busy(),
        },
        false => None,
    };
    let token = headers
        .get(REPLY_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if gate.require_token && reply.message && token.is_none() {
        counted("failed", "no_reply_token");
        return bad_request(
            "COEXIST_GATE_REQUIRE_TOKEN is on: a message needs the X-Coexist-Reply-Token of the message it answers",
        );
    }
    match one_conversation(&gate.store, pnid, &reply.names).await {
        Ok(Some(name)) => reply.judge_as(name),
        Ok(None) => {
            counted("failed", "two_conversations");
            return bad_request(
                "the send names two conversations (its recipient fields name different customers): not sent",
            );
        }
        Err(e) => return gate.state_unavailable(&e),
    }
    let now = gate.clock.now();
    let found = match gate.store.hold_for_reply(pnid, reply.customer(), now).await {
        Ok(found) => found,
        Err(e) => return gate.state_unavailable(&e),
    };
    let book = gate.shelf.current();
    let rules = book.rules.for_number(pnid);
    let asked = Reply {
        token,
        free_form: reply.message && !reply.template,
    };
    // The pause key the script found is the truth, whatever the stored state says.
    let judged = match found.in_flight {
        true => judge(&found.state, &found.scope, asked, now, rules),
        false => Err(Refusal::ConversationHeld),
    };
    if let Err(reason) = judged {
        if found.in_flight {
            let _ = gate.store.reply_done(&found.scope).await;
        }
        if reply.message {
            let window =
                (found.state.last_customer_at).map(|t| t.plus(rules.service_window).rfc3339());
            let why = crate::core::engine::why::refusal(
                reason.as_str(),
                &found.state,
                window.as_deref(),
                now,
            );
            let id = events::suppressed_id(&found.scope, &reply, token, reason);
            gate.note(
                &found.scope,
                events::trail_entry(&reply, id, now, Err((reason, why))),
            );
        }
        return refuse(
            gate,
            place,
            &found.scope,
            &found.state,
            &reply,
            token,
            reason,
            now,
            started,
            trace,
        );
    }
    // Let through: forwarded as it came, with the agent's own credentials.
    let forwarded_at = Instant::now();
    let traceparent =
        crate::runtime::trace::traceparent(trace).and_then(|t| HeaderValue::from_str(&t).ok());
    let answer = gate
        .graph
        .send(
            version,
            pnid,
            headers.get(header::AUTHORIZATION),
            traceparent.as_ref().or(headers.get("traceparent")),
            held.bytes.clone(),
        )
        .await;
    let waited = forwarded_at.elapsed();
    if found.in_flight {
        // Meta has answered: the reply is no longer in flight. Cleared beside the answer to
        // the agent, not before it.
        let (store, scope) = (gate.store.clone(), found.scope.clone());
        tokio::spawn(async move {
            if let Err(e) = store.reply_done(&scope).await {
                tracing::warn!(error = %e, "a reply's in-flight mark was not cleared (it expires by itself)");
            }
        });
    }
    let response = match answer {
        Err(e) => {
            tracing::warn!(error = %e, "the reply gate could not reach Meta: answered 502, nothing published");
            counted("failed", "graph_unreachable");
            meta_error(
                StatusCode::BAD_GATEWAY,
                "coexist_graph_unreachable",
                &e.to_string(),
                serde_json::Value::Null,
            )
        }
        Ok(answer) => {
            if let Some(place) = place.filter(|_| (200..300).contains(&answer.status)) {
                match wamid(&answer.body) {
                    Some(wamid) => {
                        let entry =
                            events::trail_entry(&reply, format!("gate:{wamid}"), now, Ok(&wamid));
                        gate.note(&found.scope, entry);
                        let event = events::sent(&found.scope, &found.state, &reply, wamid, now);
                        gate.events.publish(place, event, trace);
                    }
                    None => tracing::warn!(
                        "Meta accepted a reply but named no message id: no message.sent_by_bot"
                    ),
                }
            }
            counted(
                "forwarded",
                if (200..300).contains(&answer.status) {
                    "accepted"
                } else {
                    "meta_error"
                },
            );
            let mut response = (
                StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY),
                answer.body,
            )
                .into_response();
            if let Some(ct) = answer.content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
        }
    };
    let own = started.elapsed().saturating_sub(waited);
    metrics::histogram!(GATE_SECONDS).record(own.as_secs_f64());
    response
}

/// The one conversation a send's names give (a phone number and a business-scoped id of one
/// customer are one conversation once linked): the name to judge it by. `None` when they name
/// two conversations that both exist. Of names whose conversations do not all exist, the one
/// that exists is judged (a pause is never missed for an unlinked second name).
async fn one_conversation(
    store: &RedisStore,
    pnid: &str,
    names: &[CustomerKey],
) -> crate::core::store::Result<Option<CustomerKey>> {
    if names.len() <= 1 {
        return Ok(names.first().cloned());
    }
    let links = store.resolve(pnid, names).await?;
    let mut ids: Vec<(CustomerKey, &CustomerKey)> = Vec::new();
    for (name, link) in names.iter().zip(links) {
        let id = link.unwrap_or_else(|| name.clone());
        if !ids.iter().any(|(i, _)| *i == id) {
            ids.push((id, name));
        }
    }
    if ids.len() == 1 {
        return Ok(Some(names[0].clone()));
    }
    let mut existing = Vec::new();
    for (id, name) in &ids {
        if store
            .has_state(&Scope::conversation(pnid, id.clone()))
            .await?
        {
            existing.push(*name);
        }
    }
    Ok(match existing.as_slice() {
        [] => Some(names[0].clone()),
        [one] => Some((*one).clone()),
        _ => None,
    })
}

/// A refusal: `409` in Meta's error shape, and `reply.suppressed` for a message.
#[allow(clippy::too_many_arguments)]
fn refuse(
    gate: &Gate,
    place: Option<events::Place>,
    scope: &Scope,
    state: &crate::core::engine::state::State,
    reply: &Send,
    token: Option<&str>,
    reason: Refusal,
    now: crate::core::time::Millis,
    started: Instant,
    trace: &opentelemetry::Context,
) -> Response {
    let paused_until = state.paused(now).map(|p| p.until.rfc3339());
    let conversation = match gate.log_content {
        true => scope.to_string(),
        false => scope.redacted(),
    };
    tracing::info!(
        conversation,
        reason = reason.as_str(),
        "the reply gate refused a reply of the AI agent"
    );
    if let Some(place) = place {
        let event = events::suppressed(scope, state, reply, token, reason, now);
        gate.events.publish_once(place, event, trace);
    }
    counted("refused", reason.as_str());
    let message = match reason {
        Refusal::ConversationHeld => "a human holds this conversation: the reply was not sent",
        Refusal::StaleReply => {
            "the conversation changed hands since the message this reply answers: not sent"
        }
        Refusal::OutsideServiceWindow => {
            "outside the customer service window only templates can be sent: not sent"
        }
    };
    let response = meta_error(
        StatusCode::CONFLICT,
        "coexist_reply_refused",
        message,
        json!({ "reason": reason.as_str(), "paused_until": paused_until }),
    );
    metrics::histogram!(GATE_SECONDS).record(started.elapsed().as_secs_f64());
    response
}

/// Meta's id of the message it accepted: `messages[0].id`.
fn wamid(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["messages"][0]["id"].as_str().map(str::to_owned)
}

/// `GET /v1/conversations/{phone_number_id}/{customer}`: who holds the conversation now, and
/// its reply token, for agents that send by themselves.
async fn conversation(
    State(gate): State<Arc<Gate>>,
    Path((pnid, customer)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !gate.authorized(&headers) {
        return unauthorized();
    }
    let Some(name) = CustomerKey::parse(&customer).filter(|_| valid_phone_number_id(&pnid)) else {
        return bad_request("not /v1/conversations/{phone_number_id}/{customer}");
    };
    let now = gate.clock.now();
    let resolved = gate.store.resolve(&pnid, std::slice::from_ref(&name)).await;
    let links = match resolved {
        Ok(links) => links,
        Err(e) => return gate.state_unavailable(&e),
    };
    let id = links.into_iter().next().flatten().unwrap_or(name);
    let scope = Scope::conversation(&pnid, id);
    let snapshot = match gate.store.load(&scope, "-", now).await {
        Ok(s) => s,
        Err(e) => return gate.state_unavailable(&e),
    };
    let state = snapshot.state;
    let paused = state.paused(now);
    let body = json!({
        "handler": if paused.is_some() { "human" } else { "bot" },
        "paused_until": paused.map(|p| p.until.rfc3339()),
        "reply_token": reply_token(&scope, state.hand_at(now)),
    });
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
