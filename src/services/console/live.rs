//! The console's live view: Server-Sent Events of the events as they are published, from a
//! queue of its own ([`crate::tools::tail::Follow`]: never the default queues). When the broker goes
//! away the stream ends and the browser reconnects by itself (`retry: 2000`), with a new queue.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::Console;
use crate::core::domain::{redact_digits, CustomerKey, Scope};
use crate::core::engine::event::Exchange;
use crate::tools::tail::{Follow, Options};

#[derive(serde::Deserialize)]
pub(super) struct Filters {
    #[serde(default)]
    exchange: String,
    #[serde(default)]
    conversation: String,
}

/// Whether an operator limited to `numbers` (`None`: all) may see an event.
fn visible(numbers: &Option<Vec<String>>, shown: &crate::tools::tail::Shown) -> bool {
    match (numbers, &shown.number) {
        (None, _) => true,
        (Some(mine), Some(n)) => mine.contains(n),
        (Some(_), None) => false,
    }
}

/// How many of the latest events the console keeps for the live view's first look.
pub(super) const RECENT: usize = 100;

/// The latest events published, newest last: the live view opens with them rather than empty.
#[derive(Default)]
pub(super) struct Recent {
    events: std::sync::Mutex<std::collections::VecDeque<crate::tools::tail::Shown>>,
    /// Whether its queue is bound now (said by the console's `/readyz`, as `latest_events`).
    following: std::sync::atomic::AtomicBool,
}

impl Recent {
    /// `latest_events` of `/readyz`: degraded (still ready) while it is not following.
    pub(super) fn check(&self) -> crate::runtime::http::Check {
        use std::sync::atomic::Ordering;
        match self.following.load(Ordering::Relaxed) {
            true => crate::runtime::http::Check::Ok,
            false => crate::runtime::http::Check::Degraded("not following the events yet".into()),
        }
    }

    fn follows(&self, now: bool) {
        self.following
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    fn push(&self, shown: crate::tools::tail::Shown) {
        let mut recent = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(shown);
    }

    /// The kept events an operator limited to `numbers` may see, newest first.
    pub(super) fn visible(&self, numbers: &Option<Vec<String>>) -> Vec<crate::tools::tail::Shown> {
        let recent = self.events.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .rev()
            .filter(|s| visible(numbers, s))
            .cloned()
            .collect()
    }
}

/// Keeps `recent` filled with the latest events until `stop`, from a queue of its own (like
/// the live view's), opened again whenever the broker goes away.
pub(super) async fn follow_recent(
    recent: Arc<Recent>,
    amqp_url: crate::runtime::secret::Secret,
    topology: crate::adapters::broker::Topology,
    stop: tokio_util::sync::CancellationToken,
) {
    let exchanges = vec![Exchange::Bot, Exchange::HumanChat];
    let options = Options {
        exchanges: exchanges.clone(),
        conversation: None,
        json: false,
    };
    loop {
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            f = Follow::open(amqp_url.expose(), &topology, &exchanges, "coexist-console-recent") => f,
        };
        let Ok(mut follow) = opened else {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(2)) => continue,
            }
        };
        recent.follows(true);
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => {
                    follow.close().await;
                    return;
                }
                next = follow.next(&options) => next,
            };
            match next {
                Some(Ok(shown)) => recent.push(shown),
                Some(Err(_)) | None => break,
            }
        }
        recent.follows(false);
        follow.close().await;
    }
}

impl Console {
    /// How the live view shows `shown` to session `session_id`: its line (digits masked unless
    /// `log_content`) and its conversation's reference, for the page and the stream alike.
    pub(super) fn line(
        &self,
        session_id: &str,
        shown: crate::tools::tail::Shown,
    ) -> super::pages::LiveLine {
        super::pages::LiveLine {
            reference: conversation_of(&shown.json).map(|scope| self.remember(session_id, &scope)),
            exchange: shown.exchange.as_str(),
            kind: shown.kind,
            line: match self.log_content {
                true => shown.line,
                false => redact_digits(&shown.line),
            },
        }
    }
}

/// The conversation an event is about (its group's, else the customer's first name), if any.
fn conversation_of(json: &str) -> Option<Scope> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let pnid = v["phone_number_id"].as_str()?;
    let key = match v["group_id"].as_str() {
        Some(g) => CustomerKey::group(g)?,
        None => [&v["customer"]["wa_id"], &v["customer"]["user_id"]]
            .iter()
            .find_map(|n| n.as_str().filter(|s| !s.is_empty()))
            .and_then(CustomerKey::parse)?,
    };
    Some(Scope::conversation(pnid, key))
}

/// `GET /live/events`: `event` messages of `{"exchange", "type", "line", "ref"}` (`ref`: the
/// conversation's reference for its page, when the event is about one).
pub(super) async fn events(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    let Some((session_id, session)) = c.session(&headers) else {
        return (StatusCode::UNAUTHORIZED, "sign in first\n").into_response();
    };
    // An operator limited to some numbers sees their events only.
    let numbers = session.numbers.clone();
    let Ok(viewer) = c.viewers.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live views open\n",
        )
            .into_response();
    };
    let exchanges = match filters.exchange.as_str() {
        "bot" => vec![Exchange::Bot],
        "human_chat" => vec![Exchange::HumanChat],
        _ => vec![Exchange::Bot, Exchange::HumanChat],
    };
    let conversation = Scope::parse(filters.conversation.trim()).filter(|s| s.customer.is_some());
    let options = Options {
        exchanges: exchanges.clone(),
        conversation,
        json: false,
    };
    let follow = match Follow::open(
        c.amqp_url.expose(),
        &c.topology,
        &exchanges,
        "coexist-console-live",
    )
    .await
    {
        Ok(f) => f,
        Err(e) => {
            // The browser tries again by itself.
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the broker is not reachable: {e}\n"),
            )
                .into_response();
        }
    };
    let remember = Arc::new((c.clone(), session_id));
    let stream = futures_util::stream::unfold(
        (follow, (options, numbers), viewer, true),
        move |(mut follow, options, viewer, first)| {
            let remember = remember.clone();
            async move {
                if first {
                    let hello = Event::default()
                        .retry(Duration::from_secs(2))
                        .comment("following");
                    return Some((Ok::<_, Infallible>(hello), (follow, options, viewer, false)));
                }
                let next = loop {
                    match follow.next(&options.0).await {
                        Some(Ok(shown)) if !visible(&options.1, &shown) => continue,
                        other => break other,
                    }
                };
                match next {
                    Some(Ok(shown)) => {
                        let e = remember.0.line(&remember.1, shown);
                        let data = serde_json::json!({
                            "exchange": e.exchange,
                            "type": e.kind,
                            "line": e.line,
                            "ref": e.reference,
                        });
                        let event = Event::default().event("event").data(data.to_string());
                        Some((Ok(event), (follow, options, viewer, false)))
                    }
                    // The broker went away: end the stream; the browser reconnects.
                    Some(Err(_)) | None => {
                        follow.close().await;
                        None
                    }
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
