//! `coexist conversation show|pause|release`: the operator's view and control of one
//! conversation, against Redis (the manual path for when an echo never arrives).

use serde::Serialize;

use crate::adapters::broker::{self, Outgoing, Publisher, Topology};
use crate::adapters::redis::{PageCursor, RedisStore};
use crate::core::domain::Scope;
use crate::core::engine::event::{By, ByKind, Outbound};
use crate::core::engine::state::{Handler, State};
use crate::core::engine::OperatorAction;
use crate::core::store::StateStore;
use crate::core::time::Millis;
use crate::core::unit::Answer;
use crate::runtime::config::Config;
use lapin::Connection;

/// What `conversation show` prints.
#[derive(Debug, Serialize, PartialEq, schemars::JsonSchema)]
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

#[derive(Debug, Serialize, PartialEq, schemars::JsonSchema)]
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
    let (conversation, state, ttl) = load(store, scope, now).await?;
    Ok(view(&conversation, &state, ttl, now))
}

/// The conversation that `scope` names (by any of the customer's names), its state, and the
/// milliseconds left on its pause key.
pub async fn load(
    store: &RedisStore,
    scope: &Scope,
    now: Millis,
) -> crate::core::store::Result<(Scope, State, Option<i64>)> {
    let conversation = conversation(store, scope).await?;
    let (state, ttl) = state_of(store, &conversation, now).await?;
    Ok((conversation, state, ttl))
}

/// The conversation that `scope` names (by any of the customer's names).
pub async fn conversation(store: &RedisStore, scope: &Scope) -> crate::core::store::Result<Scope> {
    Ok(match &scope.customer {
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
    })
}

/// A resolved conversation's state, and the milliseconds left on its pause key.
pub async fn state_of(
    store: &RedisStore,
    conversation: &Scope,
    now: Millis,
) -> crate::core::store::Result<(State, Option<i64>)> {
    let snap = store.load(conversation, "-", now).await?;
    let ttl = store.pause_ttl_ms(conversation).await?;
    Ok((snap.state, ttl))
}

/// One line of `conversation list`: a conversation whose AI agent is paused now.
#[derive(Debug, Serialize, PartialEq, schemars::JsonSchema)]
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

/// A page of the conversations whose AI agent is paused at `now`, soonest release first, from
/// `after` (the start when `None`); where the next page starts (`None`: none).
pub async fn list(
    store: &RedisStore,
    now: Millis,
    after: Option<PageCursor>,
    limit: usize,
) -> crate::core::store::Result<(Vec<Paused>, Option<PageCursor>)> {
    let (page, next) = store.paused_page(now, after, limit).await?;
    let rows = page
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
    Ok((rows, next))
}

/// [`list`] of the numbers `sees` admits only: pages of the paused conversations are read until
/// `limit` rows are found or [`SCAN_PAGES`] pages were read (the cursor then goes on from
/// there), so one answer costs a bounded number of reads however many other numbers have.
pub async fn list_visible(
    store: &RedisStore,
    now: Millis,
    mut after: Option<PageCursor>,
    limit: usize,
    sees: impl Fn(&str) -> bool,
) -> crate::core::store::Result<(Vec<Paused>, Option<PageCursor>)> {
    let mut rows = Vec::new();
    for _ in 0..SCAN_PAGES {
        // Never more than still wanted: a page is never cut, so its cursor stays exact.
        let (page, next) = list(store, now, after, limit - rows.len()).await?;
        rows.extend(page.into_iter().filter(|p| sees(&p.phone_number_id)));
        after = next;
        if after.is_none() || rows.len() == limit {
            break;
        }
    }
    Ok((rows, after))
}

/// How many pages [`list_visible`] reads at most for one answer.
pub const SCAN_PAGES: usize = 20;

/// `conversation list`'s header line.
pub fn table_header() -> String {
    format!(
        "{:<20} {:<28} {:<22} {:>14}  {:<20} trigger\n",
        "number", "customer", "paused until", "left", "by"
    )
}

