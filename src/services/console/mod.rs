//! `coexist console`: the operator console (docs/contract.md, "Console"): a web page for the
//! people who run the number. Server-rendered HTML ([`pages`], compile-time templates), one
//! stylesheet and one small script embedded in the binary, nothing fetched from elsewhere.
//!
//! - **Sign-in** with an operator token (`COEXIST_CONSOLE_TOKEN`: `name:token` pairs), then a
//!   session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` behind a TLS proxy). A wrong token
//!   is answered after a second, one at a time, so guessing is slow.
//! - **Every action is a POST** carrying the session's CSRF token, and its `Origin` (or
//!   `Referer`) must be this console: a cross-site request is refused.
//! - **With a human now**: the paused conversations, soonest release first, with Release,
//!   Extend and a Pause form: the operator commands' own operation ([`crate::tools::operator::apply`]),
//!   recorded with the signed-in operator's name as `by.name`.
//! - **Live events** ([`live`]): Server-Sent Events from a queue of its own, like `coexist tail`.
//! - **Dead letters**: listed with a safe preview; Replay (one or all) and Discard, each asked
//!   for first.

mod live;
pub mod pages;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::Part;
use crate::adapters::broker::{Link, Topology};
use crate::adapters::redis::RedisStore;
use crate::core::apply::Applier;
use crate::core::domain::{valid_phone_number_id, CustomerKey, Scope};
use crate::core::engine::OperatorAction;
use crate::core::time::Millis;
use crate::runtime::config::Config;
use crate::runtime::secret::Secret;
use crate::runtime::supervise::Listening;
use crate::tools::operator::{self, Command};
use pages::Frame;

/// The session cookie's name.
pub const COOKIE: &str = "coexist_console";
/// How long a session lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// How long a wrong token is kept waiting.
const WRONG_TOKEN_DELAY: Duration = Duration::from_secs(1);
/// Sessions held at most (the oldest go first).
const MAX_SESSIONS: usize = 1000;
/// The first page reloads itself this often, in seconds.
const REFRESH_SECS: u32 = 15;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// A signed-in operator's session.
#[derive(Clone)]
struct Session {
    operator: String,
    csrf: String,
    expires: Instant,
    /// Opaque references to the conversations the last page showed (masked customers never
    /// appear in full in the page).
    refs: HashMap<String, Scope>,
    /// What the last action did, shown once.
    said: Option<Result<String, String>>,
}

/// What the console's handlers share.
struct Console {
    operators: Vec<(String, Secret)>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Held while a wrong token is kept waiting: guesses go one at a time.
    guessing: tokio::sync::Mutex<()>,
    applier: Applier<RedisStore>,
    link: Arc<Link>,
    topology: Topology,
    amqp_url: Secret,
    log_content: bool,
    /// Live views open at once, at most.
    viewers: Arc<tokio::sync::Semaphore>,
}

/// A running console: [`Listening`]. Dropping it stops it.
pub type Running = Listening;

/// Why the console refuses to start: one line.
pub fn check(config: &Config) -> Result<(), String> {
    if config.console.operators.is_empty() {
        return Err(
            "config: console_token: the console needs COEXIST_CONSOLE_TOKEN (name:token pairs)"
                .into(),
        );
    }
    Ok(())
}

