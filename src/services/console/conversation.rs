//! A conversation's page: as the Human Chat shows it (the customer, 📱 the Business App, 🤖 the AI
//! agent, a refused reply struck through with its reason), from the conversation's trail; its
//! state and who holds it; why each decision was made; what happens on the customer's next
//! message; Release, Extend or Pause. Reached from the list, from the live view and by a search
//! by number and customer. An operator limited to some numbers gets `404` for any other.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::*;

#[derive(serde::Deserialize)]
pub(super) struct Which {
    /// A reference from the list or the live view.
    #[serde(rename = "ref")]
    reference: Option<String>,
    /// A search: the business number and the customer.
    number: Option<String>,
    customer: Option<String>,
}

/// `GET /conversation?ref=R` or `?number=N&customer=C`; with neither, the search form.
pub(super) async fn page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<Which>,
) -> Response {
    let Some((id, session)) = c.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    let said = c.take_said(&id);
    let searched = (q.number.as_deref().map(str::trim), q.customer.as_deref());
    let scope = match (q.reference.as_deref(), searched) {
        (Some(r), _) => match session.refs.get(r) {
            Some(scope) => Ok(scope.clone()),
            None => Err("that conversation's link has expired: search it by number and customer"),
        },
        (None, (Some(n), Some(cu))) if !n.is_empty() || !cu.trim().is_empty() => {
            if valid_phone_number_id(n) && !session.sees(n) {
                return (StatusCode::NOT_FOUND, "no such conversation\n").into_response();
            }
            match (
                crate::core::domain::numeric_phone_number_id(n),
                CustomerKey::parse_typed(cu),
            ) {
                (true, Some(key)) => Ok(Scope::conversation(n, key)),
                (false, _) => Err("the business number is a phone_number_id: digits only"),
                (_, None) => Err("the customer is a phone number or a business-scoped user id"),
            }
        }
        _ => Err(""),
    };
    let scope = match scope {
        Ok(scope) => scope,
        Err(why) => {
            let said = (!why.is_empty()).then(|| Err(why.to_owned())).or(said);
            let f = frame("A conversation", "held", &session, said, 0);
            return Html(pages::conversation_search(&f).into_string()).into_response();
        }
    };
    let now = Millis::now();
    let explained = crate::tools::explain::explain(&c.store, &c.config, &scope, now).await;
    let explained = match explained {
        Ok(e) => e,
        Err(e) => {
            let said = Some(Err(format!("cannot read the conversation from Redis: {e}")));
            let f = frame("A conversation", "held", &session, said, 0);
            return Html(pages::conversation_search(&f).into_string()).into_response();
        }
    };
    let label = c
        .store
        .number(&scope.phone_number_id)
        .await
        .ok()
        .flatten()
        .and_then(|r| r.name);
    let customer = scope.customer.as_ref().map_or("", |k| k.as_str());
    let name = explained
        .trail
        .iter()
        .rev()
        .find_map(|t| t.message.as_ref()?.from.clone());
    let text = |t: &str| match c.log_content {
        true => t.to_owned(),
        false => crate::core::domain::redact_digits(t),
    };
    let view = pages::ConversationPage {
        reference: c.remember(&id, &scope),
        number: scope.phone_number_id.clone(),
        label,
        customer: c.shown(customer),
        name,
        explained: &explained,
        text: &text,
    };
    let f = frame("A conversation", "held", &session, said, 0);
    Html(pages::conversation(&f, &view).into_string()).into_response()
}
