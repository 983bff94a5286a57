//! The admin API (docs/contract.md, "Admin API"; docs/openapi.yaml): JSON under `/api/v1` for a
//! platform's backend, with `Authorization: Bearer <token>` from `COEXIST_API_TOKEN` (the
//! token's name is `by.name` of what it changes). A caller limited to some numbers
//! (`name@ID+ID:token`) gets `404` for any other, as if it did not exist. Errors are
//! `{"error": {"code", "message"}}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{Console, CONNECT_WITHIN};
use crate::adapters::redis::{Added, PageCursor};
use crate::core::domain::{valid_phone_number_id, CustomerKey, Scope};
use crate::core::engine::OperatorAction;
use crate::core::time::Millis;
use crate::runtime::config::Operator;
use crate::tools::numbers::{self, Error};
use crate::tools::operator::{self, Command};

/// The routes, under `/api/v1` (every route here is in docs/openapi.yaml, and the other way
/// round: a test holds them together).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/numbers"),
    ("GET", "/api/v1/numbers/{id}"),
    ("PUT", "/api/v1/numbers/{id}"),
    ("DELETE", "/api/v1/numbers/{id}"),
    ("PATCH", "/api/v1/numbers/{id}/settings"),
    ("POST", "/api/v1/numbers/{id}/onboard"),
    ("GET", "/api/v1/numbers/{id}/check"),
    ("GET", "/api/v1/conversations"),
    ("GET", "/api/v1/conversations/{id}/{customer}"),
    ("POST", "/api/v1/conversations/{id}/{customer}/pause"),
    ("POST", "/api/v1/conversations/{id}/{customer}/release"),
    ("POST", "/api/v1/conversations/{id}/{customer}/extend"),
];

/// Conversations a page holds unless the caller asks for fewer.
const PAGE: usize = 100;

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/api/v1/numbers", get(list_numbers))
        .route(
            "/api/v1/numbers/{id}",
            get(show_number).put(put_number).delete(delete_number),
        )
        .route("/api/v1/numbers/{id}/settings", patch(patch_settings))
        .route("/api/v1/numbers/{id}/onboard", post(onboard_number))
        .route("/api/v1/numbers/{id}/check", get(check_number))
        .route("/api/v1/conversations", get(list_conversations))
        .route(
            "/api/v1/conversations/{id}/{customer}",
            get(show_conversation),
        )
        .route(
            "/api/v1/conversations/{id}/{customer}/{action}",
            post(act_on_conversation),
        )
}

/// An error answer.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (status, Json(body)).into_response()
}

/// An error answer where a `Result` carries it (boxed: a `Response` is large).
type Refused = Box<Response>;

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such number or conversation",
    )
}

fn failed(e: Error) -> Response {
    match e {
        Error::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid", &m),
        Error::Unknown(_) => not_found(),
        Error::Store(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "state_unavailable",
            &format!("cannot reach Redis: {e}"),
        ),
        Error::Broker(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            &format!("the settings changed, but number.updated could not be published: {e}"),
        ),
    }
}

impl Console {
    /// The caller the request's bearer token names; a wrong one is answered late, one at a time.
    async fn caller(&self, headers: &HeaderMap) -> Result<Operator, Refused> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if let Some(o) = Operator::find(&self.config.console.api, given.as_bytes()) {
            return Ok(o.clone());
        }
        let _one_at_a_time = self.guessing.lock().await;
        tokio::time::sleep(super::WRONG_TOKEN_DELAY).await;
        tracing::warn!("a request to the admin API without a valid token");
        Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authorization: Bearer <token> from COEXIST_API_TOKEN is missing or wrong",
        )
        .into())
    }
}

/// The number `id` if the caller may see it (else `404`, as if it did not exist).
fn visible<'a>(caller: &Operator, id: &'a str) -> Result<&'a str, Refused> {
    match valid_phone_number_id(id) && caller.sees(id) {
        true => Ok(id),
        false => Err(not_found().into()),
    }
}

/// A JSON object body (empty: `{}`).
fn object(body: &Bytes) -> Result<serde_json::Map<String, Value>, Refused> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Default::default());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the body must be a JSON object",
        )
        .into()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!("the body is not JSON: {e}"),
        )
        .into()),
    }
}

