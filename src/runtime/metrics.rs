//! Every metric's name (in one place), and the Prometheus exporter behind `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::core::engine::event::{Outbound, Payload};

/// Webhooks by `result` and `reason`: `accepted` (`ok`, `parked`); `rejected` (`signature`,
/// `too_large`, `unreadable_body`, `buffer_full`, `body_timeout`, `shed`, `broker_unavailable`);
/// `cut`, connections closed by the ingress (`header_timeout`, `idle_timeout`,
/// `max_connections`).
pub const WEBHOOKS: &str = "coexist_webhooks_total";
/// Open HTTP connections, by `server` (the counter its cuts go to).
pub const CONNECTIONS: &str = "coexist_http_connections";
/// Connections the worker's admin address closed, by `reason` (as `cut` in [`WEBHOOKS`]).
pub const ADMIN_CUTS: &str = "coexist_admin_connections_cut_total";
/// What webhooks held that coexist does not act on, by `kind` (`unhandled`) and `field`.
pub const WEBHOOK_ITEMS: &str = "coexist_webhook_items_total";
/// Items decided, by `rule` (R1..R12, operator_*, noop, ignored) and `delivery`
/// (`fresh`, `redelivered`, `duplicate`).
pub const ITEMS: &str = "coexist_items_total";
/// Events published and confirmed, by `exchange` and `type`.
pub const EVENTS: &str = "coexist_events_total";
/// Handovers to a human.
pub const HANDOVERS: &str = "coexist_handovers_total";
/// Releases back to the AI agent, by `reason`.
pub const RELEASES: &str = "coexist_releases_total";
/// Dead letters written, by `stage` (`ingress`, `worker`).
pub const DEAD_LETTERS: &str = "coexist_dead_letters_total";
/// Seconds from the ingress accepting a webhook to the broker confirming its events.
pub const LATENCY: &str = "coexist_accept_to_confirm_seconds";
/// Messages published together in one gathering (`publish_gather`), per gathering.
pub const PUBLISH_GATHERED: &str = "coexist_publish_gathered_messages";
/// Times the broker began blocking a connection's publishers (a memory or disk alarm).
pub const BROKER_BLOCKED: &str = "coexist_broker_blocked_total";
/// Commits that fewer Redis replicas than `COEXIST_REDIS_REPLICAS` acknowledged within 1 s.
pub const REPLICA_SHORTFALLS: &str = "coexist_redis_replica_shortfalls_total";
/// Commits that did not wait for replicas because they fall short (see `RedisStore`).
pub const REPLICA_WAITS_SKIPPED: &str = "coexist_redis_replica_waits_skipped_total";
/// 1 while fewer Redis replicas than `COEXIST_REDIS_REPLICAS` acknowledge commits, else 0.
pub const REPLICAS_SHORT: &str = "coexist_redis_replicas_short";
/// Items waiting for a Redis fault to pass, by `reason` (`oom`, `readonly`, `loading`, ...).
pub const REDIS_WAITS: &str = "coexist_redis_waits_total";
/// Partitions this worker owns now.
pub const PARTITIONS_OWNED: &str = "coexist_partitions_owned";
/// Partitions this worker owns whose consumer is registered now.
pub const PARTITIONS_CONSUMING: &str = "coexist_partitions_consuming";
/// The number of partitions in force (the layout recorded in Redis; during a change, the new).
pub const PARTITIONS: &str = "coexist_partitions";
/// The epoch of the partition layout in force (each change of count starts the next).
pub const PARTITION_EPOCH: &str = "coexist_partition_epoch";
/// 1 while a change of the partition count is in progress, else 0.
pub const PARTITION_CHANGE: &str = "coexist_partition_change_in_progress";
/// During a change, the old partitions drained and sealed so far.
pub const PARTITION_CHANGE_DRAINED: &str = "coexist_partition_change_old_drained";
/// Messages waiting in an inbound partition this worker owns, by `partition` (read every 5 s).
pub const INBOUND_BACKLOG: &str = "coexist_inbound_backlog";
/// Conversations whose AI agent is paused now (counted by every worker every 5 s).
pub const PAUSED: &str = "coexist_paused_conversations";
/// How far Redis's clock is from the worker host's, in seconds (Redis minus the host): the
/// worker decides by Redis's (docs/contract.md, "One clock").
pub const CLOCK_OFFSET: &str = "coexist_clock_offset_seconds";
/// Messages waiting in the dead-letter queue `{ns}.dead` (read by every worker every 5 s).
pub const DEAD_LETTERS_WAITING: &str = "coexist_dead_letters_waiting";
/// Replies through the reply gate, by `result` (`forwarded`: Meta answered, whatever its status;
/// `refused`; `failed`: Meta unreachable or silent, a bad request, state unreadable) and `reason`.
pub const REPLIES: &str = "coexist_replies_total";
/// Seconds the reply gate adds to a reply (its whole handling minus the wait for Meta).
pub const GATE_SECONDS: &str = "coexist_gate_seconds";
/// Connections the console closed, by `reason` (as `cut` in [`WEBHOOKS`]).
pub const CONSOLE_CUTS: &str = "coexist_console_connections_cut_total";
/// Connections the reply gate closed, by `reason` (as `cut` in [`WEBHOOKS`]).
pub const GATE_CUTS: &str = "coexist_gate_connections_cut_total";
/// Numbers in the registry, by `state` (read by every worker and gate every 30 s).
pub const NUMBERS: &str = "coexist_numbers";
/// Numbers whose Business App sent nothing for `app_idle_warning` while webhooks arrive.
pub const NUMBERS_APP_IDLE: &str = "coexist_numbers_app_idle";
/// Numbers whose customers write but from whose Business App no message ever arrived (echoes
/// missing: `smb_message_echoes` not subscribed, or nobody answers from the phone).
pub const NUMBERS_ECHOES_MISSING: &str = "coexist_numbers_echoes_missing";
/// `account_update` events of a WABA under which no number is registered (nothing changed).
pub const ACCOUNT_UPDATES_UNMATCHED: &str = "coexist_account_updates_unmatched_total";

