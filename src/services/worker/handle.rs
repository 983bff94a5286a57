//! Handling one delivery: each item of the unit is decided (retrying while Redis is away),
//! its events published with confirms (retrying while the broker is away), and recorded as
//! published. An item that keeps failing for another reason is dead-lettered with the rest of
//! its unit. Each item is handled inside a span naming it, so every log line says which it is.

use tracing::Instrument;

use super::Shared;
use crate::adapters::broker::{Outgoing, Stage, COMMAND_TYPE, UNIT_TYPE};
use crate::core::apply::{Applied, Delivery};
use crate::core::domain::{redact_digits, Scope};
use crate::core::engine::event::{Exchange, Outbound};
use crate::core::engine::input::ItemKind;
use crate::core::engine::Input;
use crate::core::time::Millis;
use crate::core::unit::{Answer, Command, Unit, VERSION};
use crate::runtime::retry::{retrying, until_ok, Interrupted, Stopped};
use lapin::BasicProperties;
use opentelemetry::Context;

/// Attempts at an item failing for a reason other than an unreachable server before it is
/// dead-lettered.
const MAX_ATTEMPTS: u32 = 5;

/// A delivery, read once: the unit or command it carries, or why it cannot be read.
pub(crate) enum Work {
    Unit(Unit),
    Command(Command),
    Unreadable(String),
}

impl Work {
    /// Reads a delivery of AMQP type `kind` (a command, or else a unit).
    pub(crate) fn read(kind: Option<&str>, data: &[u8]) -> Work {
        if kind == Some(COMMAND_TYPE) {
            return match serde_json::from_slice::<Command>(data) {
                Ok(c) if c.v == VERSION => Work::Command(c),
                Ok(c) => Work::Unreadable(format!("command version {} is not understood", c.v)),
                Err(e) => Work::Unreadable(format!("unreadable command: {e}")),
            };
        }
        match serde_json::from_slice::<Unit>(data) {
            Ok(u) if u.v == VERSION => Work::Unit(u),
            Ok(u) => Work::Unreadable(format!("unit version {} is not understood", u.v)),
            Err(e) => Work::Unreadable(format!("unreadable unit: {e}")),
        }
    }

    /// The lane it is handled in: its business number (unreadable work has a lane of its own).
    pub(crate) fn lane(&self) -> &str {
        match self {
            Work::Unit(u) => &u.scope.phone_number_id,
            Work::Command(c) => &c.scope.phone_number_id,
            Work::Unreadable(_) => "",
        }
    }
}

/// How deciding one input ended.
enum Decided {
    /// Decided (or found decided before) and its events published.
    Published(Applied),
    /// It keeps failing for a reason that does not pass: the caller parks it.
    Failed { error: String, attempts: u32 },
}

/// Says that an item waits: a passing fault is counted by reason and logged at most once a
/// minute; any other failure is logged each time (it leads to a dead letter).
fn waiting(e: &crate::core::store::Error, attempt: u32, delay: std::time::Duration) {
    let Some(reason) = e.passing() else {
        tracing::warn!(attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "deciding an item failed; retrying");
        return;
    };
    metrics::counter!(crate::runtime::metrics::REDIS_WAITS, "reason" => reason).increment(1);
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(60)) {
        *last = Some(std::time::Instant::now());
        tracing::warn!(reason, error = %e, "items wait for a Redis fault to pass (never dead-lettered for it; logged once a minute, counted in coexist_redis_waits_total)");
    }
}

impl Shared {
    /// Handles one delivery (`data`, read as `work`, with its AMQP `properties`): the trace
    /// context of its processing (for the acknowledgement's span); `Err(Interrupted)` when
    /// shutdown came first (leave it unacknowledged: it is delivered again).
    pub(crate) async fn handle(
        &self,
        partition: u16,
        queue: &str,
        data: &[u8],
        properties: &BasicProperties,
        work: Work,
    ) -> Result<Context, Interrupted> {
        // The webhook's trace continues here: a `process` span under the ingress's `send`.
        let carried = crate::runtime::trace::from_amqp(properties.headers());
        let processing = crate::runtime::trace::process(&carried, queue);
        let unit = match work {
            Work::Unit(u) => u,
            Work::Command(c) => {
                self.command(partition, &c, properties, &processing).await?;
                return Ok(processing);
            }
            Work::Unreadable(reason) => {
                self.dead_letter(data.to_vec(), UNIT_TYPE, None, &reason, 1)
                    .await?;
                return Ok(processing);
            }
        };
        for i in 0..unit.items.len() {
            let span = tracing::info_span!(
                "item",
                partition,
                conversation = %self.for_log(&unit.items[i].scope),
                item = %self.key_for_log(&unit.items[i].key),
                rule = tracing::field::Empty,
            );
            let input = Input::Item(&unit.items[i]);
            let decided = self
                .decide(&input, unit.accepted_at, &processing)
                .instrument(span.clone())
                .await?;
            let trail = match &decided {
                Decided::Published(a) => a.trail.as_slice(),
                Decided::Failed { .. } => &[],
            };
            self.activity.item(&unit.items[i], unit.accepted_at, trail);
            if let Decided::Failed { error, attempts } = decided {
                // Keeps failing: park this item and the rest of the unit, with the reason.
                let _entered = span.enter();
                tracing::error!(error = %error, attempts, "dead-lettering an item that keeps failing");
                let rest = Unit {
                    items: unit.items[i..].to_vec(),
                    ..unit.clone()
                };
                let body = serde_json::to_vec(&rest).expect("units serialise");
                self.dead_letter(body, UNIT_TYPE, Some(&rest.id()), &error, attempts as i64)
                    .await?;
                break;
            }
        }
        Ok(processing)
    }

