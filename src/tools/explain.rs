//! `coexist conversation explain` (docs/contract.md, "Why"): a conversation's trail, its state
//! now, and what happens on the customer's next message, and why. The admin API's conversation
//! answer and the console's conversation page show the same.

use serde::Serialize;

use crate::adapters::redis::RedisStore;
use crate::core::domain::Scope;
use crate::core::engine::why::{next_message, when, TrailEntry};
use crate::core::engine::Rules;
use crate::core::numbers::LifeState;
use crate::core::store::StateStore;
use crate::core::time::Millis;
use crate::runtime::config::Config;
use crate::tools::operator::{self, View};

/// What `conversation explain` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Explained {
    #[serde(flatten)]
    pub state: View,
    /// The number's lifecycle state.
    pub number_state: LifeState,
    /// The latest decisions, oldest first, each with why.
    pub trail: Vec<TrailEntry>,
    /// What happens on the customer's next message, and why.
    pub next_message: String,
}

/// The rules a number decides with now (its runtime settings over the file's over the global
/// keys), and its state.
pub async fn number_rules(
    store: &RedisStore,
    config: &Config,
    pnid: &str,
) -> crate::core::store::Result<(Rules, LifeState)> {
    let record = store.number(pnid).await?;
    let runtime = record
        .as_ref()
        .and_then(|r| crate::runtime::config::read_settings(&r.settings).ok())
        .unwrap_or_default();
    let rules = config
        .numbers
        .check(pnid, &runtime)
        .unwrap_or_else(|_| config.rules.for_number(pnid).clone());
    Ok((rules, record.map(|r| r.state).unwrap_or_default()))
}

/// The conversation `scope` names, explained at `now`.
pub async fn explain(
    store: &RedisStore,
    config: &Config,
    scope: &Scope,
    now: Millis,
) -> crate::core::store::Result<Explained> {
    // The trail first, then the state: the state shown is never older than the trail's last
    // decision (read the other way round, a decision committed in between would be in the trail
    // and not in the state).
    let conversation = operator::conversation(store, scope).await?;
    let trail = store.trail(&conversation).await?;
    let (state, ttl) = operator::state_of(store, &conversation, now).await?;
    let (rules, number_state) = number_rules(store, config, &scope.phone_number_id).await?;
    Ok(Explained {
        next_message: next_message(&state, &rules, now, Some(number_state.as_str())),
        state: operator::view(&conversation, &state, ttl, now),
        number_state,
        trail,
    })
}

/// `conversation explain`'s text: the state now, the trail, then the next message.
pub fn text(e: &Explained) -> String {
    let shown = |s: &str| crate::tools::printable::escape(s).into_owned();
    let v = &e.state;
    let mut out = format!("conversation {}\n", shown(&v.conversation));
    let now = match (&v.paused_until, &v.paused_by) {
        (Some(until), Some(by)) => format!(
            "with a human until {} (paused by {})",
            Millis::parse_rfc3339(until).map_or(until.clone(), when),
            crate::core::engine::why::by_words(by)
        ),
        _ => "with the AI agent".to_owned(),
    };
    out.push_str(&format!(
        "now               {now}; the number is {}\n",
        e.number_state.as_str()
    ));
    if e.trail.is_empty() {
        out.push_str("\nno decision kept (none yet, or the trail is off: COEXIST_TRAIL_ENTRIES)\n");
    } else {
        out.push_str("\nwhy, oldest first\n");
        for t in &e.trail {
            let at = Millis::parse_rfc3339(&t.at).map_or(t.at.clone(), when);
            out.push_str(&format!(
                "  {at}  {:<8} {:<17} {}\n      {}\n",
                t.rule,
                t.kind,
                shown(&t.outcome),
                shown(&t.why)
            ));
        }
    }
    out.push_str(&format!(
        "\nthe customer's next message: {}\n",
        shown(&e.next_message)
    ));
    out
}
