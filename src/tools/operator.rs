//! `coexist conversation show|pause|release`: the operator's view and control of one
//! conversation, against Redis (the manual path for when an echo never arrives).

use std::sync::Arc;

use serde::Serialize;

use crate::adapters::broker::{self, Outgoing, Publisher, Topology};
use crate::adapters::redis::RedisStore;
use crate::core::apply::Applier;
use crate::core::domain::Scope;
use crate::core::engine::event::{By, ByKind, Outbound};
use crate::core::engine::state::{Handler, State};
use crate::core::engine::{Input, OperatorAction};
use crate::core::store::StateStore;
use crate::core::time::Millis;
use crate::runtime::config::Config;

/// What `conversation show` prints.
#[derive(Debug, Serialize, PartialEq)]
pub struct View {
    /// `{phone_number_id}:{id}`: the id is the first name the customer was known by.
    pub conversation: String,
    /// Every name the customer is known by in this conversation (linked phone numbers and
    /// business-scoped ids).
    pub names: Vec<String>,
    /// Who handles the customer now: `bot` or `human`.
    pub handler: &'static str,
    pub paused: bool,
    pub paused_until: Option<String>,
    /// Who began the pause in force.
    pub paused_by: Option<By>,
    /// Milliseconds left on the pause key in Redis.
    pub pause_ttl_ms: Option<i64>,
    /// A pause past its deadline whose `conversation.released` is not yet recorded.
    pub release_pending: bool,
    pub session: Option<SessionView>,
    pub last_reset: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct SessionView {
    pub id: String,
    pub handler: Handler,
    pub started_at: String,
    pub expires_at: String,
}

/// A conversation's state as the operator sees it at `now`.
pub fn view(scope: &Scope, state: &State, pause_ttl_ms: Option<i64>, now: Millis) -> View {
    let paused = state.paused(now);
    let mut names: Vec<String> = scope.customer.iter().map(|c| c.to_string()).collect();
    for n in &state.names {
        if !names.contains(&n.to_string()) {
            names.push(n.to_string());
        }
    }
    View {
        conversation: scope.to_string(),
        names,
        handler: if paused.is_some() { "human" } else { "bot" },
        paused: paused.is_some(),
        paused_until: paused.map(|p| p.until.rfc3339()),
        paused_by: paused.map(|p| p.by.clone()),
        pause_ttl_ms,
        release_pending: state.pause.as_ref().is_some_and(|p| p.until <= now),
        session: state.session_at(now).map(|s| SessionView {
            id: s.id.clone(),
            handler: s.handler,
            started_at: s.started.rfc3339(),
            expires_at: s.expires.rfc3339(),
        }),
        last_reset: state.last_reset.map(Millis::rfc3339),
    }
}

/// Reads from Redis the conversation that `scope` names (by any of the customer's names).
pub async fn show(
    store: &RedisStore,
    scope: &Scope,
    now: Millis,
) -> crate::core::store::Result<View> {
    let conversation = match &scope.customer {
        Some(name) => {
            let linked = store.resolve(&scope.phone_number_id, std::slice::from_ref(name));
            let id = linked
                .await?
                .pop()
                .flatten()
                .unwrap_or_else(|| name.clone());
            Scope::conversation(&scope.phone_number_id, id)
        }
        None => scope.clone(),
    };
    let snap = store.load(&conversation, "-", now).await?;
    let ttl = store.pause_ttl_ms(&conversation).await?;
    Ok(view(&conversation, &snap.state, ttl, now))
}

/// One line of `conversation list`: a conversation whose AI agent is paused now.
#[derive(Debug, Serialize, PartialEq)]
pub struct Paused {
    pub phone_number_id: String,
    /// The conversation's id: the first name the customer was known by.
    pub customer: String,
    /// RFC 3339.
    pub paused_until: String,
    /// The echo that paused (null for an operator's pause).
    pub trigger_message_id: Option<String>,
    /// Who paused it.
    pub by: By,
    /// RFC 3339: when the pause began.
    pub since: String,
    /// Milliseconds left.
    #[serde(skip)]
    pub left_ms: i64,
}

/// The conversations whose AI agent is paused at `now`, soonest release first.
pub async fn list(store: &RedisStore, now: Millis) -> crate::core::store::Result<Vec<Paused>> {
    let mut out: Vec<Paused> = store
        .paused(now)
        .await?
        .into_iter()
        .map(|(scope, pause)| Paused {
            phone_number_id: scope.phone_number_id.clone(),
            customer: scope.customer.map(|c| c.to_string()).unwrap_or_default(),
            paused_until: pause.until.rfc3339(),
            trigger_message_id: pause.trigger.strip_prefix("m:").map(str::to_owned),
            by: pause.by.clone(),
            since: pause.since.rfc3339(),
            left_ms: pause.until.0 - now.0,
        })
        .collect();
    out.sort_by_key(|p| p.left_ms);
    Ok(out)
}

/// `conversation list`'s table: number, customer, paused until, time left, trigger message.
pub fn table(paused: &[Paused]) -> String {
    let mut out = format!(
        "{:<20} {:<28} {:<22} {:>14}  {:<20} trigger\n",
        "number", "customer", "paused until", "left", "by"
    );
    for p in paused {
        let left = std::time::Duration::from_secs((p.left_ms.max(0) / 1000) as u64);
        out.push_str(&format!(
            "{:<20} {:<28} {:<22} {:>14}  {:<20} {}\n",
            p.phone_number_id,
            p.customer,
            p.paused_until,
            humantime::format_duration(left).to_string(),
            by_text(&p.by),
            p.trigger_message_id.as_deref().unwrap_or("-")
        ));
    }
    out
}

/// Who paused, as a person reads it: `business_app`, `routing`, `system`, `operator:{name}`.
pub fn by_text(by: &By) -> String {
    let kind = match by.kind {
        ByKind::BusinessApp => "business_app",
        ByKind::Operator => "operator",
        ByKind::Routing => "routing",
        ByKind::System => "system",
    };
    match &by.name {
        Some(name) => format!("{kind}:{name}"),
        None => kind.to_owned(),
    }
}

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach Redis: {0}")]
    Unreachable(crate::core::store::Error),
    #[error("{0}")]
    Store(#[from] crate::core::store::Error),
    #[error("cannot reach RabbitMQ: {0}")]
    Broker(#[from] broker::Error),
    #[error("the state changed but its events were not published: {0}")]
    NotPublished(broker::Error),
}

/// Connects to the conversation state of `config`'s namespace.
pub async fn store(config: &Config) -> Result<RedisStore, Error> {
    RedisStore::open(&config.redis, &config.namespace, config.redis_replicas)
        .await
        .map_err(Error::Unreachable)
}

/// What `conversation pause|release` did: the events it published, and the state after.
pub struct Done {
    pub events: Vec<Outbound>,
    pub view: View,
}

/// An operator's command on one conversation.
#[derive(Debug, Clone)]
pub struct Command {
    pub scope: Scope,
    pub action: OperatorAction,
    /// How long a pause lasts (default: the coexistence timeout).
    pub duration: Option<std::time::Duration>,
    /// Who gives it (`by.name` of its events).
    pub by: Option<String>,
}

/// Pauses or releases one conversation with connections of its own (`coexist conversation`).
pub async fn act(config: &Config, command: Command, now: Millis) -> Result<Done, Error> {
    let applier = Applier::new(store(config).await?, Arc::new(config.rules.clone()));
    let topology = Topology::new(&config.namespace, config.partitions);
    let conn = broker::connect(config.amqp_url.expose(), "coexist-operator").await?;
    topology.declare(&conn).await?;
    let publisher = Publisher::open(&conn).await?;
    let done = apply(&applier, &publisher, &topology, command, now).await;
    let _ = conn.close(200, "done".into()).await;
    done
}

/// Applies a command, publishes its events like any others (confirmed; a pause's only once the
/// reply gate has no reply in flight for the conversation), and only then records them
/// published. The console runs its actions through this too.
pub async fn apply(
    applier: &Applier<RedisStore>,
    publisher: &Publisher,
    topology: &Topology,
    command: Command,
    now: Millis,
) -> Result<Done, Error> {
    let input = Input::Operator {
        scope: command.scope.clone(),
        action: command.action,
        at: now,
        duration: command.duration,
        by: command.by,
    };
    let applied = applier.apply(&input, now).await?;
    if crate::core::engine::event::begins_pause(&applied.events) {
        applier.store().replies_settled(&applied.scope).await?;
    }
    if !applied.events.is_empty() {
        let messages: Vec<Outgoing> = applied
            .events
            .iter()
            .map(|e| Outgoing::event(topology, e))
            .collect();
        publisher
            .publish_all(&messages)
            .await
            .map_err(Error::NotPublished)?;
        crate::runtime::metrics::published(&applied.events);
    }
    applier.acknowledge(&applied).await?;
    let view = show(applier.store(), &command.scope, now).await?;
    Ok(Done {
        events: applied.events,
        view,
    })
}
