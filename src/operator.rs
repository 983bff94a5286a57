//! `coexist conversation show|pause|release`: the operator's view and control of one
//! conversation, against Redis (the manual path for when an echo never arrives).

use serde::Serialize;

use crate::domain::Scope;
use crate::engine::state::{Handler, State};
use crate::engine::{Input, OperatorAction};
use crate::store::redis::RedisStore;
use crate::store::{Applied, Engine, StateStore};
use crate::time::Millis;

/// What `conversation show` prints.
#[derive(Debug, Serialize, PartialEq)]
pub struct View {
    pub conversation: String,
    /// Who handles the customer now: `bot` or `human`.
    pub handler: &'static str,
    pub paused: bool,
    pub paused_until: Option<String>,
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
    View {
        conversation: scope.to_string(),
        handler: if paused.is_some() { "human" } else { "bot" },
        paused: paused.is_some(),
        paused_until: paused.map(|p| p.until.rfc3339()),
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

/// Reads one conversation from Redis.
pub async fn show(store: &RedisStore, scope: &Scope, now: Millis) -> crate::store::Result<View> {
    let snap = store.load(scope, "-", now).await?;
    let ttl = store.pause_ttl_ms(scope).await?;
    Ok(view(scope, &snap.state, ttl, now))
}

/// Pauses or releases one conversation; returns the applied command with its events.
pub async fn command(
    engine: &Engine<RedisStore>,
    scope: Scope,
    action: OperatorAction,
    now: Millis,
) -> crate::store::Result<Applied> {
    engine
        .apply(
            &Input::Operator {
                scope,
                action,
                at: now,
            },
            now,
        )
        .await
}
