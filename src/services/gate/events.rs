//! The reply gate's events (`reply.suppressed`, `message.sent_by_bot`, human_chat): built from
//! the reply and the conversation, and published in the background with confirms, so the agent
//! is answered without waiting for the broker. A reply is judged and forwarded only once its
//! event has a [`Place`] in the bounded queue (waiting up to [`PLACE_WITHIN`] for one while the
//! broker is away or slow): the gate slows down or answers `503` rather than drop an event.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::adapters::broker::{Link, Outgoing, Topology};
use crate::core::domain::{stable_id, Customer, Scope};
use crate::core::engine::event::{
    Event, EventMessage, Exchange, Outbound, Payload, Refusal, ReplySuppressed, SentByBot, Source,
};
use crate::core::engine::state::State;
use crate::core::meta::reply::Send;
use crate::core::time::Millis;
use crate::runtime::retry::until_ok;
use opentelemetry::Context;

/// Events waiting for the broker at most.
const QUEUE: usize = 10_000;
/// How long a reply waits for a place in a full queue before the gate answers `503`.
pub const PLACE_WITHIN: Duration = Duration::from_secs(2);
/// Events published together at most.
const BATCH: usize = 1024;
/// How long events still queued at shutdown may take to be published.
const FLUSH_WITHIN: Duration = Duration::from_secs(5);

/// Ids of `reply.suppressed` published lately: an agent retrying the same refused reply in a
/// loop does not fill the inbox with copies of one event.
const RECENT: usize = 4096;

/// Where the gate's events go to be published.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::Sender<(Outbound, Context)>,
    recent: Arc<Mutex<Recent>>,
    wait: Duration,
}

/// A place held in the queue for one event; dropped unused, it is given back.
pub struct Place(mpsc::OwnedPermit<(Outbound, Context)>);

/// The last [`RECENT`] event ids published, oldest first.
#[derive(Default)]
struct Recent {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Recent {
    /// Whether `id` is new (and now remembered).
    fn first_time(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == RECENT {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

impl Events {
    /// Starts the publisher; it ends when `stop` is cancelled, after publishing (for at most
    /// [`FLUSH_WITHIN`]) what it holds.
    pub fn spawn(
        link: Arc<Link>,
        topology: Topology,
        stop: CancellationToken,
    ) -> (Events, tokio::task::JoinHandle<()>) {
        Self::spawn_sized(link, topology, stop, QUEUE, PLACE_WITHIN)
    }

    /// [`Events::spawn`] with a queue of `queue` events and a wait of `wait` for a place.
    pub fn spawn_sized(
        link: Arc<Link>,
        topology: Topology,
        stop: CancellationToken,
        queue: usize,
        wait: Duration,
    ) -> (Events, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue);
        let events = Events {
            tx,
            recent: Arc::default(),
            wait,
        };
        (events, tokio::spawn(run(link, topology, rx, stop)))
    }

    /// A place in the queue for one event, waiting for one while the queue is full; `None`
    /// when none came free in time (or the publisher has stopped).
    pub async fn place(&self) -> Option<Place> {
        match tokio::time::timeout(self.wait, self.tx.clone().reserve_owned()).await {
            Ok(Ok(permit)) => Some(Place(permit)),
            _ => None,
        }
    }

    /// Queues an event in its place, unless the same event (same id) was queued lately.
    pub fn publish_once(&self, place: Place, event: Outbound, trace: &Context) {
        let first = self
            .recent
            .lock()
            .expect("recent events")
            .first_time(&event.event.event_id);
        if first {
            self.publish(place, event, trace);
        }
    }

    /// Queues an event in its place, carrying the trace of `trace` (the reply's).
    pub fn publish(&self, place: Place, event: Outbound, trace: &Context) {
        place.0.send((event, trace.clone()));
    }
}

async fn run(
    link: Arc<Link>,
    topology: Topology,
    mut rx: mpsc::Receiver<(Outbound, Context)>,
    stop: CancellationToken,
) {
    let mut batch: Vec<(Outbound, Context)> = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            e = rx.recv() => e,
            () = stop.cancelled() => None,
        };
        let stopping = first.is_none();
        batch.extend(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let messages: Vec<Outgoing> = batch
                .iter()
                .map(|(e, trace)| {
                    let send = crate::runtime::trace::send(
                        trace,
                        topology.exchange(e.exchange),
                        Some(e.event.name()),
                        1,
                    );
                    crate::runtime::trace::end(&send, None);
                    Outgoing::event(&topology, e).traced(&send)
                })
                .collect();
            // While running: until the broker confirms. Stopping: for a bounded time.
            let give_up = CancellationToken::new();
            if stopping {
                let g = give_up.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(FLUSH_WITHIN).await;
                    g.cancel();
                });
            }
            let published = until_ok(
                "publishing the reply gate's events",
                &give_up,
                |_, _| false,
                || link.publish_all(&messages),
            )
            .await;
            match published {
                Ok(()) => crate::runtime::metrics::published(batch.iter().map(|(e, _)| e)),
                Err(_) => tracing::warn!(
                    events = batch.len(),
                    "stopping: the reply gate's last events were not published"
                ),
            }
            batch.clear();
        }
        if stopping {
            return;
        }
    }
}

