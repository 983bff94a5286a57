//! Signing in and out: a wrong token is answered late and one at a time.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::*;

pub(super) async fn login_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.session(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    Html(pages::login(None).into_string()).into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// The client as an audit reads it: the peer's address, and what `X-Forwarded-For` claims
/// (escaped: it is the client's to write).
fn client(
    peer: Option<&axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: &HeaderMap,
) -> (String, String) {
    let peer = peer.map_or_else(|| "-".to_owned(), |p| p.0 .0.ip().to_string());
    let forwarded = headers
        .get("x-forwarded-for")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .map(|v| crate::tools::printable::escape(&v).into_owned())
        .unwrap_or_else(|| "-".to_owned());
    (peer, forwarded)
}

pub(super) async fn login(
    State(c): State<Arc<Console>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let (client, forwarded_for) = client(peer.as_ref(), &headers);
    if !same_origin(&headers) {
        return forbidden("refused: the request did not come from this console");
    }
    // Every token is compared (no early exit), in constant time.
    let given = form.token.trim().as_bytes();
    let Some(found) = Operator::find(&c.operators, given) else {
        let _one_at_a_time = c.guessing.lock().await;
        tokio::time::sleep(WRONG_TOKEN_DELAY).await;
        tracing::warn!(client, forwarded_for, "a wrong console token was given");
        let page = pages::login(Some("That token is not an operator's."));
        return (StatusCode::UNAUTHORIZED, Html(page.into_string())).into_response();
    };
    let (operator, numbers) = (found.name.clone(), found.numbers.clone());
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
                numbers,
                csrf: token(),
                expires: now + SESSION,
                refs: HashMap::new(),
                said: None,
            },
        );
    }
    tracing::info!(
        operator,
        client,
        forwarded_for,
        "an operator signed in to the console"
    );
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
pub(super) struct CsrfForm {
    csrf: String,
}

pub(super) async fn logout(
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
