//! The number registry in Redis (docs/contract.md, "Numbers"). Each number's keys carry its
//! hash tag, like its conversations':
//!
//! | key | holds |
//! |---|---|
//! | `{ns}:{pnid}:number` | the record: `waba_id`, `display_phone_number`, `name`, `state` (absent: `unregistered`), `state_reason`, `initiated_by`, `state_since`, `state_from` and `state_item` (the change an `account_update` made, so a redelivery publishes it again and changes nothing), `first_seen_at`, `last_webhook_at`, `last_app_message_at`, `last_customer_at`, `last_handover_at`, `last_reset_at`, `last_near_miss_at` (Unix ms) and `near_miss_text` (for `number check`) |
//! | `{ns}:{pnid}:number:settings` | the runtime settings: one field per key, its value as JSON |
//! | `{ns}:{pnid}:number:changes` | the latest 20 settings changes, newest first (JSON) |
//! | `{ns}:{pnid}:number:onboarding` | the onboarding record: `started_at`, `checked_at`, `platform_type`, `verified_name`, `subscribed_at` (Unix ms or text); per sync (`contacts_`, `history_`): `requested_at` (written before the request is made: with no `result` beside it, the answer is unknown), `result`, `request_id`, `error`; the history's progress `history_phase`, `history_progress`, `history_declined` |
//! | `{ns}:{pnid}:number:history_chunks` | the history chunks seen, `phase:chunk_order` (counted once each) |
//! | `{ns}:numbers` | the set of every number's id |
//! | `{ns}:numbers:version` | bumped by every change of settings, state or record: processes reload the registry when it moves |
//!
//! No key expires: a number is forgotten by `number remove` only.

use redis::{AsyncCommands, Script};

use super::RedisStore;
use crate::core::numbers::{Change, LifeState, Record};
use crate::core::onboarding::{HistoryProgress, Onboarding, SyncKind, SyncRecord, SyncResult};
use crate::core::store::Result;
use crate::core::time::Millis;

/// A hash as read.
type Fields = std::collections::HashMap<String, String>;

/// How many settings changes a number keeps.
pub const CHANGES_KEPT: isize = 20;

