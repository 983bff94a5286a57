//! Dead letters: listed with a safe preview; Replay and Discard, each asked for first.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::*;

/// Dead letters a page shows.
const DEAD_PAGE: usize = 50;
/// Dead letters looked through for an operator limited to some numbers.
const DEAD_SCAN: usize = 1000;

pub(super) async fn dead(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some((id, session)) = c.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    // An operator limited to some numbers sees the letters of those only, found among more.
    let scan = match session.numbers {
        None => DEAD_PAGE,
        Some(_) => DEAD_SCAN,
    };
    let listed = crate::tools::dlq::list(c.amqp_url.expose(), &c.topology, scan).await;
    let (rows, total, error) = match listed {
        Ok(page) if session.numbers.is_some() => {
            let mine: Vec<_> = (page.entries.into_iter())
                .filter(|e| e.number.as_deref().is_some_and(|n| session.sees(n)))
                .take(DEAD_PAGE)
                .collect();
            let n = mine.len();
            (mine, n, None)
        }
        Ok(page) => (page.entries, page.total, None),
        Err(e) => (
            Vec::new(),
            0,
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
    Html(pages::dead(&f, &rows, total).into_string()).into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct ConfirmQuery {
    action: String,
    id: String,
}

pub(super) async fn dead_confirm(
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
pub(super) struct DeadForm {
    csrf: String,
    id: String,
}

pub(super) async fn dead_replay(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<DeadForm>,
) -> Response {
    dead_action(c, headers, form, crate::tools::dlq::Action::Replay).await
}

pub(super) async fn dead_discard(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<DeadForm>,
) -> Response {
    dead_action(c, headers, form, crate::tools::dlq::Action::Discard).await
}

pub(super) async fn dead_action(
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
    let may = |n: Option<&str>| session.numbers.is_none() || n.is_some_and(|n| session.sees(n));
    let said = match (action, form.id.as_str()) {
        (_, "all") if session.numbers.is_some() => {
            return (StatusCode::NOT_FOUND, "not found\n").into_response();
        }
        (crate::tools::dlq::Action::Replay, "all") => {
            match crate::tools::dlq::replay(url, &c.topology, None, |_, _| {}).await {
                Ok(r) => Ok(format!(
                    "Replayed {} dead letter(s): {} unit(s) sent back, {} parked again",
                    r.replayed, r.units, r.parked_again
                )),
                Err(e) => Err(format!("Replay failed: {e}")),
            }
        }
        (action, one) => {
            match crate::tools::dlq::act_on_one(url, &c.topology, one, action, may).await {
                Ok(true) if action == crate::tools::dlq::Action::Replay => {
                    Ok(format!("Replayed {one}"))
                }
                Ok(true) => Ok(format!("Discarded {one}")),
                Ok(false) => Err(format!("{one} is no longer in the dead-letter queue")),
                Err(e) => Err(format!("failed: {e}")),
            }
        }
    };
    tracing::info!(operator = %session.operator, action = ?action, id = %form.id, ok = said.is_ok(), "a console action on dead letters");
    c.update(&id, |s| s.said = Some(said));
    Redirect::to("/dead").into_response()
}
