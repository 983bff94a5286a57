//! `coexist number onboard` and `POST /api/v1/numbers/{id}/onboard` (docs/contract.md,
//! "Onboarding"): the calls to Meta after Embedded Signup, in order, each made once.
//!
//! 1. `GET /{version}/{id}?fields=is_on_biz_app,platform_type,display_phone_number,verified_name`:
//!    refused, with the reason, unless the number is on the Business App and the Cloud API and
//!    in a country Meta serves for coexistence. Nothing is recorded before it passes.
//! 2. `POST /{version}/{waba_id}/subscribed_apps`: the app gets the WABA's webhooks.
//! 3. `POST /{version}/{id}/smb_app_data` with `sync_type` `smb_app_state_sync` (contacts), then
//!    `history`. Meta allows each once, within 24 h: each is recorded before it is asked (so a
//!    lost answer is `unknown`, never asked again by coexist), and refused past 24 h.
//!
//! Each step already made is skipped: running it again resumes. The business token is used for
//! the calls only: never stored, never logged.

use serde::Serialize;
use serde_json::{json, Value};

use crate::adapters::graph::{Answer, Graph};
use crate::adapters::redis::RedisStore;
use crate::core::domain::valid_phone_number_id;
use crate::core::engine::event::{By, ByKind, Outbound};
use crate::core::numbers::{state_changed, LifeState};
use crate::core::onboarding::{
    NumberAtMeta, Onboarding, SyncKind, SyncResult, SYNC_RULE, SYNC_WINDOW,
};
use crate::core::time::Millis;
use crate::runtime::config::Config;
use crate::runtime::secret::Secret;
use crate::tools::numbers::{number_id, Error};

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Made now, and Meta accepted it.
    Done,
    /// Made before (by an earlier run): not made again.
    AlreadyDone,
    /// Asked, and no answer known: not asked again.
    Unknown,
    /// Refused, by Meta or by Meta's rule: the detail says which and what to do.
    Refused,
}

/// One step of an onboarding run.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Step {
    /// `check`, `subscribe`, `contacts` or `history`.
    pub step: &'static str,
    pub outcome: Outcome,
    /// What happened, in words.
    pub detail: String,
}

/// What an onboarding run did, and where the number stands.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Report {
    pub phone_number_id: String,
    pub state: LifeState,
    /// Every step has been made (a sync counts once asked, whatever the answer).
    pub finished: bool,
    pub steps: Vec<Step>,
    pub onboarding: Onboarding,
}