/// Raises the activity times of a number (never lowers them), sets `first_seen_at` once.
/// `KEYS[1]` the record; ARGV: first seen, then the times of the fields the script lists (0: none), then
/// the near miss's text (with `last_near_miss_at`).
const SEEN: &str = r#"
redis.call('HSETNX', KEYS[1], 'first_seen_at', ARGV[1])
local fields = {'last_webhook_at', 'last_app_message_at', 'last_customer_at', 'last_handover_at', 'last_reset_at', 'last_near_miss_at'}
for i, field in ipairs(fields) do
  local at = tonumber(ARGV[i + 1])
  if at > 0 then
    local was = tonumber(redis.call('HGET', KEYS[1], field) or '0')
    if at > was then
      redis.call('HSET', KEYS[1], field, ARGV[i + 1])
      if field == 'last_near_miss_at' then redis.call('HSET', KEYS[1], 'near_miss_text', ARGV[#fields + 2]) end
    end
  end
end
return 1
"#;

/// Moves a number to a state for one `account_update` (its key `ARGV[2]`), once: the same item
/// again answers the change it made; a number already in the state is not changed. `KEYS[1]` the
/// record; ARGV: state, item, reason, initiated_by, since. Answers `{from, to}` or nil.
const TRANSITION: &str = r#"
local item = redis.call('HGET', KEYS[1], 'state_item')
if item == ARGV[2] then
  return {redis.call('HGET', KEYS[1], 'state_from'), redis.call('HGET', KEYS[1], 'state')}
end
local now = redis.call('HGET', KEYS[1], 'state') or 'unregistered'
if now == ARGV[1] then return false end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'state_from', now, 'state_item', ARGV[2],
  'state_reason', ARGV[3], 'initiated_by', ARGV[4], 'state_since', ARGV[5])
return {now, ARGV[1]}
"#;

/// What `number add` records.
#[derive(Debug, Clone, Default)]
pub struct Added {
    pub waba_id: Option<String>,
    pub name: Option<String>,
    pub display_phone_number: Option<String>,
}

impl RedisStore {
    fn number_key(&self, pnid: &str) -> String {
        format!("{}:{{{pnid}}}:number", self.ns)
    }

    fn numbers_key(&self) -> String {
        format!("{}:numbers", self.ns)
    }

    fn numbers_version_key(&self) -> String {
        format!("{}:numbers:version", self.ns)
    }

    /// The registry's version: it moves with every change processes must see.
    pub async fn numbers_version(&self) -> Result<u64> {
        let v: Option<u64> = self.conn.clone().get(self.numbers_version_key()).await?;
        Ok(v.unwrap_or(0))
    }

    async fn bump(&self) -> Result<u64> {
        Ok(self
            .conn
            .clone()
            .incr(self.numbers_version_key(), 1)
            .await?)
    }

    /// The labels (`name`) of these numbers, in one round trip (`None`: none).
    pub async fn number_names(&self, pnids: &[&str]) -> Result<Vec<Option<String>>> {
        if pnids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in pnids {
            pipe.hget(self.number_key(id), "name");
        }
        Ok(pipe.query_async(&mut self.conn.clone()).await?)
    }

    /// Every number's id, sorted.
    pub async fn number_ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self.conn.clone().smembers(self.numbers_key()).await?;
        ids.sort();
        Ok(ids)
    }

    /// One number's record (`None`: not in the registry).
    pub async fn number(&self, pnid: &str) -> Result<Option<Record>> {
        self.record(pnid, true).await
    }

    /// A number's record; without `full`, only its hash and settings (what decisions and the
    /// metrics read): no changes, no onboarding.
    async fn record(&self, pnid: &str, full: bool) -> Result<Option<Record>> {
        let key = self.number_key(pnid);
        let (fields, settings, changes, onboarding, chunks): (
            Fields,
            Fields,
            Vec<String>,
            Fields,
            u64,
        ) = match full {
            true => {
                redis::pipe()
                    .hgetall(&key)
                    .hgetall(format!("{key}:settings"))
                    .lrange(format!("{key}:changes"), 0, CHANGES_KEPT - 1)
                    .hgetall(format!("{key}:onboarding"))
                    .scard(format!("{key}:history_chunks"))
                    .query_async(&mut self.conn.clone())
                    .await?
            }
            false => {
                let (fields, settings): (Fields, Fields) = redis::pipe()
                    .hgetall(&key)
                    .hgetall(format!("{key}:settings"))
                    .query_async(&mut self.conn.clone())
                    .await?;
                (fields, settings, Vec::new(), Fields::default(), 0)
            }
        };
        if fields.is_empty() && settings.is_empty() {
            return Ok(None);
        }
        let text = |k: &str| fields.get(k).filter(|v| !v.is_empty()).cloned();
        let at = |k: &str| {
            text(k)
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|ms| *ms > 0)
                .map(|ms| Millis(ms).rfc3339())
        };
        let mut keys: Vec<(&String, &String)> = settings.iter().collect();
        keys.sort();
        Ok(Some(Record {
            phone_number_id: pnid.to_owned(),
            waba_id: text("waba_id"),
            display_phone_number: text("display_phone_number"),
            name: text("name"),
            state: text("state")
                .and_then(|s| LifeState::parse(&s))
                .unwrap_or_default(),
            state_reason: text("state_reason"),
            initiated_by: text("initiated_by"),
            state_since: at("state_since"),
            settings: keys
                .into_iter()
                .map(|(k, v)| {
                    let value = serde_json::from_str(v).unwrap_or(serde_json::Value::Null);
                    (k.clone(), value)
                })
                .collect(),
            first_seen_at: at("first_seen_at"),
            last_webhook_at: at("last_webhook_at"),
            last_app_message_at: at("last_app_message_at"),
            last_customer_at: at("last_customer_at"),
            last_handover_at: at("last_handover_at"),
            last_reset_at: at("last_reset_at"),
            last_near_miss_at: at("last_near_miss_at"),
            near_miss_text: text("near_miss_text"),
            changes: changes
                .iter()
                .filter_map(|c| serde_json::from_str(c).ok())
                .collect(),
            onboarding: (!onboarding.is_empty()).then(|| read_onboarding(&onboarding, chunks)),
        }))
    }

    /// Every number's record, sorted by id (a few at a time: each number is one round trip, so
    /// a registry of thousands loads in well under a second).
    pub async fn number_records(&self) -> Result<Vec<Record>> {
        self.records(true).await
    }

    /// Every number's record without its changes and onboarding ([`RedisStore::record`]): what
    /// every worker and gate reloads, so that 10,000 numbers cost them neither the changes'
    /// JSON nor the round trips for them.
    pub async fn number_records_light(&self) -> Result<Vec<Record>> {
        self.records(false).await
    }

    async fn records(&self, full: bool) -> Result<Vec<Record>> {
        use futures_util::StreamExt;
        let ids = self.number_ids().await?;
        let loaded: Vec<Result<Option<Record>>> = futures_util::stream::iter(ids)
            .map(|id| async move { self.record(&id, full).await })
            .buffered(32)
            .collect()
            .await;
        let mut records = Vec::with_capacity(loaded.len());
        for r in loaded {
            records.extend(r?);
        }
        Ok(records)
    }

    /// Adds a number (or names it again): `active` unless it already has a state of its own.
    pub async fn add_number(&self, pnid: &str, added: &Added, now: Millis) -> Result<()> {
        let key = self.number_key(pnid);
        let mut pipe = redis::pipe();
        pipe.hset_nx(&key, "first_seen_at", now.0).ignore();
        for (field, value) in [
            ("waba_id", &added.waba_id),
            ("name", &added.name),
            ("display_phone_number", &added.display_phone_number),
        ] {
            if let Some(v) = value {
                pipe.hset(&key, field, v).ignore();
            }
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        let state: Option<String> = self.conn.clone().hget(&key, "state").await?;
        if state.is_none_or(|s| s == LifeState::Unregistered.as_str()) {
            let _: () = self
                .conn
                .clone()
                .hset_multiple(
                    &key,
                    &[
                        ("state", LifeState::Active.as_str().to_owned()),
                        ("state_since", now.0.to_string()),
                        ("state_reason", "added".to_owned()),
                    ],
                )
                .await?;
        }
        let _: () = self.conn.clone().sadd(self.numbers_key(), pnid).await?;
        self.bump().await?;
        Ok(())
    }

    /// Writes a settings change (set keys with their written values; `null` unsets) and keeps
    /// it in the number's changes; answers the registry's new version.
    pub async fn change_number_settings(&self, pnid: &str, change: &Change) -> Result<u64> {
        let key = self.number_key(pnid);
        let settings = format!("{key}:settings");
        let mut pipe = redis::pipe();
        for (k, v) in &change.changed {
            match v.is_null() {
                true => pipe.hdel(&settings, k).ignore(),
                false => pipe.hset(&settings, k, v.to_string()).ignore(),
            };
        }
        pipe.hset_nx(&key, "first_seen_at", Millis::now().0)
            .ignore()
            .lpush(
                format!("{key}:changes"),
                serde_json::to_string(change).expect("changes serialise"),
            )
            .ignore()
            .ltrim(format!("{key}:changes"), 0, CHANGES_KEPT - 1)
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        let _: () = self.conn.clone().sadd(self.numbers_key(), pnid).await?;
        self.bump().await
    }

    /// Forgets a number: its record, settings and changes (its conversations stay). Whether it
    /// was there.
    pub async fn remove_number(&self, pnid: &str) -> Result<bool> {
        let key = self.number_key(pnid);
        let removed: i64 = self
            .conn
            .clone()
            .del(&[
                key.clone(),
                format!("{key}:settings"),
                format!("{key}:changes"),
                format!("{key}:onboarding"),
                format!("{key}:history_chunks"),
            ])
            .await?;
        let listed: i64 = self.conn.clone().srem(self.numbers_key(), pnid).await?;
        self.bump().await?;
        Ok(removed + listed > 0)
    }

    /// Records what a number did (first seen at its first webhook if it is new). A number seen
    /// for the first time is listed as `unregistered`; no version moves (nothing a decision
    /// reads changed).
    pub async fn number_seen(&self, pnid: &str, seen: &crate::core::numbers::Seen) -> Result<()> {
        let near = seen.near_miss.clone().unwrap_or_default();
        let _: i64 = Script::new(SEEN)
            .key(self.number_key(pnid))
            .arg(seen.webhook.0)
            .arg(seen.webhook.0)
            .arg(seen.app.0)
            .arg(seen.customer.0)
            .arg(seen.handover.0)
            .arg(seen.reset.0)
            .arg(near.0 .0)
            .arg(near.1)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let _: () = self.conn.clone().sadd(self.numbers_key(), pnid).await?;
        Ok(())
    }

    /// Moves a registered number to `to` for the `account_update` `item` (once per item; the same
    /// item again answers the same change): the change made, `None` when it was in `to` already.
    pub async fn number_transition(
        &self,
        pnid: &str,
        to: LifeState,
        item: &str,
        reason: Option<&str>,
        initiated_by: Option<&str>,
        at: Millis,
    ) -> Result<Option<(LifeState, LifeState)>> {
        let made: Option<(String, String)> = Script::new(TRANSITION)
            .key(self.number_key(pnid))
            .arg(to.as_str())
            .arg(item)
            .arg(reason.unwrap_or(""))
            .arg(initiated_by.unwrap_or(""))
            .arg(at.0)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let Some((from, to)) = made else {
            return Ok(None);
        };
        self.bump().await?;
        let read = |s: &str| LifeState::parse(s).unwrap_or_default();
        Ok(Some((read(&from), read(&to))))
    }
}