/// Refuses a body with a field not in `fields` (of `what`), naming it.
fn only(body: &serde_json::Map<String, Value>, fields: &[&str], what: &str) -> Result<(), Refused> {
    match body.keys().find(|k| !fields.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => {
            let m = format!("{k}: not a field of {what} ({})", fields.join(", "));
            Err(error(StatusCode::BAD_REQUEST, "invalid", &m).into())
        }
    }
}

macro_rules! caller {
    ($c:expr, $headers:expr) => {
        match $c.caller(&$headers).await {
            Ok(o) => o,
            Err(refused) => return *refused,
        }
    };
}

macro_rules! or_answer {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(answer) => return *answer,
        }
    };
}

async fn list_numbers(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let caller = caller!(c, headers);
    match numbers::list(&c.store, &c.config, Millis::now()).await {
        Ok(listed) => {
            let mine: Vec<_> = listed
                .into_iter()
                .filter(|n| caller.sees(&n.phone_number_id))
                .collect();
            Json(json!({ "numbers": mine })).into_response()
        }
        Err(e) => failed(e),
    }
}

async fn show_number(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = caller!(c, headers);
    let id = or_answer!(visible(&caller, &id));
    match c.store.number(id).await {
        Ok(None) => return not_found(),
        Err(e) => return failed(e.into()),
        Ok(Some(_)) => {}
    }
    match numbers::show(&c.store, &c.config, id).await {
        Ok(shown) => Json(shown).into_response(),
        Err(e) => failed(e),
    }
}

async fn put_number(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let caller = caller!(c, headers);
    let id = or_answer!(visible(&caller, &id));
    let body = or_answer!(object(&body));
    let text = |k: &str| -> Result<Option<String>, Refused> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(error(
                StatusCode::BAD_REQUEST,
                "invalid",
                &format!("{k}: expected a string"),
            )
            .into()),
        }
    };
    or_answer!(only(
        &body,
        &["waba_id", "name", "display_phone_number"],
        "a number"
    ));
    let added = Added {
        waba_id: or_answer!(text("waba_id")),
        name: or_answer!(text("name")),
        display_phone_number: or_answer!(text("display_phone_number")),
    };
    match numbers::add(&c.store, id, &added).await {
        Ok(record) => Json(record).into_response(),
        Err(e) => failed(e),
    }
}

async fn delete_number(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = caller!(c, headers);
    let id = or_answer!(visible(&caller, &id));
    match numbers::remove(&c.store, id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => failed(e),
    }
}

/// JSON merge patch of a number's runtime settings (RFC 7396): a key with a value sets it, a key
/// with `null` unsets it.
async fn patch_settings(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let caller = caller!(c, headers);
    let id = or_answer!(visible(&caller, &id));
    let patch = or_answer!(object(&body));
    let asked: numbers::Asked = patch
        .into_iter()
        .map(|(k, v)| (k, (!v.is_null()).then_some(v)))
        .collect();
    let by = Some(caller.name.clone());
    let event = match numbers::change(&c.store, &c.config, id, &asked, by).await {
        Ok(event) => event,
        Err(e) => return failed(e),
    };
    match numbers::show(&c.store, &c.config, id).await {
        Ok(shown) => Json(json!({
            "settings": shown.record.settings,
            "effective": shown.effective,
            "event": event.map(|e| e.event),
        }))
        .into_response(),
        Err(e) => failed(e),
    }
}

/// The number's post-setup checklist (as `number check --json`).
async fn check_number(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = caller!(c, headers);
    let id = or_answer!(visible(&caller, &id));
    match crate::tools::check::check(&c.store, &c.config, id).await {
        Ok(checked) => Json(checked).into_response(),
        Err(e) => failed(e),
    }
}

/// Onboards the number (or resumes its onboarding): `waba_id`, the business token as
/// `graph_token` (else the console's `COEXIST_GRAPH_TOKEN`; never stored, never logged), `again`.
async fn onboard_number(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    use crate::tools::onboard::{self, Stopped};
    let caller = caller!(c, headers);
    let id = or_answer!(visible(&caller, &id));
    let body = or_answer!(object(&body));
    or_answer!(only(
        &body,
        &["waba_id", "graph_token", "again"],
        "an onboarding"
    ));
    let Some(waba_id) = body.get("waba_id").and_then(Value::as_str) else {
        let m = "waba_id: the number's WhatsApp Business Account id is required";
        return error(StatusCode::BAD_REQUEST, "invalid", m);
    };
    let given = body.get("graph_token").and_then(Value::as_str);
    let token = match given.map(|t| crate::runtime::secret::Secret::new(t.trim().to_owned())) {
        Some(t) if !t.expose().is_empty() => t,
        _ => match &c.config.graph_token {
            Some(t) => t.clone(),
            None => {
                let m = "graph_token: the business token is required (or COEXIST_GRAPH_TOKEN on the console)";
                return error(StatusCode::BAD_REQUEST, "invalid", m);
            }
        },
    };
    let again = body.get("again").and_then(Value::as_bool).unwrap_or(false);
    let by = Some(caller.name.clone());
    match onboard::onboard(&c.store, &c.config, id, waba_id, &token, again, by).await {
        Ok(report) => Json(report).into_response(),
        Err(Stopped::Refused(why)) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "onboarding_refused", &why)
        }
        Err(e @ Stopped::Meta { .. }) => {
            error(StatusCode::BAD_GATEWAY, "meta_failed", &e.to_string())
        }
        Err(Stopped::Number(e)) => failed(e),
    }
}