/// Why onboarding stopped before its syncs.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    /// Meta's answer about the number rules coexistence out: nothing was recorded.
    #[error("onboarding refused: {0}")]
    Refused(String),
    /// Meta refused a call, or did not answer: the steps before it stand; run it again.
    #[error("{step}: {why}; nothing more was asked (run number onboard again to resume)")]
    Meta { step: &'static str, why: String },
    #[error(transparent)]
    Number(#[from] Error),
}

impl From<crate::core::store::Error> for Stopped {
    fn from(e: crate::core::store::Error) -> Self {
        Stopped::Number(e.into())
    }
}

/// Meta's error message in an answer (`error.message`, with its code), or the status.
fn meta_error(answer: &Answer) -> String {
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    let e = &body["error"];
    match e["message"].as_str() {
        Some(m) => format!(
            "Meta answered {}: {m} (code {})",
            answer.status,
            e["code"].as_i64().map_or("-".into(), |c| c.to_string())
        ),
        None => format!("Meta answered {}", answer.status),
    }
}

/// Runs or resumes the onboarding of `id` under `waba_id` (`again`: the business signed up
/// again, so the earlier onboarding is forgotten and a new 24 h window begins).
pub async fn onboard(
    store: &RedisStore,
    config: &Config,
    id: &str,
    waba_id: &str,
    token: &Secret,
    again: bool,
    by: Option<String>,
) -> Result<Report, Stopped> {
    let id = number_id(id)?;
    if !valid_phone_number_id(waba_id) {
        return Err(Error::Invalid(format!("--waba-id {waba_id:?} is not an id of digits")).into());
    }
    let graph = Graph::new(&config.gate.graph_url);
    let v = &config.graph_version;
    let by = By {
        kind: ByKind::Operator,
        name: by,
    };
    let mut steps = Vec::new();
    let mut events: Vec<Outbound> = Vec::new();
    let before = match again {
        true => None,
        false => store.onboarding(id).await?,
    };

    // 1. The number at Meta: read-only, and nothing is recorded unless it passes.
    let checked = before.as_ref().and_then(|o| o.checked_at.clone());
    let at_meta = match checked {
        Some(at) => {
            steps.push(Step {
                step: "check",
                outcome: Outcome::AlreadyDone,
                detail: format!(
                    "Meta confirmed the number on the Business App and the Cloud API at {at}"
                ),
            });
            None
        }
        None => {
            let path = format!(
                "{v}/{id}?fields=is_on_biz_app,platform_type,display_phone_number,verified_name"
            );
            let answer = graph.with_token(&path, token, None).await;
            let answer = answer.map_err(|e| Stopped::Meta {
                step: "check",
                why: e.to_string(),
            })?;
            if !(200..300).contains(&answer.status) {
                return Err(Stopped::Meta {
                    step: "check",
                    why: meta_error(&answer),
                });
            }
            let number: NumberAtMeta = serde_json::from_slice(&answer.body).unwrap_or_default();
            if let Some(why) = number.refusal() {
                return Err(Stopped::Refused(why));
            }
            Some(number)
        }
    };

    let now = Millis::now();
    store.onboarding_start(id, waba_id, again, now).await?;
    if let Some(n) = &at_meta {
        let mut fields = vec![("checked_at", now.0.to_string())];
        fields.extend(n.platform_type.clone().map(|p| ("platform_type", p)));
        fields.extend(n.verified_name.clone().map(|p| ("verified_name", p)));
        store.onboarding_note(id, &fields).await?;
        if let Some(display) = &n.display_phone_number {
            let digits: String = display.chars().filter(char::is_ascii_digit).collect();
            store.number_display(id, &digits).await?;
        }
        steps.push(Step {
            step: "check",
            outcome: Outcome::Done,
            detail: format!(
                "Meta confirms the number is on the Business App (is_on_biz_app: true, platform_type: {})",
                n.platform_type.as_deref().unwrap_or("not given")
            ),
        });
    }
    let mut o = store.onboarding(id).await?.unwrap_or_default();
    let started = o.started_at.clone().unwrap_or_else(|| now.rfc3339());
    let cause = format!("onboard:{started}");
    let state = store.number(id).await?.map(|r| r.state).unwrap_or_default();
    if !matches!(state, LifeState::Active | LifeState::Onboarding) {
        events.extend(move_to(store, id, LifeState::Onboarding, &cause, &by, now).await?);
    }

    // 2. The app subscribed to the WABA's webhooks (before any sync: history arrives by them).
    match &o.subscribed_at {
        Some(at) => steps.push(Step {
            step: "subscribe",
            outcome: Outcome::AlreadyDone,
            detail: format!("the app was subscribed to WABA {waba_id}'s webhooks at {at}"),
        }),
        None => {
            let path = format!("{v}/{waba_id}/subscribed_apps");
            let answer = graph.with_token(&path, token, Some(&json!({}))).await;
            let stop = |why: String| Stopped::Meta {
                step: "subscribe",
                why,
            };
            let answer = answer.map_err(|e| stop(e.to_string()))?;
            if !(200..300).contains(&answer.status) {
                crate::tools::numbers::publish(config, &events).await.ok();
                return Err(stop(meta_error(&answer)));
            }
            store
                .onboarding_note(id, &[("subscribed_at", Millis::now().0.to_string())])
                .await?;
            steps.push(Step {
                step: "subscribe",
                outcome: Outcome::Done,
                detail: format!("the app is subscribed to WABA {waba_id}'s webhooks"),
            });
        }
    }

    // 3. The two syncs, each once, within the window.
    for kind in SyncKind::ALL {
        steps.push(sync(store, &graph, v, id, kind, &o, token).await?);
    }
    o = store.onboarding(id).await?.unwrap_or_default();
    if o.finished() {
        let state = store.number(id).await?.map(|r| r.state).unwrap_or_default();
        if state == LifeState::Onboarding {
            events.extend(move_to(store, id, LifeState::Active, &cause, &by, Millis::now()).await?);
        }
    }
    crate::tools::numbers::publish(config, &events)
        .await
        .map_err(Error::from)?;
    let state = store.number(id).await?.map(|r| r.state).unwrap_or_default();
    Ok(Report {
        phone_number_id: id.to_owned(),
        state,
        finished: o.finished(),
        steps,
        onboarding: o,
    })
}

/// Moves the number to `to` for this onboarding (once), as `number.state_changed`.
async fn move_to(
    store: &RedisStore,
    id: &str,
    to: LifeState,
    cause: &str,
    by: &By,
    at: Millis,
) -> Result<Vec<Outbound>, Stopped> {
    let reason = match to {
        LifeState::Active => "onboarded",
        _ => "onboarding",
    };
    let item = format!("{cause}:{}", to.as_str());
    let made = store
        .number_transition(id, to, &item, Some(reason), None, at)
        .await?;
    Ok(match made {
        Some((from, to)) => state_changed(id, from, to, Some(reason.into()), by.clone(), &item, at),
        None => Vec::new(),
    })
}

/// One sync: asked once, within the window, recorded before it is asked.
async fn sync(
    store: &RedisStore,
    graph: &Graph,
    v: &str,
    id: &str,
    kind: SyncKind,
    o: &Onboarding,
    token: &Secret,
) -> Result<Step, Stopped> {
    let step = kind.as_str();
    let made = o.sync(kind);
    let at = made.requested_at.as_deref().unwrap_or("-");
    let earlier = match made.result {
        SyncResult::NotRequested => None,
        SyncResult::Requested => Some((
            Outcome::AlreadyDone,
            format!(
                "asked at {at}; Meta accepted it (request_id {})",
                made.request_id.as_deref().unwrap_or("-")
            ),
        )),
        SyncResult::Unknown => Some((Outcome::Unknown, unknown_words(at))),
        SyncResult::Refused => Some((
            Outcome::Refused,
            format!(
                "asked at {at}; {}. {SYNC_RULE}",
                made.error.as_deref().unwrap_or("Meta refused it")
            ),
        )),
    };
    if let Some((outcome, detail)) = earlier {
        return Ok(Step {
            step,
            outcome,
            detail,
        });
    }
    let now = Millis::now();
    if !o.within_window(now) {
        return Ok(Step {
            step,
            outcome: Outcome::Refused,
            detail: format!(
                "not asked: onboarding began at {} (more than {} hours ago). {SYNC_RULE}",
                o.started_at.as_deref().unwrap_or("-"),
                SYNC_WINDOW.as_secs() / 3600
            ),
        });
    }
    if !store.sync_claim(id, kind, now).await? {
        // Another run recorded it between our read and now: it is that run's to make.
        return Ok(Step {
            step,
            outcome: Outcome::Unknown,
            detail: "another onboarding run of this number is asking for it now: not asked twice"
                .into(),
        });
    }
    let body = json!({"messaging_product": "whatsapp", "sync_type": kind.sync_type()});
    let path = format!("{v}/{id}/smb_app_data");
    let answered = graph.with_token(&path, token, Some(&body)).await;
    let at = now.rfc3339();
    Ok(match answered {
        Ok(a) if (200..300).contains(&a.status) => {
            let read: Value = serde_json::from_slice(&a.body).unwrap_or_default();
            let request_id = read["request_id"].as_str().map(str::to_owned);
            store
                .sync_answered(id, kind, SyncResult::Requested, request_id.as_deref(), None)
                .await?;
            Step {
                step,
                outcome: Outcome::Done,
                detail: format!(
                    "asked at {at}; Meta accepted it (request_id {}): accepted, not yet delivered",
                    request_id.as_deref().unwrap_or("-")
                ),
            }
        }
        Ok(a) => {
            let why = meta_error(&a);
            store
                .sync_answered(id, kind, SyncResult::Refused, None, Some(&why))
                .await?;
            Step {
                step,
                outcome: Outcome::Refused,
                detail: format!("asked at {at}; {why}. {SYNC_RULE}"),
            }
        }
        Err(e) => {
            tracing::warn!(number = %id, sync = step, error = %e, "a sync was asked and no answer came: recorded as unknown, never asked again");
            Step {
                step,
                outcome: Outcome::Unknown,
                detail: format!("{} ({e})", unknown_words(&at)),
            }
        }
    })
}

fn unknown_words(at: &str) -> String {
    format!("asked at {at} and no answer came: Meta may or may not have accepted it. coexist never asks twice (Meta allows one); history and contact webhooks will show whether it was made (number show)")
}

/// The report as text: one line per step, then the history's progress.
pub fn text(r: &Report) -> String {
    let mut out = format!(
        "number {}: {}{}\n",
        r.phone_number_id,
        r.state.as_str(),
        match r.finished {
            true => ", onboarding finished",
            false => ", onboarding not finished",
        }
    );
    for s in &r.steps {
        let outcome = serde_json::to_value(s.outcome).expect("serialises");
        out.push_str(&format!(
            "  {:<10} {:<13} {}\n",
            s.step,
            outcome.as_str().unwrap_or(""),
            crate::tools::printable::escape(&s.detail)
        ));
    }
    out.push_str(&format!("  {}\n", progress_words(&r.onboarding)));
    out
}

/// The history sync's progress in words.
pub fn progress_words(o: &Onboarding) -> String {
    let p = &o.history_progress;
    if p.declined {
        return "history: the business declined to share its chat history (2593109)".into();
    }
    match (p.phase, p.progress) {
        (Some(phase), Some(progress)) => format!(
            "history: phase {phase} of 0-2, {progress} % ({} chunk(s) seen)",
            p.chunks
        ),
        _ if p.chunks > 0 => format!("history: {} chunk(s) seen", p.chunks),
        _ => "history: no history webhook seen yet".into(),
    }
}