/// Records a history chunk's progress, once per chunk: the chunk joins the set, the phase and
/// progress only move forward, a decline stays. `KEYS[1]` the onboarding record, `KEYS[2]` the
/// chunks; ARGV: phase, chunk_order, progress (-1: absent), declined (0/1).
const HISTORY_SEEN: &str = r#"
local phase, chunk, progress = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if phase >= 0 and chunk >= 0 then redis.call('SADD', KEYS[2], ARGV[1] .. ':' .. ARGV[2]) end
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'history_declined', '1') end
if phase >= 0 then
  local was_phase = tonumber(redis.call('HGET', KEYS[1], 'history_phase') or '-1')
  local was_progress = tonumber(redis.call('HGET', KEYS[1], 'history_progress') or '-1')
  if phase > was_phase or (phase == was_phase and progress > was_progress) then
    redis.call('HSET', KEYS[1], 'history_phase', ARGV[1], 'history_progress', ARGV[3])
  end
end
return 1
"#;

/// The onboarding record from its hash (and the count of history chunks).
fn read_onboarding(f: &Fields, chunks: u64) -> Onboarding {
    let text = |k: &str| f.get(k).filter(|v| !v.is_empty()).cloned();
    let at = |k: &str| {
        text(k)
            .and_then(|v| v.parse::<i64>().ok())
            .map(|ms| Millis(ms).rfc3339())
    };
    let number = |k: &str| {
        text(k)
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|n| *n >= 0)
    };
    let sync = |kind: SyncKind| {
        let field = |name: &str| format!("{}_{name}", kind.as_str());
        let requested_at = at(&field("requested_at"));
        let result = match text(&field("result")).as_deref() {
            Some("requested") => SyncResult::Requested,
            Some("refused") => SyncResult::Refused,
            _ if requested_at.is_some() => SyncResult::Unknown,
            _ => SyncResult::NotRequested,
        };
        SyncRecord {
            requested_at,
            request_id: text(&field("request_id")),
            result,
            error: text(&field("error")),
        }
    };
    Onboarding {
        started_at: at("started_at"),
        checked_at: at("checked_at"),
        platform_type: text("platform_type"),
        verified_name: text("verified_name"),
        subscribed_at: at("subscribed_at"),
        contacts: sync(SyncKind::Contacts),
        history: sync(SyncKind::History),
        history_progress: HistoryProgress {
            phase: number("history_phase"),
            progress: number("history_progress"),
            chunks,
            declined: text("history_declined").is_some(),
        },
    }
}

