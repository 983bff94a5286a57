//! With a human now: the paused conversations, and Pause, Release and Extend.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Query, State};

use crate::adapters::redis::PageCursor;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::*;

/// Conversations a page shows.
const HELD_PAGE: usize = 50;

#[derive(serde::Deserialize)]
pub(super) struct PageQuery {
    /// Where the page starts (`{instant}.{n}`, from the previous page's "More"): the start when
    /// absent.
    after: Option<String>,
}

/// The first page: who is with a human now, a page at a time.
pub(super) async fn held(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let Some((id, session)) = c.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    let now = Millis::now();
    let after = q.after.as_deref().and_then(PageCursor::decode);
    let sees = |pnid: &str| session.sees(pnid);
    let listed = operator::list_visible(&c.store, now, after, HELD_PAGE, sees).await;
    // The count of every number's conversations is for operators who see every number.
    let total = match session.numbers {
        None => Some(c.store.paused_count(now).await.unwrap_or(0)),
        Some(_) => None,
    };
    let (rows, next, error) = match listed {
        Ok((paused, next)) => (paused, next, None),
        Err(e) => (
            Vec::new(),
            None,
            Some(format!("cannot read the conversations from Redis: {e}")),
        ),
    };
    let mut numbers: Vec<&str> = Vec::new();
    for p in &rows {
        if !numbers.contains(&p.phone_number_id.as_str()) {
            numbers.push(&p.phone_number_id);
        }
    }
    // For people: each number's label, each customer's name and last message (from the trail).
    let labels = c.store.number_names(&numbers).await.unwrap_or_default();
    let label_of = |pnid: &str| {
        let i = numbers.iter().position(|n| *n == pnid)?;
        labels.get(i).cloned().flatten()
    };
    let scopes: Vec<Scope> = rows
        .iter()
        .filter_map(|p| {
            CustomerKey::parse(&p.customer).map(|k| Scope::conversation(&p.phone_number_id, k))
        })
        .collect();
    let tails = c.store.trails_tail(&scopes, 10).await.unwrap_or_default();
    let text = |t: &str| match c.log_content {
        true => t.to_owned(),
        false => crate::core::domain::redact_digits(t),
    };
    let held: Vec<pages::Held> = rows
        .iter()
        .map(|p| {
            let scope = CustomerKey::parse(&p.customer)
                .map(|key| Scope::conversation(&p.phone_number_id, key));
            let reference = match &scope {
                Some(scope) => c.remember(&id, scope),
                None => String::new(),
            };
            let tail = scope
                .as_ref()
                .and_then(|s| scopes.iter().position(|x| x == s))
                .and_then(|i| tails.get(i));
            let said = tail
                .into_iter()
                .flatten()
                .filter_map(|t| Some((t, t.message.as_ref()?)));
            let name = said.clone().rev().find_map(|(_, m)| m.from.clone());
            let last = said.clone().next_back().map(|(t, m)| pages::LastMessage {
                who: pages::who(m),
                text: text(&m.text),
                at: t.at.clone(),
            });
            pages::Held {
                reference,
                number: p.phone_number_id.clone(),
                label: label_of(&p.phone_number_id),
                customer: c.shown(&p.customer),
                name,
                last,
                since: p.since.clone(),
                until: p.paused_until.clone(),
                by: crate::core::engine::why::by_words(&p.by),
                trigger: p.trigger_message_id.clone().unwrap_or_else(|| "-".into()),
            }
        })
        .collect();
    let said = error.map(Err).or_else(|| c.take_said(&id));
    let f = frame("With a human now", "held", &session, said, REFRESH_SECS);
    let page = pages::HeldPage {
        rows: &held,
        numbers: numbers.len(),
        total,
        more: next.map(|n| n.encode()),
        first: after.is_none(),
    };
    Html(pages::held(&f, &page).into_string()).into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct PauseForm {
    csrf: String,
    number: String,
    customer: String,
    duration: String,
}

pub(super) fn duration_of(text: &str) -> Option<Duration> {
    pages::DURATIONS
        .iter()
        .any(|(v, _)| *v == text)
        .then(|| humantime::parse_duration(text).ok())
        .flatten()
}

pub(super) async fn pause(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<PauseForm>,
) -> Response {
    let (id, session) = match c.posted(&headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let number = form.number.trim();
    if valid_phone_number_id(number) && !session.sees(number) {
        // As if it did not exist: an operator limited to some numbers learns nothing of others.
        return (StatusCode::NOT_FOUND, "no such conversation\n").into_response();
    }
    let said = match (
        crate::core::domain::numeric_phone_number_id(number),
        CustomerKey::parse_typed(&form.customer),
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
pub(super) struct RowForm {
    csrf: String,
    conversation: String,
    #[serde(default)]
    duration: Option<String>,
    /// `conversation`: the action came from the conversation's own page, and goes back there.
    #[serde(default)]
    back: Option<String>,
}

pub(super) async fn release(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<RowForm>,
) -> Response {
    row_action(c, headers, form, OperatorAction::Release).await
}

pub(super) async fn extend(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<RowForm>,
) -> Response {
    row_action(c, headers, form, OperatorAction::Extend).await
}

/// Pause from a conversation's own page (by its reference).
pub(super) async fn pause_conversation(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<RowForm>,
) -> Response {
    row_action(c, headers, form, OperatorAction::Pause).await
}

/// Release or Extend on a row of the first page.
pub(super) async fn row_action(
    c: Arc<Console>,
    headers: HeaderMap,
    form: RowForm,
    action: OperatorAction,
) -> Response {
    let (id, session) = match c.posted(&headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let back = match form.back.as_deref() {
        Some("conversation") => format!("/conversation?ref={}", form.conversation),
        _ => "/".to_owned(),
    };
    let Some(scope) = session.refs.get(&form.conversation).cloned() else {
        c.update(&id, |s| {
            s.said = Some(Err("that row is gone: the list was refreshed".into()))
        });
        return Redirect::to(&back).into_response();
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
        OperatorAction::Pause if form.back.is_some() => {
            match form.duration.as_deref().and_then(duration_of) {
                None => Err("choose one of the durations offered".into()),
                Some(duration) => {
                    let command = Command {
                        scope,
                        action: OperatorAction::Pause,
                        duration: Some(duration),
                        by: Some(session.operator.clone()),
                    };
                    c.act(command, &format!("Pause {shown}")).await
                }
            }
        }
        OperatorAction::Pause | OperatorAction::Extend => {
            match form.duration.as_deref().and_then(duration_of) {
                None => Err("choose one of the durations offered".into()),
                Some(by) => {
                    // Decided in the conversation's lane: the deadline in force plus `by`.
                    let command = Command {
                        scope,
                        action: OperatorAction::Extend,
                        duration: Some(by),
                        by: Some(session.operator.clone()),
                    };
                    let what = format!("Extend {shown} by {}", humantime::format_duration(by));
                    c.act(command, &what).await
                }
            }
        }
    };
    c.update(&id, |s| s.said = Some(said));
    Redirect::to(&back).into_response()
}
