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
//!   Extend and a Pause form: operator commands, decided in the conversation's lane
//!   ([`crate::tools::operator::send`]),
//!   recorded with the signed-in operator's name as `by.name`.
//! - **A conversation** ([`conversation`]): as the Human Chat shows it (customer, 📱 App, 🤖 AI
//!   agent, refused replies struck through), its state, why each decision was made, actions.
//! - **Live events** ([`live`]): Server-Sent Events from a queue of its own, like `coexist tail`.
//! - **Dead letters**: listed with a safe preview; Replay (one or all) and Discard, each asked
//!   for first.

pub mod api;
pub(crate) mod conversation;
pub(crate) mod dead;
pub(crate) mod held;
pub(crate) mod live;
pub(crate) mod numbers;
pub mod pages;
pub(crate) mod signin;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::{started, Part};
use crate::adapters::broker::{Link, Topology};
use crate::adapters::redis::RedisStore;
use crate::core::domain::{valid_phone_number_id, CustomerKey, Scope};
use crate::core::engine::OperatorAction;
use crate::core::time::Millis;
use crate::runtime::config::{Config, Operator};
use crate::runtime::secret::Secret;
use crate::runtime::supervise::Listening;
use crate::tools::operator::{self, Command};
use pages::Frame;

/// The session cookie's name.
pub const COOKIE: &str = "coexist_console";
/// How long a session lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// How long an action waits for the broker connection (a console just started, or reconnecting).
const CONNECT_WITHIN: Duration = Duration::from_secs(5);
/// How long a wrong token is kept waiting.
const WRONG_TOKEN_DELAY: Duration = Duration::from_secs(1);
/// Conversation references a session keeps at most (past it they start again).
const MAX_REFS: usize = 5000;
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
    /// The numbers it may see and act on (`None`: all).
    numbers: Option<Vec<String>>,
    csrf: String,
    expires: Instant,
    /// Opaque references to the conversations the last page showed (masked customers never
    /// appear in full in the page).
    refs: HashMap<String, Scope>,
    /// What the last action did, shown once.
    said: Option<Result<String, String>>,
}

impl Session {
    /// Whether the operator may see and act on `phone_number_id`.
    fn sees(&self, phone_number_id: &str) -> bool {
        self.numbers
            .as_ref()
            .is_none_or(|n| n.iter().any(|id| id == phone_number_id))
    }
}

/// What the console's handlers share.
struct Console {
    operators: Vec<Operator>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Held while a wrong token is kept waiting: guesses go one at a time.
    guessing: tokio::sync::Mutex<()>,
    store: RedisStore,
    link: Arc<Link>,
    topology: Topology,
    amqp_url: Secret,
    log_content: bool,
    /// Live views open at once, at most.
    viewers: Arc<tokio::sync::Semaphore>,
    /// For the numbers' settings and the admin API's tokens.
    config: Config,
    /// The latest events, for the live view's first look.
    recent: Arc<live::Recent>,
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

/// The largest body a console form may have (a sign-in, a pause with its note).
const FORM_BODY: usize = 64 << 10;

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
        store,
        link: link.clone(),
        topology,
        amqp_url: config.amqp_url.clone(),
        log_content: config.log_content,
        viewers: Arc::new(tokio::sync::Semaphore::new(32)),
        config: config.clone(),
        recent: Arc::default(),
    });
    part.spawn(
        "latest events",
        live::follow_recent(
            console.recent.clone(),
            config.amqp_url.clone(),
            console.topology.clone(),
            stop.clone(),
        ),
    );
    let recent = console.recent.clone();
    let ready: crate::runtime::http::Readiness = Arc::new(move || {
        vec![
            ("rabbitmq", link.check()),
            ("latest_events", recent.check()),
        ]
    });
    // The admin API only where tokens are configured for it.
    let api = match config.console.api.is_empty() {
        true => Router::new(),
        false => api::routes(),
    };
    let router = Router::new()
        .merge(api)
        .route("/", get(held::held))
        .route("/login", get(signin::login_page).post(signin::login))
        .route("/logout", post(signin::logout))
        .route("/pause", post(held::pause))
        .route("/release", post(held::release))
        .route("/extend", post(held::extend))
        .route("/conversation/pause", post(held::pause_conversation))
        .route("/conversation", get(conversation::page))
        .route("/live", get(live_page))
        .route("/live/events", get(live::events))
        .route("/numbers", get(numbers::list))
        .route("/numbers/{id}", get(numbers::show))
        .route("/numbers/{id}/settings", post(numbers::save))
        .route("/dead", get(dead::dead))
        .route("/dead/confirm", get(dead::dead_confirm))
        .route("/dead/replay", post(dead::dead_replay))
        .route("/dead/discard", post(dead::dead_discard))
        .route(
            "/assets/console.css",
            get(|| async { asset("text/css", CSS) }),
        )
        .route(
            "/assets/console.js",
            get(|| async { asset("text/javascript", JS) }),
        )
        .with_state(console)
        .merge(crate::runtime::http::admin_routes(ready));
    // A body is read within the ingress's limits before any handler sees it: a declared
    // length past FORM_BODY is 413 at once, a body that does not arrive in time 408.
    let bodies = crate::runtime::http::BodyBudget::new(
        config.http.max_buffered_bytes,
        FORM_BODY,
        config.http.body_timeout,
    );
    let router =
        crate::runtime::http::bounded_bodies(router, bodies, crate::runtime::metrics::CONSOLE_CUTS)
            .layer(axum::middleware::map_response(secure_headers));
    let limits = crate::runtime::http::Limits::new(config, crate::runtime::metrics::CONSOLE_CUTS);
    let (addr, http) = started!(
        part,
        crate::runtime::http::serve(config.console.listen, router, limits, stop).await
    );
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

    /// An opaque reference to `scope` for this session (the same one each time), valid for
    /// the session's actions; a session keeps at most [`MAX_REFS`] of them.
    fn remember(&self, id: &str, scope: &Scope) -> String {
        let mut sessions = self.sessions.lock().expect("sessions");
        let Some(s) = sessions.get_mut(id) else {
            return String::new();
        };
        if let Some((r, _)) = s.refs.iter().find(|(_, v)| *v == scope) {
            return r.clone();
        }
        if s.refs.len() >= MAX_REFS {
            s.refs.clear();
        }
        let reference = token()[..16].to_owned();
        s.refs.insert(reference.clone(), scope.clone());
        reference
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
        let Some(conn) = self.link.connection_within(CONNECT_WITHIN).await else {
            return Err("RabbitMQ is not reachable now: nothing was changed".into());
        };
        let release = command.action == OperatorAction::Release;
        let within = operator::DECIDED_WITHIN;
        match operator::send(&conn, &self.topology, &self.store, command, within).await {
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

async fn live_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some((id, session)) = c.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    let said = c.take_said(&id);
    let f = frame("Live events", "live", &session, said, 0);
    // The latest events first (newest on top), as the stream will add them.
    let recent: Vec<pages::LiveLine> = c
        .recent
        .visible(&session.numbers)
        .into_iter()
        .map(|shown| c.line(&id, shown))
        .collect();
    Html(pages::live(&f, &recent).into_string()).into_response()
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