impl RedisStore {
    fn onboarding_key(&self, pnid: &str) -> String {
        format!("{}:onboarding", self.number_key(pnid))
    }

    /// Begins (or resumes) a number's onboarding: the number is in the registry with its WABA,
    /// and the onboarding's start is set once. `again`: the business signed up again, so the
    /// earlier onboarding is forgotten first (a new 24 h window). Answers the record.
    pub async fn onboarding_start(
        &self,
        pnid: &str,
        waba_id: &str,
        again: bool,
        now: Millis,
    ) -> Result<Onboarding> {
        let key = self.number_key(pnid);
        let onboarding = self.onboarding_key(pnid);
        let mut pipe = redis::pipe();
        if again {
            pipe.del(&onboarding)
                .ignore()
                .del(format!("{key}:history_chunks"))
                .ignore();
        }
        pipe.hset_nx(&onboarding, "started_at", now.0)
            .ignore()
            .hset_nx(&key, "first_seen_at", now.0)
            .ignore()
            .hset(&key, "waba_id", waba_id)
            .ignore()
            .sadd(self.numbers_key(), pnid)
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        self.bump().await?;
        Ok(self.onboarding(pnid).await?.unwrap_or_default())
    }

    /// Records the display number Meta gave for a number (digits).
    pub async fn number_display(&self, pnid: &str, digits: &str) -> Result<()> {
        let _: () = self
            .conn
            .clone()
            .hset(self.number_key(pnid), "display_phone_number", digits)
            .await?;
        self.bump().await?;
        Ok(())
    }