/// The message of a reply, as events show it.
fn message(send: &Send, id: Option<String>) -> EventMessage {
    EventMessage {
        id,
        kind: send.content.kind.clone(),
        text: send.content.text.clone(),
        source: Source::Bot,
        icon: Source::Bot.icon(),
        media: send.content.media.clone(),
        reply_to: send.content.reply_to.clone(),
        raw: send.raw.clone(),
    }
}

/// The trail's entry for a reply the gate judged (R17): refused with `refused`'s reason and
/// sentence, or let through and accepted by Meta as `wamid`.
pub fn trail_entry(
    send: &Send,
    id: String,
    now: Millis,
    outcome: Result<&str, (Refusal, String)>,
) -> crate::core::engine::why::TrailEntry {
    use crate::core::engine::why::{Said, TrailEntry};
    let (outcome, why, refused, wamid) = match outcome {
        Ok(wamid) => (
            "reply sent".to_owned(),
            "the gate let the AI agent's reply through (the AI agent handles the conversation) and Meta accepted it".to_owned(),
            None,
            Some(wamid.to_owned()),
        ),
        Err((reason, why)) => (
            format!("reply refused ({})", reason.as_str()),
            why,
            Some(reason.as_str().to_owned()),
            None,
        ),
    };
    TrailEntry {
        at: now.rfc3339(),
        item: id,
        kind: "reply".into(),
        rule: "R17".into(),
        outcome,
        why,
        message: Some(Said {
            source: Source::Bot,
            id: wamid,
            text: send.content.text.clone(),
            refused,
            from: None,
        }),
    }
}

/// The customer as the conversation knows them (the name the reply was addressed to first).
fn customer(send: &Send, state: &State) -> Customer {
    let mut names = vec![send.customer().clone()];
    names.extend(
        state
            .names
            .iter()
            .filter(|n| *n != send.customer())
            .cloned(),
    );
    Customer::from_names(&names)
}

fn outbound(
    scope: &Scope,
    state: &State,
    send: &Send,
    now: Millis,
    event_id: String,
    payload: Payload,
) -> Outbound {
    let event = Event {
        event_id,
        occurred_at: now.rfc3339(),
        phone_number_id: scope.phone_number_id.clone(),
        customer: customer(send, state),
        session_id: state.session_at(now).map(|s| s.id.clone()),
        group_id: scope
            .customer
            .as_ref()
            .and_then(|c| c.group_id())
            .map(str::to_owned),
        payload,
    };
    Outbound::new(Exchange::HumanChat, scope.to_string(), event)
}

/// The id of a refused reply's `reply.suppressed` (and of its trail entry).
pub fn suppressed_id(scope: &Scope, send: &Send, token: Option<&str>, reason: Refusal) -> String {
    stable_id(&[
        &scope.to_string(),
        "reply",
        send.raw.get(),
        token.unwrap_or(""),
        reason.as_str(),
    ])
}

/// `reply.suppressed`: the same refused reply (same body, token and reason) always has the same
/// id, so an agent retrying it does not fill the inbox.
pub fn suppressed(
    scope: &Scope,
    state: &State,
    send: &Send,
    token: Option<&str>,
    reason: Refusal,
    now: Millis,
) -> Outbound {
    let id = suppressed_id(scope, send, token, reason);
    let payload = Payload::ReplySuppressed(ReplySuppressed {
        reason,
        message: message(send, None),
    });
    outbound(scope, state, send, now, id, payload)
}

/// `message.sent_by_bot`: the reply Meta accepted, with Meta's wamid.
pub fn sent(scope: &Scope, state: &State, send: &Send, wamid: String, now: Millis) -> Outbound {
    let id = stable_id(&[&scope.to_string(), &wamid, "message.sent_by_bot"]);
    let payload = Payload::SentByBot(SentByBot {
        message: message(send, Some(wamid)),
    });
    outbound(scope, state, send, now, id, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full queue holds replies back (no place) instead of dropping their events, and a place
    /// given back serves the next.
    #[tokio::test]
    async fn a_full_queue_gives_no_place_and_drops_nothing() {
        let stop = CancellationToken::new();
        // A broker that is never there: nothing leaves the queue.
        let (link, link_task) = Link::spawn(
            "amqp://127.0.0.1:1/%2f".into(),
            "test".into(),
            Topology::new("events-test", 1),
            None,
            Duration::ZERO,
            stop.clone(),
        );
        let wait = Duration::from_millis(100);
        let (events, publisher) =
            Events::spawn_sized(link, Topology::new("events-test", 1), stop.clone(), 2, wait);
        let first = events.place().await.expect("a place in an empty queue");
        let second = events.place().await.expect("a second place");
        let started = std::time::Instant::now();
        assert!(
            events.place().await.is_none(),
            "a third place in a queue of two"
        );
        assert!(started.elapsed() >= wait, "it waited for a place first");
        drop(second);
        let third = events
            .place()
            .await
            .expect("the place given back serves the next");
        drop((first, third));
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), publisher).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), link_task).await;
    }
}