/// Starts the console on `config.console.listen` until `shutdown` is cancelled.
pub async fn start(config: &Config, shutdown: &CancellationToken) -> std::io::Result<Running> {
    check(config).map_err(std::io::Error::other)?;
    crate::runtime::metrics::handle();
    let topology = Topology::new(&config.namespace, config.partitions);
    let mut part = Part::new("console supervisor", shutdown);
    let stop = part.stop().clone();
    let store = RedisStore::open_until(
        &config.redis,
        &config.namespace,
        config.redis_replicas,
        &stop,
    )
    .await?;
    let link = part.link(config, "coexist-console".into(), &topology);
    let console = Arc::new(Console {
        operators: config.console.operators.clone(),
        sessions: Mutex::default(),
        guessing: tokio::sync::Mutex::new(()),
        applier: Applier::new(store, Arc::new(config.rules.clone())),
        link: link.clone(),
        topology,
        amqp_url: config.amqp_url.clone(),
        log_content: config.log_content,
        viewers: Arc::new(tokio::sync::Semaphore::new(32)),
    });
    let ready: crate::runtime::http::Readiness = Arc::new(move || vec![("rabbitmq", link.check())]);
    let router = Router::new()
        .route("/", get(held))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/pause", post(pause))
        .route("/release", post(release))
        .route("/extend", post(extend))
        .route("/live", get(live_page))
        .route("/live/events", get(live::events))
        .route("/dead", get(dead))
        .route("/dead/confirm", get(dead_confirm))
        .route("/dead/replay", post(dead_replay))
        .route("/dead/discard", post(dead_discard))
        .route(
            "/assets/console.css",
            get(|| async { asset("text/css", CSS) }),
        )
        .route(
            "/assets/console.js",
            get(|| async { asset("text/javascript", JS) }),
        )
        .with_state(console)
        .merge(crate::runtime::http::admin_routes(ready))
        .layer(axum::middleware::map_response(secure_headers));
    let limits = crate::runtime::http::Limits::new(config, crate::runtime::metrics::CONSOLE_CUTS);
    let (addr, http) =
        crate::runtime::http::serve(config.console.listen, router, limits, stop).await?;
    part.add("console server", http);
    tracing::info!(%addr, "console listening");
    Ok(Listening {
        addr,
        handle: part.supervise(),
    })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Headers on every answer: nothing loaded from elsewhere, never framed, never cached.
async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    response
}

/// A random token (sessions, CSRF).
fn token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The session cookie's value, if the request carries one.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Whether the request came from this console's own pages: its `Origin` (else its `Referer`)
/// names the host it was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let ours = |url: &str| {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        rest.is_some_and(|r| r == host || r.starts_with(&format!("{host}/")))
    };
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => ours(origin),
        None => headers
            .get(header::REFERER)
            .and_then(|r| r.to_str().ok())
            .is_some_and(ours),
    }
}

/// Refuses a request from elsewhere.
fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("{why}\n")).into_response()
}

impl Console {
    /// The session the request belongs to (still valid).
    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers)?;
        let sessions = self.sessions.lock().expect("sessions");
        let s = sessions.get(&id)?;
        (s.expires > Instant::now()).then(|| (id, s.clone()))
    }

    /// The session of a POST, checked against cross-site requests (CSRF token and origin).
    fn posted(&self, headers: &HeaderMap, csrf: &str) -> Result<(String, Session), Box<Response>> {
        let Some((id, session)) = self.session(headers) else {
            return Err(Box::new(Redirect::to("/login").into_response()));
        };
        if !same_origin(headers) {
            let why = "refused: the request did not come from this console";
            return Err(Box::new(forbidden(why)));
        }
        if !bool::from(session.csrf.as_bytes().ct_eq(csrf.as_bytes())) {
            let why = "refused: the form's token is missing or stale; reload the page";
            return Err(Box::new(forbidden(why)));
        }
        Ok((id, session))
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Session)) {
        if let Some(s) = self.sessions.lock().expect("sessions").get_mut(id) {
            f(s);
        }
    }

    /// Takes the message of the last action.
    fn take_said(&self, id: &str) -> Option<Result<String, String>> {
        self.sessions
            .lock()
            .expect("sessions")
            .get_mut(id)
            .and_then(|s| s.said.take())
    }

    /// A customer as the page shows it: in full with `log_content`, else the last four only.
    fn shown(&self, customer: &str) -> String {
        match self.log_content {
            true => customer.to_owned(),
            false => mask(customer),
        }
    }

    /// Runs an operator command as `operator`; what it did, in a sentence.
    async fn act(&self, command: Command, what: &str) -> Result<String, String> {
        let Some(publisher) = self.link.publisher().await else {
            return Err("RabbitMQ is not reachable now: nothing was changed".into());
        };
        let now = Millis::now();
        let release = command.action == OperatorAction::Release;
        match operator::apply(&self.applier, &publisher, &self.topology, command, now).await {
            Ok(done) if release && done.events.is_empty() => {
                Ok(format!("{what}: it was not paused"))
            }
            Ok(done) => match done.view.paused_until {
                Some(until) => Ok(format!("{what}: done; paused until {until}")),
                None => Ok(format!("{what}: done")),
            },
            Err(e) => Err(format!("{what}: failed: {e}")),
        }
    }
}

