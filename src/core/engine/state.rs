//! A conversation's state: the pause, the session, the last reset.

use serde::{Deserialize, Serialize};

use super::event::{By, HandbackMessage, ReleaseReason};
use crate::core::domain::CustomerKey;
use crate::core::time::Millis;

/// Everything the rules read and write for one conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The pause not yet released. It stops routing to the AI agent while `until` is in the
    /// future, and is kept past `until` until a release (timeout, reset or operator) is recorded.
    pub pause: Option<Pause>,
    /// The current session (it ends at `expires` without activity).
    pub session: Option<Session>,
    /// Meta's timestamp of the latest reset (or operator release): older echoes do not pause (R8).
    pub last_reset: Option<Millis>,
    /// R16: the human-handled stretch, kept for the AI agent's first message after it.
    pub handback: Option<Stretch>,
    /// Every name the customer is known by in this conversation (phone numbers and
    /// business-scoped ids), linked by items that carried several or by `system` messages.
    pub names: Vec<CustomerKey>,
    /// How many times the conversation has changed hands (a pause began, a pause ended): the
    /// hand that reply tokens name (R17).
    pub hand: u64,
    /// Meta's time of the customer's latest message: the customer service window runs from it.
    pub last_customer_at: Option<Millis>,
}

/// The messages of a human-handled stretch (R16), oldest first, at most `handback_messages`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stretch {
    pub messages: Vec<HandbackMessage>,
    /// Set when the pause ended: the next message to the AI agent carries the stretch.
    pub ended: Option<Ended>,
}

/// How a human-handled stretch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub reason: ReleaseReason,
    pub paused_at: Millis,
    pub released_at: Millis,
}

/// The AI agent is paused for this conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// The pause ends at this instant unless a later echo extends it.
    pub until: Millis,
    /// When it began.
    pub since: Millis,
    /// The item that began it (an echo's key, or an operator command's); identifies the pause.
    pub trigger: String,
    /// Who began it.
    #[serde(default)]
    pub by: By,
}

/// Who is handling the current session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Handler {
    Bot,
    Human,
}

/// A run of activity in a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub handler: Handler,
    pub started: Millis,
    /// The session ends here without activity.
    pub expires: Millis,
}

impl State {
    /// One conversation's state from two that turned out to be the same customer's: fail-closed
    /// (the later pause wins, and a pause in force is never dropped; the later session and reset;
    /// both handback stretches; every name).
    pub fn merge(self, other: State) -> State {
        let later = |a: Option<Millis>, b: Option<Millis>| a.max(b);
        let pause = match (self.pause, other.pause) {
            (Some(a), Some(b)) => Some(if b.until > a.until { b } else { a }),
            (a, b) => a.or(b),
        };
        let session = match (self.session, other.session) {
            (Some(a), Some(b)) => Some(if b.expires > a.expires { b } else { a }),
            (a, b) => a.or(b),
        };
        let handback = match (self.handback, other.handback) {
            (Some(mut a), Some(b)) => {
                a.messages.extend(b.messages);
                a.messages.sort_by(|x, y| x.at.cmp(&y.at));
                a.ended = later_end(a.ended, b.ended);
                Some(a)
            }
            (a, b) => a.or(b),
        };
        let mut names = self.names;
        for n in other.names {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        State {
            pause,
            session,
            last_reset: later(self.last_reset, other.last_reset),
            handback,
            names,
            // Past both: a reply token of either conversation is stale after a merge.
            hand: self.hand.max(other.hand) + 1,
            last_customer_at: later(self.last_customer_at, other.last_customer_at),
        }
    }

    /// The pause in force at `now`.
    pub fn paused(&self, now: Millis) -> Option<&Pause> {
        self.pause.as_ref().filter(|p| p.until > now)
    }

    /// The hand at `now`: a pause past its deadline has ended (R7), also before its release is
    /// recorded.
    pub fn hand_at(&self, now: Millis) -> u64 {
        let ended = self.pause.as_ref().is_some_and(|p| p.until <= now);
        self.hand + ended as u64
    }

    /// The session alive at `now`.
    pub fn session_at(&self, now: Millis) -> Option<&Session> {
        self.session.as_ref().filter(|s| s.expires > now)
    }
}

/// The later of two endings of a stretch (none while either stretch is still going on).
fn later_end(a: Option<Ended>, b: Option<Ended>) -> Option<Ended> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.released_at > a.released_at { b } else { a }),
        _ => None,
    }
}