/// Every metric name coexist exports (histograms add `_bucket`, `_sum`, `_count`); a test holds
/// the alerts and the dashboard to these.
pub const NAMES: &[&str] = &[
    WEBHOOKS,
    CONNECTIONS,
    ADMIN_CUTS,
    WEBHOOK_ITEMS,
    ITEMS,
    EVENTS,
    HANDOVERS,
    RELEASES,
    DEAD_LETTERS,
    LATENCY,
    PUBLISH_GATHERED,
    BROKER_BLOCKED,
    REPLICA_SHORTFALLS,
    REPLICA_WAITS_SKIPPED,
    REPLICAS_SHORT,
    REDIS_WAITS,
    PARTITIONS_OWNED,
    PARTITIONS_CONSUMING,
    PARTITIONS,
    PARTITION_EPOCH,
    PARTITION_CHANGE,
    PARTITION_CHANGE_DRAINED,
    INBOUND_BACKLOG,
    DEAD_LETTERS_WAITING,
    PAUSED,
    CLOCK_OFFSET,
    REPLIES,
    GATE_SECONDS,
    CONSOLE_CUTS,
    GATE_CUTS,
    NUMBERS,
    NUMBERS_APP_IDLE,
    NUMBERS_ECHOES_MISSING,
    ACCOUNT_UPDATES_UNMATCHED,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the recorder (once per process) and returns the handle that renders it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let fine = [
                0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LATENCY.into()), &buckets)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(GATE_SECONDS.into()), &fine))
                .and_then(|b| {
                    let counts = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
                    b.set_buckets_for_metric(Matcher::Full(PUBLISH_GATHERED.into()), &counts)
                })
                .expect("buckets are valid");
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (a test harness): render from a private one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            // Histogram samples pile up in the recorder until upkeep drains them into buckets;
            // without a scrape they would grow by every sample (the soak benchmark caught it:
            // +1.2 MiB a minute per worker at 1,000 items/s).
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                })
                .expect("a thread for metrics upkeep");
            handle
        })
        .clone()
}

/// The text exposition.
pub fn render() -> String {
    let h = handle();
    h.run_upkeep();
    h.render()
}

/// Counts an applied input and its events.
pub fn applied(applied: &crate::core::apply::Applied) {
    let delivery = match applied.delivery {
        crate::core::apply::Delivery::Fresh => "fresh",
        crate::core::apply::Delivery::Redelivered => "redelivered",
        crate::core::apply::Delivery::Duplicate => "duplicate",
    };
    let rule = applied.rule.map_or("seen", |r| r.as_str());
    metrics::counter!(ITEMS, "rule" => rule, "delivery" => delivery).increment(1);
}

/// Counts confirmed events.
pub fn published<'a>(events: impl IntoIterator<Item = &'a Outbound>) {
    for e in events {
        metrics::counter!(EVENTS, "exchange" => e.exchange.as_str(), "type" => e.event.name())
            .increment(1);
        match &e.event.payload {
            Payload::Handover(_) => metrics::counter!(HANDOVERS).increment(1),
            Payload::Released(r) => {
                metrics::counter!(RELEASES, "reason" => r.reason.as_str()).increment(1)
            }
            _ => {}
        }
    }
}