/// A customer's name cut to its last four characters.
pub fn mask(customer: &str) -> String {
    format!("•••{}", crate::core::domain::last_chars(customer, 4))
}

fn frame<'a>(
    title: &'a str,
    current: &'a str,
    session: &'a Session,
    said: Option<Result<String, String>>,
    refresh: u32,
) -> Frame<'a> {
    Frame {
        title,
        current,
        operator: &session.operator,
        csrf: &session.csrf,
        said,
        refresh,
    }
}

async fn login_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.session(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    Html(pages::login(None).into_string()).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return forbidden("refused: the request did not come from this console");
    }
    // Every token is compared (no early exit), in constant time.
    let given = form.token.trim().as_bytes();
    let operator = c.operators.iter().fold(None, |found, (name, token)| {
        let matches = bool::from(token.expose().as_bytes().ct_eq(given));
        found.or(matches.then(|| name.clone()))
    });
    let Some(operator) = operator else {
        let _one_at_a_time = c.guessing.lock().await;
        tokio::time::sleep(WRONG_TOKEN_DELAY).await;
        tracing::warn!("a wrong console token was given");
        let page = pages::login(Some("That token is not an operator's."));
        return (StatusCode::UNAUTHORIZED, Html(page.into_string())).into_response();
    };
    let id = token();
    {
        let mut sessions = c.sessions.lock().expect("sessions");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                sessions.remove(&k);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                operator: operator.clone(),
                csrf: token(),
                expires: now + SESSION,
                refs: HashMap::new(),
                said: None,
            },
        );
    }
    tracing::info!(operator, "an operator signed in to the console");
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let (id, _) = match c.posted(&headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    c.sessions.lock().expect("sessions").remove(&id);
    let mut response = Redirect::to("/login").into_response();
    let gone = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&gone) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// The first page: who is with a human now.
async fn held(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some((id, session)) = c.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    let now = Millis::now();
    let (rows, error) = match operator::list(c.applier.store(), now).await {
        Ok(paused) => (paused, None),
        Err(e) => (
            Vec::new(),
            Some(format!("cannot read the conversations from Redis: {e}")),
        ),
    };
    let mut refs = HashMap::new();
    let mut numbers: Vec<&str> = Vec::new();
    let held: Vec<pages::Held> = rows
        .iter()
        .map(|p| {
            let reference = token()[..16].to_owned();
            if let Some(key) = CustomerKey::parse(&p.customer) {
                refs.insert(
                    reference.clone(),
                    Scope::conversation(&p.phone_number_id, key),
                );
            }
            if !numbers.contains(&p.phone_number_id.as_str()) {
                numbers.push(&p.phone_number_id);
            }
            let left = Duration::from_secs((p.left_ms.max(0) / 60_000 * 60) as u64);
            pages::Held {
                reference,
                number: p.phone_number_id.clone(),
                customer: c.shown(&p.customer),
                since: p.since.clone(),
                until: p.paused_until.clone(),
                left: humantime::format_duration(left).to_string(),
                by: operator::by_text(&p.by),
                trigger: p.trigger_message_id.clone().unwrap_or_else(|| "-".into()),
            }
        })
        .collect();
    c.update(&id, |s| s.refs = refs);
    let said = error.map(Err).or_else(|| c.take_said(&id));
    let f = frame("With a human now", "held", &session, said, REFRESH_SECS);
    Html(pages::held(&f, &held, numbers.len()).into_string()).into_response()
}

#[derive(serde::Deserialize)]
struct PauseForm {
    csrf: String,
    number: String,
    customer: String,
    duration: String,
}

