//! `coexist dlq list` and `coexist dlq replay`: the dead-letter queue `{ns}.dead`.
//!
//! Looking never hands a letter back to the queue: a letter handed back counts as a delivery, and
//! RabbitMQ 4 drops a quorum queue's message after 20 of them by default, so a dead-letter queue
//! viewed often would empty itself. Instead a look takes a page of letters from the head, puts
//! an exact copy of each at the tail (confirmed) and only then acknowledges the original: the
//! page's letters move to the back, unchanged (id, headers, age), and the next look shows the
//! next page. Finding one letter by id (to replay or discard it) moves the ones before it the
//! same way. Replaying takes at most the dead letters present when it starts (or `--limit`),
//! sends each back to its business number's partition, and removes it only once the broker has
//! confirmed the new copy. A replayed item is decided against the state at that time.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::AMQPValue;
use serde::Serialize;

use crate::adapters::broker::message::{header, text};
use crate::adapters::broker::{
    self, Outgoing, Publisher, Stage, Topology, ATTEMPTS_HEADER, COMMAND_TYPE, ITEM_TYPE,
    REASON_HEADER, STAGE_HEADER, UNIT_TYPE, WEBHOOK_TYPE,
};
use crate::core::meta::parse_body;
use crate::core::time::Millis;
use crate::core::unit::{self, Command, Unit};

/// One dead letter as `dlq list` shows it.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub id: Option<String>,
    /// `coexist.unit` (work for a partition), `meta.webhook` (a body the ingress parked) or
    /// `meta.item` (one item the ingress parked: it names no conversation).
    pub kind: Option<String>,
    pub reason: String,
    /// Where it failed: `ingress`, `worker`, `replay`, or `broker` (the delivery limit).
    pub stage: Stage,
    pub attempts: i64,
    pub age_secs: Option<i64>,
    pub bytes: usize,
    /// The business number it is about, where its body names one (a unit's or command's
    /// number; a parked webhook's first `metadata.phone_number_id`).
    pub number: Option<String>,
    /// The start of its body, safe to show: whitespace collapsed, long digit runs (phone
    /// numbers) cut to their last four.
    pub preview: String,
}

/// How long a preview is, in characters.
const PREVIEW: usize = 160;

fn int(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::LongLongInt(i) => Some(*i),
        AMQPValue::LongInt(i) => Some(*i as i64),
        AMQPValue::LongUInt(i) => Some(*i as i64),
        AMQPValue::ShortInt(i) => Some(*i as i64),
        AMQPValue::ShortUInt(i) => Some(*i as i64),
        AMQPValue::ShortShortInt(i) => Some(*i as i64),
        AMQPValue::ShortShortUInt(i) => Some(*i as i64),
        AMQPValue::Timestamp(i) => Some(*i as i64),
        _ => None,
    }
}

/// Describes one dead letter from its properties.
pub fn describe(d: &Delivery, now: Millis) -> Entry {
    let p = &d.properties;
    let h = p.headers();
    // Written by coexist, or by the broker when the delivery limit was reached (`x-death`).
    let death = header(h, "x-death").and_then(|v| match v {
        AMQPValue::FieldArray(a) => a.as_slice().first().and_then(|f| match f {
            AMQPValue::FieldTable(t) => Some(t.clone()),
            _ => None,
        }),
        _ => None,
    });
    let death = Some(death.unwrap_or_default());
    let reason = header(h, REASON_HEADER)
        .and_then(text)
        .or_else(|| {
            header(&death, "reason")
                .and_then(text)
                .map(|r| format!("broker: {r}"))
        })
        .unwrap_or_else(|| "unknown".into());
    let stage = header(h, STAGE_HEADER)
        .and_then(text)
        .and_then(|s| Stage::parse(&s))
        .unwrap_or(Stage::Broker);
    let attempts = header(h, ATTEMPTS_HEADER)
        .and_then(int)
        .or_else(|| header(h, "x-delivery-count").and_then(int))
        .or_else(|| header(&death, "count").and_then(int))
        .unwrap_or(0);
    Entry {
        id: p.message_id().as_ref().map(|s| s.as_str().to_owned()),
        kind: p.kind().as_ref().map(|s| s.as_str().to_owned()),
        reason,
        stage,
        attempts,
        age_secs: p.timestamp().map(|t| now.0 / 1000 - t as i64),
        bytes: d.data.len(),
        number: number_of(&d.data),
        preview: preview(&d.data),
    }
}