    /// A number's onboarding record (`None`: never onboarded).
    pub async fn onboarding(&self, pnid: &str) -> Result<Option<Onboarding>> {
        let (fields, chunks): (Fields, u64) = redis::pipe()
            .hgetall(self.onboarding_key(pnid))
            .scard(format!("{}:history_chunks", self.number_key(pnid)))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok((!fields.is_empty()).then(|| read_onboarding(&fields, chunks)))
    }

    /// Writes fields of the onboarding record (times as Unix ms).
    pub async fn onboarding_note(&self, pnid: &str, fields: &[(&str, String)]) -> Result<()> {
        let _: () = self
            .conn
            .clone()
            .hset_multiple(self.onboarding_key(pnid), fields)
            .await?;
        Ok(())
    }

    /// Records that `kind` is about to be asked of Meta, once: `false` when it was recorded
    /// before (by this run or another), so it must not be asked again.
    pub async fn sync_claim(&self, pnid: &str, kind: SyncKind, now: Millis) -> Result<bool> {
        let field = format!("{}_requested_at", kind.as_str());
        Ok(self
            .conn
            .clone()
            .hset_nx(self.onboarding_key(pnid), field, now.0)
            .await?)
    }

    /// Records Meta's answer to a sync request.
    pub async fn sync_answered(
        &self,
        pnid: &str,
        kind: SyncKind,
        result: SyncResult,
        request_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        let k = kind.as_str();
        let result = match result {
            SyncResult::Requested => "requested",
            SyncResult::Refused => "refused",
            SyncResult::Unknown | SyncResult::NotRequested => return Ok(()),
        };
        let mut fields = vec![(format!("{k}_result"), result.to_owned())];
        if let Some(id) = request_id {
            fields.push((format!("{k}_request_id"), id.to_owned()));
        }
        if let Some(e) = error {
            fields.push((format!("{k}_error"), e.to_owned()));
        }
        let _: () = self
            .conn
            .clone()
            .hset_multiple(self.onboarding_key(pnid), &fields)
            .await?;
        Ok(())
    }

    /// Records one `history` chunk's progress (or its decline) for the number: once per chunk,
    /// moving forward only, so a redelivery changes nothing.
    pub async fn history_seen(
        &self,
        pnid: &str,
        phase: Option<i64>,
        chunk_order: Option<i64>,
        progress: Option<i64>,
        declined: bool,
    ) -> Result<()> {
        let _: i64 = Script::new(HISTORY_SEEN)
            .key(self.onboarding_key(pnid))
            .key(format!("{}:history_chunks", self.number_key(pnid)))
            .arg(phase.unwrap_or(-1))
            .arg(chunk_order.unwrap_or(-1))
            .arg(progress.unwrap_or(-1))
            .arg(u8::from(declined))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}