fn duration_of(text: &str) -> Option<Duration> {
    pages::DURATIONS
        .iter()
        .any(|(v, _)| *v == text)
        .then(|| humantime::parse_duration(text).ok())
        .flatten()
}

async fn pause(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<PauseForm>,
) -> Response {
    let (id, session) = match c.posted(&headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let number = form.number.trim();
    let said = match (
        valid_phone_number_id(number),
        CustomerKey::parse(&form.customer),
        duration_of(&form.duration),
    ) {
        (false, _, _) => Err(format!("{number:?} is not a phone_number_id")),
        (_, None, _) => Err("that is neither a phone number nor a business-scoped user id".into()),
        (_, _, None) => Err("choose one of the durations offered".into()),
        (true, Some(customer), Some(duration)) => {
            let what = format!("Pause {}", c.shown(customer.as_str()));
            let command = Command {
                scope: Scope::conversation(number, customer),
                action: OperatorAction::Pause,
                duration: Some(duration),
                by: Some(session.operator.clone()),
            };
            c.act(command, &what).await
        }
    };
    c.update(&id, |s| s.said = Some(said));
    Redirect::to("/").into_response()
}

#[derive(serde::Deserialize)]
struct RowForm {
    csrf: String,
    conversation: String,
    #[serde(default)]
    duration: Option<String>,
}

async fn release(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<RowForm>,
) -> Response {
    row_action(c, headers, form, OperatorAction::Release).await
}

async fn extend(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<RowForm>,
) -> Response {
    row_action(c, headers, form, OperatorAction::Pause).await
}

/// Release or Extend on a row of the first page.
async fn row_action(
    c: Arc<Console>,
    headers: HeaderMap,
    form: RowForm,
    action: OperatorAction,
) -> Response {
    let (id, session) = match c.posted(&headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let Some(scope) = session.refs.get(&form.conversation).cloned() else {
        c.update(&id, |s| {
            s.said = Some(Err("that row is gone: the list was refreshed".into()))
        });
        return Redirect::to("/").into_response();
    };
    let shown = c.shown(scope.customer.as_ref().map_or("", |k| k.as_str()));
    let said = match action {
        OperatorAction::Release => {
            let command = Command {
                scope,
                action,
                duration: None,
                by: Some(session.operator.clone()),
            };
            c.act(command, &format!("Release {shown}")).await
        }
        OperatorAction::Pause => {
            match form.duration.as_deref().and_then(duration_of) {
                None => Err("choose one of the durations offered".into()),
                Some(by) => {
                    // Extend by `by`: a pause from now until the current deadline plus `by`.
                    let now = Millis::now();
                    let view = operator::show(c.applier.store(), &scope, now).await;
                    let left = match view {
                        Ok(v) => v.pause_ttl_ms.unwrap_or(0).max(0) as u64,
                        Err(e) => {
                            return {
                                c.update(&id, |s| {
                                    s.said = Some(Err(format!("cannot read the conversation: {e}")))
                                });
                                Redirect::to("/").into_response()
                            }
                        }
                    };
                    let command = Command {
                        scope,
                        action,
                        duration: Some(Duration::from_millis(left) + by),
                        by: Some(session.operator.clone()),
                    };
                    let what = format!("Extend {shown} by {}", humantime::format_duration(by));
                    c.act(command, &what).await
                }
            }
        }
    };
    c.update(&id, |s| s.said = Some(said));
    Redirect::to("/").into_response()
}

async fn live_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some((id, session)) = c.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    let said = c.take_said(&id);
    let f = frame("Live events", "live", &session, said, 0);
    Html(pages::live(&f).into_string()).into_response()
}

async fn dead(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some((id, session)) = c.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    let (rows, error) = match crate::tools::dlq::list(c.amqp_url.expose(), &c.topology).await {
        Ok(entries) => (entries, None),
        Err(e) => (
            Vec::new(),
            Some(format!("cannot read the dead letters: {e}")),
        ),
    };
    let rows: Vec<pages::Dead> = rows
        .into_iter()
        .map(|e| pages::Dead {
            id: e.id.unwrap_or_else(|| "-".into()),
            kind: e.kind.unwrap_or_else(|| "-".into()),
            stage: e.stage.as_str().to_owned(),
            reason: match c.log_content {
                true => e.reason,
                false => crate::core::domain::redact_digits(&e.reason),
            },
            attempts: e.attempts,
            age: e
                .age_secs
                .map(|s| {
                    humantime::format_duration(Duration::from_secs(s.max(0) as u64)).to_string()
                })
                .unwrap_or_else(|| "-".into()),
            preview: e.preview,
        })
        .collect();
    let said = error.map(Err).or_else(|| c.take_said(&id));
    let f = frame("Dead letters", "dead", &session, said, 0);
    Html(pages::dead(&f, &rows).into_string()).into_response()
}

#[derive(serde::Deserialize)]
struct ConfirmQuery {
    action: String,
    id: String,
}

async fn dead_confirm(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<ConfirmQuery>,
) -> Response {
    let Some((_, session)) = c.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    let (action, what) = match (q.action.as_str(), q.id.as_str()) {
        ("replay", "all") => ("replay", "Replay every dead letter? Each is sent back to its partition and decided again against the conversation's state now.".to_owned()),
        ("replay", id) => ("replay", format!("Replay the dead letter {id}? It is sent back to its partition and decided again against the conversation's state now.")),
        ("discard", id) if id != "all" => ("discard", format!("Discard the dead letter {id}? It is removed for good.")),
        _ => return Redirect::to("/dead").into_response(),
    };
    let f = frame("Are you sure?", "dead", &session, None, 0);
    Html(pages::confirm(&f, action, &q.id, &what).into_string()).into_response()
}

#[derive(serde::Deserialize)]
struct DeadForm {
    csrf: String,
    id: String,
}

async fn dead_replay(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<DeadForm>,
) -> Response {
    dead_action(c, headers, form, crate::tools::dlq::Action::Replay).await
}

async fn dead_discard(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<DeadForm>,
) -> Response {
    dead_action(c, headers, form, crate::tools::dlq::Action::Discard).await
}

async fn dead_action(
    c: Arc<Console>,
    headers: HeaderMap,
    form: DeadForm,
    action: crate::tools::dlq::Action,
) -> Response {
    let (id, session) = match c.posted(&headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let url = c.amqp_url.expose();
    let said = match (action, form.id.as_str()) {
        (crate::tools::dlq::Action::Replay, "all") => {
            match crate::tools::dlq::replay(url, &c.topology, None, |_, _| {}).await {
                Ok(r) => Ok(format!(
                    "Replayed {} dead letter(s): {} unit(s) sent back, {} parked again",
                    r.replayed, r.units, r.parked_again
                )),
                Err(e) => Err(format!("Replay failed: {e}")),
            }
        }
        (action, one) => match crate::tools::dlq::act_on_one(url, &c.topology, one, action).await {
            Ok(true) if action == crate::tools::dlq::Action::Replay => {
                Ok(format!("Replayed {one}"))
            }
            Ok(true) => Ok(format!("Discarded {one}")),
            Ok(false) => Err(format!("{one} is no longer in the dead-letter queue")),
            Err(e) => Err(format!("failed: {e}")),
        },
    };
    tracing::info!(operator = %session.operator, action = ?action, id = %form.id, ok = said.is_ok(), "a console action on dead letters");
    c.update(&id, |s| s.said = Some(said));
    Redirect::to("/dead").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_reads_origin_then_referer() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8082"));
        assert!(!same_origin(&h), "neither: refused");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8082"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.remove(header::ORIGIN);
        h.insert(
            header::REFERER,
            HeaderValue::from_static("http://127.0.0.1:8082/dead"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::REFERER,
            HeaderValue::from_static("http://127.0.0.1:80821/"),
        );
        assert!(!same_origin(&h));
    }

    #[test]
    fn masks_keep_the_last_four() {
        assert_eq!(mask("5215551230001"), "•••0001");
        assert_eq!(mask("US.13491208655302741918"), "•••1918");
    }
}