#[derive(serde::Deserialize)]
struct PageQuery {
    number: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// The conversations with a human now, soonest release first, a page at a time (`next`: where
/// the next page starts, `null` at the end).
async fn list_conversations(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let caller = caller!(c, headers);
    if let Some(n) = &q.number {
        or_answer!(visible(&caller, n));
    }
    let after = match q.after.as_deref() {
        None => None,
        Some(a) => match PageCursor::decode(a) {
            Some(cursor) => Some(cursor),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "after: not a page cursor",
                )
            }
        },
    };
    let limit = q.limit.unwrap_or(PAGE).clamp(1, 1000);
    let number = q.number.clone();
    let sees = |pnid: &str| caller.sees(pnid) && number.as_deref().is_none_or(|n| n == pnid);
    match operator::list_visible(&c.store, Millis::now(), after, limit, sees).await {
        Ok((rows, next)) => Json(json!({
            "conversations": rows,
            "next": next.map(|n| n.encode()),
        }))
        .into_response(),
        Err(e) => failed(e.into()),
    }
}

/// The conversation `id`/`customer` if the caller may see it.
fn conversation(caller: &Operator, id: &str, customer: &str) -> Result<Scope, Refused> {
    let id = visible(caller, id)?;
    match CustomerKey::parse(customer) {
        Some(key) => Ok(Scope::conversation(id, key)),
        None => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the customer is neither a phone number nor a business-scoped user id",
        )
        .into()),
    }
}

async fn show_conversation(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path((id, customer)): Path<(String, String)>,
) -> Response {
    let caller = caller!(c, headers);
    let scope = or_answer!(conversation(&caller, &id, &customer));
    let explained = crate::tools::explain::explain(&c.store, &c.config, &scope, Millis::now());
    match explained.await {
        Ok(explained) => Json(explained).into_response(),
        Err(e) => failed(e.into()),
    }
}

/// `pause` (`duration`: default the timeout), `release`, `extend` (`duration` required).
async fn act_on_conversation(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path((id, customer, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let caller = caller!(c, headers);
    let action = match action.as_str() {
        "pause" => OperatorAction::Pause,
        "release" => OperatorAction::Release,
        "extend" => OperatorAction::Extend,
        _ => return not_found(),
    };
    let scope = or_answer!(conversation(&caller, &id, &customer));
    let body = or_answer!(object(&body));
    let duration = match body.get("duration") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => match crate::runtime::config::duration(d) {
            Ok(d) => Some(d),
            Err(m) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    &format!("duration: {m}"),
                )
            }
        },
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                "duration: expected a duration written as a string, e.g. \"2h\"",
            )
        }
    };
    if action == OperatorAction::Extend && duration.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "duration: extend needs how much longer, e.g. {\"duration\": \"2h\"}",
        );
    }
    let Some(conn) = c.link.connection_within(CONNECT_WITHIN).await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "RabbitMQ is not reachable now: nothing was changed",
        );
    };
    let command = Command {
        scope,
        action,
        duration,
        by: Some(caller.name.clone()),
    };
    let within = operator::DECIDED_WITHIN;
    match operator::send(&conn, &c.topology, &c.store, command, within).await {
        Ok(done) => Json(json!({
            "events": done.events.iter().map(|e| &e.event).collect::<Vec<_>>(),
            "state": done.view,
        }))
        .into_response(),
        Err(e @ operator::Error::NotDecided { .. }) => {
            error(StatusCode::ACCEPTED, "queued", &e.to_string())
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "failed", &e.to_string()),
    }
}
