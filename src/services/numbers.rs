//! How a process keeps up with the number registry (docs/contract.md, "Numbers"):
//!
//! - [`follow`]: every [`POLL`] it reads the registry's version (one `GET` per process, never one
//!   per item) and, when it moved, loads the registry and puts a new [`Book`] on the shelf its
//!   decisions read. A change made by `number set` is used by every worker and gate within
//!   [`POLL`] plus one load: well under the 2 s the contract allows. Every [`RELOAD`] it loads
//!   anyway (a bump lost between a write and its `INCR` is picked up) and counts the numbers by
//!   state and `app_idle` for the metrics.
//! - [`Activity`]: the worker notes each item's number (webhook time, App message time) in memory
//!   and writes them every [`FLUSH`], raised only, never lowered: `last_webhook_at`,
//!   `last_app_message_at` and `first_seen_at` cost no write per item.
//! - [`transitions`]: what an `account_update` does to the registered numbers of its WABA, as
//!   `number.state_changed` events, once per item.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::adapters::redis::RedisStore;
use crate::core::engine::event::{By, Outbound};
use crate::core::engine::input::{Item, ItemKind};
use crate::core::numbers::{Book, Layers, LifeState, Overrides, Record, Seen, Shelf};
use crate::core::time::Millis;
use crate::runtime::metrics;

/// How often a process reads the registry's version.
pub const POLL: Duration = Duration::from_millis(500);
/// How often it loads the registry whatever the version says.
pub const RELOAD: Duration = Duration::from_secs(30);
/// How often the worker writes the numbers' activity times.
pub const FLUSH: Duration = Duration::from_secs(5);

/// The records with their runtime settings read; a record whose stored settings are no longer
/// valid (written by hand) is served without them, and said.
fn read(records: Vec<Record>) -> Vec<(Record, Overrides)> {
    records
        .into_iter()
        .map(|r| {
            let runtime = crate::runtime::config::read_settings(&r.settings).unwrap_or_else(|e| {
                tracing::warn!(number = %r.phone_number_id, error = %e, "a number's stored settings are not valid: served without its runtime settings");
                Overrides::default()
            });
            (r, runtime)
        })
        .collect()
}

/// Loads the registry and puts its book on `shelf`.
pub async fn load(
    store: &RedisStore,
    layers: &Layers,
    shelf: &Shelf,
    app_idle_warning: Duration,
) -> crate::core::store::Result<()> {
    let version = store.numbers_version().await?;
    let records = store.number_records_light().await?;
    count(&records, app_idle_warning);
    shelf.replace(layers.book(&read(records), version));
    Ok(())
}

/// The metrics of the numbers: how many in each state, and how many `app_idle`.
fn count(records: &[Record], warning: Duration) {
    let now = Millis::now();
    let mut by_state: HashMap<LifeState, u64> = HashMap::new();
    for r in records {
        *by_state.entry(r.state).or_default() += 1;
    }
    for state in [
        LifeState::Unregistered,
        LifeState::Onboarding,
        LifeState::Active,
        LifeState::Offboarded,
        LifeState::Disconnected,
    ] {
        let n = by_state.get(&state).copied().unwrap_or(0);
        ::metrics::gauge!(metrics::NUMBERS, "state" => state.as_str()).set(n as f64);
    }
    let idle = records.iter().filter(|r| r.app_idle(now, warning)).count();
    ::metrics::gauge!(metrics::NUMBERS_APP_IDLE).set(idle as f64);
    let missing = records.iter().filter(|r| r.echoes_missing(now)).count();
    ::metrics::gauge!(metrics::NUMBERS_ECHOES_MISSING).set(missing as f64);
}

/// A process's shelf, loaded before its first decision (retried until Redis answers), and the
/// task that keeps it current until `stop` (the caller watches it).
pub async fn shelf(
    store: &RedisStore,
    config: &crate::runtime::config::Config,
    stop: &CancellationToken,
) -> std::io::Result<(
    Shelf,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let shelf = Shelf::default();
    let loading = crate::runtime::retry::until_ok(
        "reading the number registry",
        stop,
        |_, _| false,
        || load(store, &config.numbers, &shelf, config.app_idle_warning),
    );
    loading
        .await
        .map_err(|_| std::io::Error::other("Redis: stopped before it answered"))?;
    let following = follow(
        store.clone(),
        config.numbers.clone(),
        shelf.clone(),
        config.app_idle_warning,
        stop.clone(),
    );
    Ok((shelf, following))
}