    /// Decides a command in its lane, and answers its sender when it asked (`reply_to`).
    async fn command(
        &self,
        partition: u16,
        command: &Command,
        properties: &BasicProperties,
        trace: &Context,
    ) -> Result<(), Interrupted> {
        let input = command.input(self.clock.now());
        let span = tracing::info_span!(
            "item",
            partition,
            conversation = %self.for_log(&command.scope),
            item = %self.key_for_log(&input.key()),
            rule = tracing::field::Empty,
        );
        let decided = self
            .decide(&input, command.accepted_at, trace)
            .instrument(span.clone())
            .await?;
        let answer = match decided {
            Decided::Published(applied) => Answer {
                events: applied.events,
                error: None,
            },
            Decided::Failed { error, attempts } => {
                let _entered = span.enter();
                tracing::error!(error = %error, attempts, "dead-lettering a command that keeps failing");
                let body = serde_json::to_vec(command).expect("commands serialise");
                let id = command.id();
                self.dead_letter(body, COMMAND_TYPE, Some(&id), &error, attempts as i64)
                    .await?;
                Answer {
                    events: Vec::new(),
                    error: Some(format!("{error} (dead-lettered after {attempts} attempts)")),
                }
            }
        };
        if let (Some(to), Some(id)) = (properties.reply_to(), properties.correlation_id()) {
            let body = serde_json::to_vec(&answer).expect("answers serialise");
            let message = Outgoing::answer(to.as_str(), id.as_str(), body);
            // Best effort: a sender that gave up is gone, and the command stands either way.
            if let Err(e) = self.link.send(&message).await {
                tracing::debug!(error = %e, "a command's answer was not sent");
            }
        }
        Ok(())
    }