/// The business number a dead letter's body names: a unit's or command's `scope`, else the first
/// `metadata.phone_number_id` of a webhook body.
fn number_of(data: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let id = v["scope"]["phone_number_id"].as_str().or_else(|| {
        v["entry"].as_array()?.iter().find_map(|e| {
            e["changes"]
                .as_array()?
                .iter()
                .find_map(|c| c["value"]["metadata"]["phone_number_id"].as_str())
        })
    });
    id.filter(|i| crate::core::domain::valid_phone_number_id(i))
        .map(str::to_owned)
}

fn preview(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(&data[..data.len().min(PREVIEW * 4)]);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = flat.chars().take(PREVIEW).collect();
    let more = if flat.chars().count() > PREVIEW {
        "…"
    } else {
        ""
    };
    format!("{}{more}", crate::core::domain::redact_digits(&cut))
}

/// What to do with one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it back to its partition (decided again against the state at that time).
    Replay,
    /// Remove it for good.
    Discard,
}

/// Replays or discards the first dead letter whose id is `id` and whose number `may` admits;
/// `false` when there is none. The ones looked at on the way move to the back of the queue,
/// unchanged.
pub async fn act_on_one(
    url: &str,
    topology: &Topology,
    id: &str,
    action: Action,
    may: impl Fn(Option<&str>) -> bool,
) -> broker::Result<bool> {
    let conn = broker::connect(url, "coexist-dlq-one").await?;
    topology.declare(&conn).await?;
    let ch = conn.create_channel().await?;
    let publisher = Publisher::open(&conn).await?;
    let mut found = false;
    // At most the letters present at the start: each is looked at once.
    let mut left: Option<u32> = None;
    while left != Some(0) {
        let Some(m) = ch
            .basic_get(topology.dead().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        left = Some(left.unwrap_or(m.message_count + 1) - 1);
        let d = &m.delivery;
        let named = d.properties.message_id().as_ref().map(|s| s.as_str()) == Some(id);
        if !named || !may(number_of(&d.data).as_deref()) {
            to_the_back(topology, &publisher, d).await?;
            continue;
        }
        if action == Action::Replay {
            let (messages, _) = back_to_partitions(topology, d);
            publisher.publish_all(&messages).await?;
        }
        d.ack(BasicAckOptions::default()).await?;
        found = true;
        break;
    }
    let _ = ch.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    Ok(found)
}

/// Moves a dead letter taken from the head to the tail: an exact copy published (confirmed)
/// before the original is acknowledged, so it is never handed back (no delivery counted) and
/// never lost (a failure in between leaves a second copy, which a replay decides once).
async fn to_the_back(
    topology: &Topology,
    publisher: &Publisher,
    d: &Delivery,
) -> broker::Result<()> {
    let copy = Outgoing {
        exchange: topology.dead().to_owned(),
        routing_key: String::new(),
        body: d.data.clone(),
        properties: d.properties.clone(),
    };
    publisher.publish_all(std::slice::from_ref(&copy)).await?;
    d.ack(BasicAckOptions::default()).await?;
    Ok(())
}

/// The table `dlq list` prints: a header line, then one line per dead letter.
pub fn table(entries: &[Entry]) -> String {
    let mut out = format!(
        "{:<38} {:<13} {:<8} {:>8} {:>8}  reason\n",
        "id", "kind", "stage", "attempts", "age"
    );
    for e in entries {
        let age = e
            .age_secs
            .map(|s| humantime::format_duration(Duration::from_secs(s.max(0) as u64)).to_string())
            .unwrap_or_else(|| "-".into());
        let shown = |s: &str| crate::tools::printable::escape(s).into_owned();
        out.push_str(&format!(
            "{:<38} {:<13} {:<8} {:>8} {:>8}  {}\n",
            shown(e.id.as_deref().unwrap_or("-")),
            shown(e.kind.as_deref().unwrap_or("-")),
            e.stage.as_str(),
            e.attempts,
            age,
            shown(&e.reason)
        ));
    }
    out
}

/// A page of dead letters: the oldest ones first.
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// How many dead letters the queue holds in all.
    pub total: usize,
}