/// Keeps `shelf` current until `stop` (see the module's documentation). A Redis fault keeps the
/// book in hand and is said once until it passes.
pub async fn follow(
    store: RedisStore,
    layers: Layers,
    shelf: Shelf,
    app_idle_warning: Duration,
    stop: CancellationToken,
) {
    let mut loaded_at = std::time::Instant::now();
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = stop.cancelled() => return,
        }
        let moved = match store.numbers_version().await {
            Ok(v) => v != shelf.current().version,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the number registry: deciding with the settings in hand until Redis answers");
                }
                failing = true;
                continue;
            }
        };
        if !moved && loaded_at.elapsed() < RELOAD {
            continue;
        }
        match load(&store, &layers, &shelf, app_idle_warning).await {
            Ok(()) => {
                if failing {
                    tracing::info!("the number registry is read again");
                }
                failing = false;
                loaded_at = std::time::Instant::now();
                if moved {
                    tracing::debug!(
                        version = shelf.current().version,
                        "number registry reloaded"
                    );
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot load the number registry: deciding with the settings in hand until Redis answers");
                }
                failing = true;
            }
        }
    }
}

/// The numbers' activity noted since the last write: number -> what it did.
#[derive(Debug, Default)]
pub struct Activity(Mutex<HashMap<String, Seen>>);

impl Activity {
    /// Notes what a number did.
    pub fn note(&self, pnid: &str, seen: &Seen) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(pnid.to_owned()).or_default().raise(seen);
    }

    /// Notes what `item` says about its number's activity, and what its decision was (`trail`):
    /// a handover, a reset matched or a near miss of it, for `number check`.
    pub fn item(
        &self,
        item: &Item,
        accepted_at: Millis,
        trail: &[crate::core::engine::why::TrailEntry],
    ) {
        let at = item.timestamp.unwrap_or(accepted_at);
        let mut seen = Seen {
            webhook: accepted_at,
            ..Seen::default()
        };
        match &item.kind {
            ItemKind::Echo { echo, .. } => {
                seen.app = at;
                if let crate::core::engine::input::Echo::Send(content) = echo {
                    for t in trail {
                        match (t.kind.as_str(), t.outcome.as_str()) {
                            ("reset_command", _) => seen.reset = at,
                            ("app_message", o) if o.starts_with("paused until") => {
                                seen.handover = at
                            }
                            _ => {}
                        }
                        if t.why.contains("is not the reset command") {
                            seen.near_miss = Some((at, content.text.trim().to_owned()));
                        }
                    }
                }
            }
            ItemKind::Customer { .. } => seen.customer = at,
            _ => {}
        }
        self.note(&item.scope.phone_number_id, &seen);
    }

    /// Writes what was noted; what cannot be written now is kept for the next time.
    pub async fn flush(&self, store: &RedisStore) {
        let taken = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for (pnid, seen) in taken {
            if let Err(e) = store.number_seen(&pnid, &seen).await {
                tracing::debug!(error = %e, "writing a number's activity failed; kept for the next time");
                self.note(&pnid, &seen);
            }
        }
    }

    /// Writes every [`FLUSH`] until `stop`, then once more.
    pub async fn run(&self, store: RedisStore, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(FLUSH) => self.flush(&store).await,
                () = stop.cancelled() => break,
            }
        }
        self.flush(&store).await;
    }
}

/// What an `account_update` does to the registered numbers of its WABA: each number it moves to
/// another state, as `number.state_changed` on both exchanges. Once per item: the same item
/// again (a redelivery) yields the same events and changes nothing more. A WABA with no number
/// registered under it changes nothing (and is counted).
pub async fn transitions(
    store: &RedisStore,
    book: &Book,
    item: &Item,
) -> crate::core::store::Result<Vec<Outbound>> {
    let ItemKind::AccountUpdate {
        event: Some(event),
        reason,
        initiated_by,
        waba_id,
        phone_number,
    } = &item.kind
    else {
        return Ok(Vec::new());
    };
    let Some(to) = LifeState::after(event) else {
        return Ok(Vec::new());
    };
    let pnid = &item.scope.phone_number_id;
    let mut numbers: Vec<&String> = match book.states.get_key_value(pnid) {
        Some((id, _)) => vec![id],
        None => waba_id
            .as_ref()
            .and_then(|w| book.by_waba.get(w))
            .map(|ids| ids.iter().collect())
            .unwrap_or_default(),
    };
    if let Some(phone) = phone_number {
        let named: Vec<&String> = numbers
            .iter()
            .copied()
            .filter(|id| book.displays.get(*id).is_some_and(|d| d == phone))
            .collect();
        if !named.is_empty() {
            numbers = named;
        }
    }
    if numbers.is_empty() {
        ::metrics::counter!(metrics::ACCOUNT_UPDATES_UNMATCHED).increment(1);
        return Ok(Vec::new());
    }
    let at = item.timestamp.unwrap_or_else(Millis::now);
    let why = match reason {
        Some(r) => format!("{event}: {r}"),
        None => event.clone(),
    };
    let mut events = Vec::new();
    for id in numbers {
        let made = store
            .number_transition(id, to, &item.key, Some(&why), initiated_by.as_deref(), at)
            .await?;
        let Some((from, to)) = made else { continue };
        tracing::info!(number = %id, from = from.as_str(), to = to.as_str(), reason = %why, "a number changed state");
        events.extend(crate::core::numbers::state_changed(
            id,
            from,
            to,
            Some(why.clone()),
            By::system(),
            &item.key,
            at,
        ));
    }
    Ok(events)
}
