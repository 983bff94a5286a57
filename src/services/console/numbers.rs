//! The Numbers pages: every number the operator may see with its state and what to do about
//! it, and one number's settings with a form that changes them at once (the same operation as
//! `coexist number set`, recorded with the operator's name).

use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::*;
use crate::core::numbers::{remedy, LifeState, Origin};
use crate::tools::numbers;

/// What an `app_idle` number's operator should do.
const APP_IDLE: &str = "The WhatsApp Business App on the phone has sent nothing for a long time while customers write: open it on the phone (Meta disconnects a coexistence number after about 14 days without it).";

pub(super) async fn list(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some((id, session)) = c.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    let (rows, error) = match numbers::list(&c.store, &c.config, Millis::now()).await {
        Ok(rows) => (rows, None),
        Err(e) => (Vec::new(), Some(format!("cannot read the numbers: {e}"))),
    };
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| session.sees(&r.phone_number_id))
        .collect();
    let remedies: Vec<&str> = rows
        .iter()
        .map(|r| match r.app_idle {
            true => APP_IDLE,
            false => remedy(LifeState::parse(r.state).unwrap_or_default(), None),
        })
        .collect();
    let said = error.map(Err).or_else(|| c.take_said(&id));
    let f = frame("Numbers", "numbers", &session, said, REFRESH_SECS);
    Html(pages::numbers(&f, &rows, &remedies).into_string()).into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such number\n").into_response()
}

pub(super) async fn show(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    let Some((id, session)) = c.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    if !valid_phone_number_id(&number) || !session.sees(&number) {
        return not_found();
    }
    match numbers::show(&c.store, &c.config, &number).await {
        Ok(shown) => {
            let said = c.take_said(&id);
            let title = match &shown.record.name {
                Some(name) => format!("{name} ({number})"),
                None => format!("Number {number}"),
            };
            let f = frame(&title, "numbers", &session, said, 0);
            Html(pages::number(&f, &shown).into_string()).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// The settings form: a field changed from the value shown is set; a field emptied drops the
/// value set here (the configured one applies again); the others are left alone.
pub(super) async fn save(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(number): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let csrf = form.get("csrf").map(String::as_str).unwrap_or("");
    let (id, session) = match c.posted(&headers, csrf) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    if !valid_phone_number_id(&number) || !session.sees(&number) {
        return not_found();
    }
    let back = Redirect::to(&format!("/numbers/{number}")).into_response();
    let shown = match numbers::show(&c.store, &c.config, &number).await {
        Ok(s) => s,
        Err(e) => {
            c.update(&id, |s| s.said = Some(Err(e.to_string())));
            return back;
        }
    };
    let mut asked: numbers::Asked = Vec::new();
    for e in &shown.effective {
        let Some(given) = form.get(e.key) else {
            continue;
        };
        let given = given.trim();
        let now = match e.key {
            "automated_texts" => serde_json::Value::Array(
                given
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| serde_json::Value::String(l.to_owned()))
                    .collect(),
            ),
            _ => serde_json::Value::String(given.to_owned()),
        };
        let shown_as = match &e.value {
            serde_json::Value::String(t) => serde_json::Value::String(t.clone()),
            serde_json::Value::Array(_) => e.value.clone(),
            other => serde_json::Value::String(other.to_string()),
        };
        let emptied = given.is_empty() && e.key != "reset_text";
        match (emptied, e.from) {
            (true, Origin::Runtime) => asked.push((e.key.to_owned(), None)),
            (true, _) => {}
            (false, _) if now == shown_as => {}
            (false, _) => asked.push((e.key.to_owned(), Some(now))),
        }
    }
    let said = match asked.is_empty() {
        true => Ok("Nothing changed".to_owned()),
        false => {
            let by = Some(session.operator.clone());
            match numbers::change(&c.store, &c.config, &number, &asked, by).await {
                Ok(Some(_)) => Ok(format!(
                    "Saved: {} (every worker and gate use it within 2 seconds)",
                    asked
                        .iter()
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Ok(None) => Ok("Nothing changed".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    tracing::info!(operator = %session.operator, ok = said.is_ok(), "a console change of a number's settings");
    c.update(&id, |s| s.said = Some(said));
    back
}