/// The `limit` dead letters at the head of the queue (the next page), which then move to its
/// back, unchanged: a look never hands a letter back to the queue (see the module's note).
pub async fn list(url: &str, topology: &Topology, limit: usize) -> broker::Result<Page> {
    let conn = broker::connect(url, "coexist-dlq-list").await?;
    topology.declare(&conn).await?;
    let ch = conn.create_channel().await?;
    let publisher = Publisher::open(&conn).await?;
    let now = Millis::now();
    let mut entries = Vec::new();
    let mut total = None;
    while entries.len() < limit.min(total.unwrap_or(usize::MAX)) {
        let Some(m) = ch
            .basic_get(topology.dead().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        total.get_or_insert(m.message_count as usize + 1);
        entries.push(describe(&m.delivery, now));
        to_the_back(topology, &publisher, &m.delivery).await?;
    }
    let _ = ch.close(200, "listed".into()).await;
    let _ = conn.close(200, "done".into()).await;
    Ok(Page {
        entries,
        total: total.unwrap_or(0),
    })
}

/// What a replay did.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Replayed {
    /// Dead letters sent back to the partitions.
    pub replayed: usize,
    /// Units published for them.
    pub units: usize,
    /// Dead letters that still cannot be read (put back at the end of the dead-letter queue).
    pub parked_again: usize,
}

/// Sends up to `limit` dead letters (at most those present at the start) back through the
/// pipeline; `progress` hears the counts after each one, with how many there are in all.
pub async fn replay(
    url: &str,
    topology: &Topology,
    limit: Option<usize>,
    mut progress: impl FnMut(&Replayed, usize),
) -> broker::Result<Replayed> {
    let conn = broker::connect(url, "coexist-dlq-replay").await?;
    topology.declare(&conn).await?;
    let ch = conn.create_channel().await?;
    let publisher = Publisher::open(&conn).await?;
    let mut done = Replayed::default();
    let mut budget: Option<usize> = limit;
    loop {
        if budget == Some(0) {
            break;
        }
        let Some(m) = ch
            .basic_get(topology.dead().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        if budget.is_none() {
            // The dead letters present now, and no more: re-parked ones are not taken twice.
            budget = Some(m.message_count as usize + 1);
        }
        let total = done.replayed + budget.unwrap_or(0);
        budget = budget.map(|b| b - 1);
        let d = &m.delivery;
        let (messages, parked) = back_to_partitions(topology, d);
        publisher.publish_all(&messages).await?;
        d.ack(BasicAckOptions::default()).await?;
        done.replayed += 1;
        done.units += messages.len() - parked;
        done.parked_again += parked;
        progress(&done, total);
    }
    let _ = ch.close(200, "replayed".into()).await;
    let _ = conn.close(200, "done".into()).await;
    Ok(done)
}

/// The messages that put a dead letter back into the pipeline, and how many of them are dead
/// letters again (it still cannot be read).
fn back_to_partitions(topology: &Topology, d: &Delivery) -> (Vec<Outgoing>, usize) {
    let now = Millis::now();
    let kind = d.properties.kind().as_ref().map(|s| s.as_str().to_owned());
    let units: Result<Vec<Outgoing>, String> = match kind.as_deref() {
        Some(UNIT_TYPE) => serde_json::from_slice::<Unit>(&d.data)
            .map(|u| vec![Outgoing::unit(topology, &u, now)])
            .map_err(|e| format!("unreadable unit: {e}")),
        // A command goes back to its conversation's lane (its sender stopped waiting long ago).
        Some(COMMAND_TYPE) => serde_json::from_slice::<Command>(&d.data)
            .map(|c| vec![Outgoing::command(topology, &c, None)])
            .map_err(|e| format!("unreadable command: {e}")),
        // An item that names no conversation still names none: it keeps its reason.
        Some(ITEM_TYPE) => Err(header(d.properties.headers(), REASON_HEADER)
            .and_then(text)
            .unwrap_or_else(|| "an item that names no conversation".into())),
        _ => match parse_body(&d.data) {
            Ok(parsed) if parsed.items.is_empty() && !parsed.unreadable.is_empty() => {
                Err("nothing in it can be placed".into())
            }
            Ok(parsed) => Ok(unit::split(parsed.items, now)
                .iter()
                .map(|u| Outgoing::unit(topology, u, now))
                .collect()),
            Err(e) => Err(e.to_string()),
        },
    };
    match units {
        Ok(messages) => (messages, 0),
        Err(reason) => {
            let id = d
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned());
            let kind = kind.unwrap_or_else(|| WEBHOOK_TYPE.into());
            (
                vec![Outgoing::dead_letter(
                    topology,
                    d.data.clone(),
                    &kind,
                    id.as_deref(),
                    &reason,
                    Stage::Replay,
                    0,
                )],
                1,
            )
        }
    }
}