    /// Decides one input (retrying while Redis is away), publishes its events (retrying while
    /// the broker is away) and records them published.
    async fn decide(
        &self,
        input: &Input<'_>,
        accepted_at: Millis,
        trace: &Context,
    ) -> Result<Decided, Interrupted> {
        // Failures that pass (Redis away, out of memory, read-only, loading, failing over) are
        // waited out for as long as they last; only the others count towards a dead letter.
        let failures = std::sync::atomic::AtomicU32::new(0);
        let permanent = |e: &crate::core::store::Error, _| {
            !e.transient()
                && failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 >= MAX_ATTEMPTS
        };
        let decided = retrying(
            &self.stop,
            permanent,
            |e: &crate::core::store::Error, attempt, delay| waiting(e, attempt, delay),
            || self.applier.apply(input, self.clock.now()),
        )
        .await;
        let mut applied = match decided {
            Ok(a) => a,
            Err(Stopped::Interrupted) => return Err(Interrupted),
            Err(Stopped::GaveUp { error, attempts }) => {
                return Ok(Decided::Failed {
                    error: error.to_string(),
                    attempts,
                })
            }
        };
        if let Some(rule) = applied.rule {
            tracing::Span::current().record("rule", rule.as_str());
        }
        crate::runtime::metrics::applied(&applied);
        if crate::core::engine::event::begins_pause(&applied.events) {
            // R17: replies the gate let through before this pause reach Meta before the
            // handover is published (and any checked after it are refused).
            let settled = until_ok(
                "waiting for replies in flight",
                &self.stop,
                |e: &crate::core::store::Error, _| !e.transient(),
                || self.applier.store().replies_settled(&applied.scope),
            )
            .await;
            if let Err(Stopped::Interrupted) = settled {
                return Err(Interrupted);
            }
        }
        let account_update = match input {
            Input::Item(item) if matches!(item.kind, ItemKind::AccountUpdate { .. }) => Some(item),
            _ => None,
        };
        if let (Some(item), false) = (account_update, applied.delivery == Delivery::Duplicate) {
            // An account_update moves the registered numbers of its WABA (once per item: a
            // redelivery finds the same change and publishes it again).
            let book = self.applier.shelf().current();
            let store = self.applier.store();
            let moved = until_ok(
                "changing numbers' state",
                &self.stop,
                |e: &crate::core::store::Error, _| !e.transient(),
                || crate::services::numbers::transitions(store, &book, item),
            )
            .await;
            match moved {
                Ok(events) => applied.events.extend(events),
                Err(Stopped::Interrupted) => return Err(Interrupted),
                Err(Stopped::GaveUp { error, .. }) => {
                    tracing::error!(error = %error, "a number's state change could not be recorded");
                }
            }
        }
        if let (Input::Item(item), false) = (input, applied.delivery == Delivery::Duplicate) {
            if let ItemKind::HistoryStatus {
                phase,
                chunk_order,
                progress,
                declined,
            } = &item.kind
            {
                // The history sync's progress joins the number's onboarding record (once per
                // chunk, forward only: a redelivery changes nothing).
                let pnid = &item.scope.phone_number_id;
                let store = self.applier.store();
                let noted = until_ok(
                    "recording the history sync's progress",
                    &self.stop,
                    |e: &crate::core::store::Error, _| !e.transient(),
                    || store.history_seen(pnid, *phase, *chunk_order, *progress, *declined),
                )
                .await;
                match noted {
                    Ok(()) => {}
                    Err(Stopped::Interrupted) => return Err(Interrupted),
                    Err(Stopped::GaveUp { error, .. }) => {
                        tracing::error!(error = %error, "the history sync's progress could not be recorded");
                    }
                }
            }
        }
        self.publish(&applied.events, trace).await?;
        if !applied.events.is_empty() {
            self.marks.add(&applied.scope, &applied.key).await;
            // Let the marks' task send the mark before this lane asks Redis about its next item
            // (Meta's retry of this one right behind it then finds it done, and publishes
            // nothing again; the contract allows the repeat, a redelivery does it).
            tokio::task::yield_now().await;
        }
        tracing::debug!(events = applied.events.len(), "item decided");
        if applied.delivery != Delivery::Duplicate && !applied.events.is_empty() {
            let secs = (self.clock.now().0 - accepted_at.0).max(0) as f64 / 1000.0;
            metrics::histogram!(crate::runtime::metrics::LATENCY).record(secs);
        }
        Ok(Decided::Published(applied))
    }

    fn for_log(&self, scope: &Scope) -> String {
        if self.log_content {
            scope.to_string()
        } else {
            scope.redacted()
        }
    }

    fn key_for_log(&self, key: &str) -> String {
        if self.log_content {
            key.to_owned()
        } else {
            redact_digits(key)
        }
    }

    /// Publishes events, retrying while the broker is away; each carries the trace of a `send`
    /// span (one per exchange) under `trace`.
    async fn publish(&self, events: &[Outbound], trace: &Context) -> Result<(), Interrupted> {
        if events.is_empty() {
            return Ok(());
        }
        let mut sends: Vec<(Exchange, Context)> = Vec::new();
        let mut messages = Vec::with_capacity(events.len());
        for e in events {
            let cx = match sends.iter().find(|(x, _)| *x == e.exchange) {
                Some((_, cx)) => cx.clone(),
                None => {
                    let n = events.iter().filter(|o| o.exchange == e.exchange).count();
                    let exchange = self.topology.exchange(e.exchange);
                    let key = (n == 1).then(|| e.event.name());
                    let cx = crate::runtime::trace::send(trace, exchange, key, n);
                    sends.push((e.exchange, cx.clone()));
                    cx
                }
            };
            messages.push(Outgoing::event(&self.topology, e).traced(&cx));
        }
        let published = self.publish_retrying("publishing events", &messages).await;
        for (_, cx) in &sends {
            crate::runtime::trace::end(cx, published.is_err().then_some("interrupted"));
        }
        published?;
        crate::runtime::metrics::published(events);
        Ok(())
    }

    async fn dead_letter(
        &self,
        body: Vec<u8>,
        kind: &str,
        id: Option<&str>,
        reason: &str,
        attempts: i64,
    ) -> Result<(), Interrupted> {
        let message = Outgoing::dead_letter(
            &self.topology,
            body,
            kind,
            id,
            reason,
            Stage::Worker,
            attempts,
        );
        self.publish_retrying("dead-lettering", std::slice::from_ref(&message))
            .await?;
        metrics::counter!(crate::runtime::metrics::DEAD_LETTERS, "stage" => Stage::Worker.as_str())
            .increment(1);
        Ok(())
    }

    /// Publishes until confirmed: a broker failure is always worth waiting out.
    async fn publish_retrying(&self, what: &str, messages: &[Outgoing]) -> Result<(), Interrupted> {
        until_ok(
            what,
            &self.stop,
            |_, _| false,
            || self.link.publish_all(messages),
        )
        .await
        .map_err(|_| Interrupted)
    }
}