/// `conversation list`'s lines for one page: number, customer, paused until, time left, who,
/// trigger message.
pub fn table_rows(paused: &[Paused]) -> String {
    let mut out = String::new();
    for p in paused {
        let left = std::time::Duration::from_secs((p.left_ms.max(0) / 1000) as u64);
        // Every field escaped for the terminal: a row is always one line.
        let shown = |s: &str| crate::tools::printable::escape(s).into_owned();
        out.push_str(&format!(
            "{:<20} {:<28} {:<22} {:>14}  {:<20} {}\n",
            shown(&p.phone_number_id),
            shown(&p.customer),
            shown(&p.paused_until),
            humantime::format_duration(left).to_string(),
            shown(&by_text(&p.by)),
            shown(p.trigger_message_id.as_deref().unwrap_or("-"))
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
    #[error("the command is queued in partition {partition} ({queue}) but no worker decided it within {within:?} (a backlog there, or no worker running); it will be decided in order when a worker reaches it")]
    NotDecided {
        partition: u16,
        queue: String,
        within: std::time::Duration,
    },
    #[error("the command could not be decided: {0}")]
    Refused(String),
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
    /// How long a pause lasts (default: the coexistence timeout), or how much longer an
    /// extended one lasts.
    pub duration: Option<std::time::Duration>,
    /// Who gives it (`by.name` of its events).
    pub by: Option<String>,
}

/// How long a command's sender waits for a worker to decide it.
pub const DECIDED_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Pauses, releases or extends one conversation with connections of its own (`coexist
/// conversation`).
pub async fn act(
    config: &Config,
    command: Command,
    within: std::time::Duration,
) -> Result<Done, Error> {
    let store = store(config).await?;
    let topology = Topology::new(&config.namespace, config.partitions);
    let conn = broker::connect(config.amqp_url.expose(), "coexist-operator").await?;
    topology.declare(&conn).await?;
    let done = send(&conn, &topology, &store, command, within).await;
    let _ = conn.close(200, "done".into()).await;
    done
}

/// Sends a command to its conversation's partition, where a worker decides it in order with the
/// items around it (so its events never overtake theirs), and waits up to `within` for the
/// worker's answer: the events it published, then the state after. The console's actions go
/// through this too.
pub async fn send(
    conn: &Connection,
    topology: &Topology,
    store: &RedisStore,
    command: Command,
    within: std::time::Duration,
) -> Result<Done, Error> {
    use futures_util::StreamExt;
    let message = crate::core::unit::Command::operator(
        command.scope.clone(),
        command.action,
        command.duration,
        command.by,
        Millis::now(),
    );
    let id = message.id();
    // Direct reply-to: the answer comes on the channel the command is published on.
    let channel = conn.create_channel().await.map_err(broker::Error::from)?;
    let mut answers = channel
        .basic_consume(
            broker::REPLY_TO.into(),
            "coexist-command".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .map_err(broker::Error::from)?;
    let publisher = Publisher::on(channel.clone()).await?;
    let outgoing = Outgoing::command(topology, &message, Some(broker::REPLY_TO));
    publisher
        .publish_all(std::slice::from_ref(&outgoing))
        .await?;
    let waited = tokio::time::timeout(within, async {
        while let Some(Ok(delivery)) = answers.next().await {
            let ours = delivery
                .properties
                .correlation_id()
                .as_ref()
                .is_some_and(|c| c.as_str() == id);
            if ours {
                return serde_json::from_slice::<Answer>(&delivery.data).ok();
            }
        }
        None
    })
    .await;
    let _ = channel.close(200, "answered".into()).await;
    let answer = match waited {
        Ok(Some(answer)) => answer,
        _ => {
            // Where it waits: the layout in force (its record, else the first).
            let record = crate::adapters::redis::partitions::Partitions::new(
                store.connection(),
                &topology.ns,
            )
            .read()
            .await
            .ok()
            .flatten();
            let layout = record.map_or_else(|| topology.first_layout(), |r| r.layout);
            let partition = layout.partition_of(&command.scope);
            return Err(Error::NotDecided {
                partition,
                queue: layout.queue(topology, partition),
                within,
            });
        }
    };
    if let Some(error) = answer.error {
        return Err(Error::Refused(error));
    }
    let view = show(store, &command.scope, Millis::now()).await?;
    Ok(Done {
        events: answer.events,
        view,
    })
}
