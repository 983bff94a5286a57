//! The reply gate's side of a conversation (R17): a reply held while it is checked and sent,
//! and the handover that waits for the replies in flight.

use std::time::Duration;

use redis::AsyncCommands;

use super::{corrupt, RedisStore};
use crate::core::domain::{CustomerKey, Scope};
use crate::core::engine::state::State;
use crate::core::store::{Error, Result};
use crate::core::time::Millis;

/// A reply about to go through the gate (R17): resolves the customer's name, reads the
/// conversation, and, unless a pause is in force, marks one reply in flight, all at once. A
/// worker that commits a pause waits for the replies in flight before it publishes the handover
/// ([`RedisStore::replies_settled`]): a reply checked before the pause reaches Meta before the
/// handover is published, and one checked after is refused.
pub(super) const HOLD_FOR_REPLY: &str = r#"
-- KEYS: the name's link; the conversation's pause, session, state, sending
-- ARGV[1]: the conversation id the caller assumes; ARGV[2]: how long the in-flight mark lives, ms
local link = redis.call('GET', KEYS[1])
if link and link ~= ARGV[1] then return {'moved', link} end
local pause = redis.call('GET', KEYS[2])
local session = redis.call('GET', KEYS[3]) or ''
local state = redis.call('GET', KEYS[4]) or ''
if pause then return {'held', pause, session, state} end
-- One more in flight: never counted from below zero, and the mark always expires.
local n = tonumber(redis.call('GET', KEYS[5]) or '0') or 0
if n < 0 then n = 0 end
redis.call('SET', KEYS[5], n + 1, 'PX', ARGV[2])
return {'free', '', session, state}
"#;

/// A reply in flight is done: one fewer, floored at none (a mark that expired meanwhile stays
/// gone rather than turning into a count below zero without an expiry), its expiry kept.
pub(super) const REPLY_DONE: &str = r#"
-- KEYS: the conversation's sending
local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if n <= 1 then redis.call('DEL', KEYS[1]) return 0 end
return redis.call('DECR', KEYS[1])
"#;

/// How a handover waits for the replies in flight: polls that start at 1 ms and double to at
/// most [`SETTLED_POLL_MAX`], so a reply answered at once costs a few reads and one that takes
/// Meta's full 10 s costs about 200, not thousands.
const SETTLED_POLL_FIRST: Duration = Duration::from_millis(1);
const SETTLED_POLL_MAX: Duration = Duration::from_millis(50);

/// How long a reply's in-flight mark lives at most: longer than the gate waits for Meta, so a
/// gate that dies mid-send holds a handover back this long at worst.
pub const REPLY_IN_FLIGHT: Duration = Duration::from_secs(12);

/// A conversation as the gate found it.
#[derive(Debug)]
pub struct ForReply {
    /// The conversation (its number and id).
    pub scope: Scope,
    /// Its state now (the pause from its key: the truth for routing).
    pub state: State,
    /// Whether a reply was marked in flight (no pause in force): release it with
    /// [`RedisStore::reply_done`] once Meta answered or the reply was refused after all.
    pub in_flight: bool,
}

impl RedisStore {
    /// The conversation a customer's `name` belongs to in a number, read for a reply about to
    /// go through the gate; a reply is marked in flight unless a pause is in force.
    pub async fn hold_for_reply(
        &self,
        phone_number_id: &str,
        name: &CustomerKey,
        now: Millis,
    ) -> Result<ForReply> {
        let link = self.link_key(phone_number_id, name);
        let mut id = name.clone();
        for _ in 0..2 {
            let scope = Scope::conversation(phone_number_id, id.clone());
            let c = self.conversation_keys(&scope);
            let answer: Vec<String> = self
                .hold
                .key(&link)
                .key(&c.pause)
                .key(&c.session)
                .key(&c.state)
                .key(self.key(&scope, "sending"))
                .arg(id.as_str())
                .arg(REPLY_IN_FLIGHT.as_millis() as u64)
                .invoke_async(&mut self.conn.clone())
                .await?;
            let mut answer = answer.into_iter();
            let (what, pause, session, state) = (
                answer.next().unwrap_or_default(),
                answer.next(),
                answer.next(),
                answer.next(),
            );
            if what == "moved" {
                let Some(to) = pause.as_deref().and_then(CustomerKey::parse) else {
                    return Err(corrupt(&self.ns, &scope, "link", "not a customer"));
                };
                id = to;
                continue;
            }
            let some = |v: Option<String>| v.filter(|v| !v.is_empty());
            let values = vec![None, some(pause), some(session), some(state), None, None];
            let snapshot = self.snapshot(&scope, values, now)?;
            return Ok(ForReply {
                scope,
                state: snapshot.state,
                in_flight: what == "free",
            });
        }
        Err(Error::Contention(
            format!("{phone_number_id}: a link that keeps moving"),
            2,
        ))
    }

    /// Whether a conversation has any state (a pause, a session or its stored state): how the
    /// gate tells which of the conversations a send names exists.
    pub async fn has_state(&self, scope: &Scope) -> Result<bool> {
        let c = self.conversation_keys(scope);
        let n: u32 = redis::cmd("EXISTS")
            .arg(&c.pause)
            .arg(&c.session)
            .arg(&c.state)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n > 0)
    }

    /// A reply marked in flight by [`RedisStore::hold_for_reply`] is done (sent, failed or
    /// refused).
    pub async fn reply_done(&self, scope: &Scope) -> Result<()> {
        let _: i64 = self
            .done
            .key(self.key(scope, "sending"))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Waits until no reply of the gate is in flight for the conversation (at most
    /// [`REPLY_IN_FLIGHT`]): called after a pause is committed, before its handover is published.
    /// Returns how many times it read the count.
    pub async fn replies_settled(&self, scope: &Scope) -> Result<u32> {
        let key = self.key(scope, "sending");
        let deadline = tokio::time::Instant::now() + REPLY_IN_FLIGHT;
        let mut pause = SETTLED_POLL_FIRST;
        let mut reads = 0;
        loop {
            let n: Option<i64> = self.conn.clone().get(&key).await?;
            reads += 1;
            if n.unwrap_or(0) <= 0 {
                return Ok(reads);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("a reply stayed in flight past its bound; publishing the handover");
                return Ok(reads);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(SETTLED_POLL_MAX);
        }
    }
}
