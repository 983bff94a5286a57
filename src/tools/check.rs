//! `coexist number check` (docs/contract.md, "Why"): the post-setup checklist of a coexistence
//! number, from what coexist saw: webhooks arriving, an App message (the 📱 test), a handover, the
//! reset command matched or missed, the number's state and onboarding, `app_idle`. Each line is
//! passed, failed or not yet, with what to do. The same list is served by the admin API and the
//! console's number page.

use serde::Serialize;

use crate::adapters::redis::RedisStore;
use crate::core::engine::why::when;
use crate::core::engine::Rules;
use crate::core::numbers::{remedy, LifeState, Record, ECHO_GRACE};
use crate::core::onboarding::SyncResult;
use crate::core::time::Millis;
use crate::runtime::config::Config;
use crate::tools::numbers::{number_id, Error};

/// How a line of the checklist stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    NotYet,
}

impl Status {
    fn words(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "FAILED",
            Status::NotYet => "not yet",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Line {
    /// `webhooks`, `app_message`, `handover`, `reset_command`, `state`, `onboarding`, `app_idle`.
    pub check: &'static str,
    pub status: Status,
    /// What coexist saw.
    pub saw: String,
    /// What to do (absent when nothing is to be done).
    pub todo: Option<String>,
}

/// A number's checklist.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Checked {
    pub phone_number_id: String,
    /// No line failed.
    pub passed: bool,
    pub lines: Vec<Line>,
}

fn at(s: &Option<String>) -> Option<Millis> {
    s.as_deref().and_then(Millis::parse_rfc3339)
}

fn line(check: &'static str, status: Status, saw: String, todo: Option<&str>) -> Line {
    Line {
        check,
        status,
        saw,
        todo: todo.map(str::to_owned),
    }
}

/// The checklist of a number's record, with the rules it decides with, at `now`.
pub fn checklist(
    r: &Record,
    rules: &Rules,
    now: Millis,
    app_idle_warning: std::time::Duration,
) -> Vec<Line> {
    use Status::*;
    let mut out = Vec::new();
    out.push(match at(&r.last_webhook_at) {
        Some(t) => line("webhooks", Passed, format!("webhooks arrive; the latest at {}", when(t)), None),
        None => line("webhooks", NotYet, "no webhook has arrived for this number yet".into(),
            Some("write to the number from another phone; if nothing arrives, check the app's webhook URL and that the app is subscribed to the WABA (coexist number onboard subscribes it)")),
    });
    out.push(match (at(&r.last_app_message_at), r.echoes_missing(now)) {
        (Some(t), _) => line("app_message", Passed, format!("a message from the Business App (📱) arrived; the latest at {}", when(t)), None),
        (None, true) => line("app_message", Failed,
            format!("customers have written for more than {} days and no message from the Business App has ever arrived", ECHO_GRACE.as_secs() / 86_400),
            Some("subscribe the Meta app to the smb_message_echoes webhook field (App Dashboard, Webhooks); without it a person's replies from the phone never pause the AI agent")),
        (None, false) => line("app_message", NotYet, "no message from the Business App has arrived yet".into(),
            Some("answer a customer from the WhatsApp Business App on the phone: it should reach the inbox marked 📱 (the 📱 test); if it does not, subscribe the app to smb_message_echoes")),
    });
    out.push(match (at(&r.last_handover_at), rules.coexistence) {
        (_, false) => line("handover", Passed, "coexistence is off for this number: App messages are recorded and pause nothing".into(),
            Some("turn it on with coexist number set ID coexistence=true if a person's reply should pause the AI agent")),
        (Some(t), true) => line("handover", Passed, format!("a person's reply from the App paused the AI agent; the latest at {}", when(t)), None),
        (None, true) => line("handover", NotYet, "no reply from the App has paused the AI agent yet".into(),
            Some("answer a customer the AI agent is talking to from the Business App: the AI agent should stop (session.paused) and the inbox get conversation.handover")),
    });
    let near = at(&r.last_near_miss_at).map(|t| (t, r.near_miss_text.clone().unwrap_or_default()));
    out.push(match (rules.reset_text.as_deref(), at(&r.last_reset_at), near) {
        (None, _, _) => line("reset_command", Passed,
            "reset is turned off for this number (reset_text is empty): a conversation goes back to the AI agent by the timeout or an operator's release".into(),
            Some("set a reset command with coexist number set ID reset_text=/reset to let people hand back from the phone")),
        (Some(reset), reset_at, Some((miss_at, text))) if reset_at.is_none_or(|r| r < miss_at) => line("reset_command", Failed,
            format!("the App sent '{text}' at {}, which is not the reset command '{reset}' (compared trimmed, ignoring case): it paused the AI agent instead of releasing it", when(miss_at)),
            Some(&format!("type exactly '{reset}' (with the slash) in the Business App to hand the customer back; coexist conversation explain shows what each message did"))),
        (Some(reset), Some(t), _) => line("reset_command", Passed, format!("the reset command '{reset}' was sent from the App and matched; the latest at {}", when(t)), None),
        (Some(reset), None, _) => line("reset_command", NotYet, format!("the reset command '{reset}' has not been sent from the App yet"),
            Some(&format!("send '{reset}' from the Business App in a conversation a person holds: it should be released (conversation.released, reset_command)"))),
    });
    let reason = r.state_reason_meta();
    out.push(match r.state {
        LifeState::Active => line("state", Passed, "the number is active".into(), None),
        LifeState::Unregistered => line("state", Passed, "the number is served but not in the registry (unregistered): the global and file settings apply".into(),
            Some("coexist number add ID --waba-id W names it, so that Meta's account updates reach it")),
        LifeState::Onboarding => line("state", NotYet, "onboarding has begun and is not finished".into(), Some(remedy(r.state, reason))),
        LifeState::Offboarded | LifeState::Disconnected => line("state", Failed,
            format!("the number is {}{}", r.state.as_str(), r.state_reason.as_deref().map_or(String::new(), |s| format!(" ({s})"))),
            Some(remedy(r.state, reason))),
    });
    out.push(match &r.onboarding {
        None => line("onboarding", NotYet, "not onboarded through coexist: the syncs of contacts and history are not followed".into(),
            Some("coexist number onboard ID --waba-id W right after Embedded Signup (Meta allows each sync once, within 24 hours)")),
        Some(o) => {
            let bad: Vec<String> = [("contacts", &o.contacts), ("history", &o.history)]
                .iter()
                .filter(|(_, s)| matches!(s.result, SyncResult::Unknown | SyncResult::Refused))
                .map(|(k, s)| format!("{k} {}", match s.result { SyncResult::Unknown => "asked, answer unknown", _ => "refused by Meta" }))
                .collect();
            let progress = crate::tools::onboard::progress_words(o);
            match (o.finished(), bad.is_empty()) {
                (true, true) => line("onboarding", Passed, format!("onboarded: both syncs requested; {progress}"), None),
                (true, false) => line("onboarding", Failed, format!("onboarded, but {}; {progress}", bad.join(", ")),
                    Some("coexist number show ID says what Meta answered; a sync cannot be asked twice, so a missing history needs a new signup")),
                (false, _) => line("onboarding", NotYet, format!("onboarding not finished; {progress}"), Some("run coexist number onboard ID --waba-id W again: it resumes where it stopped")),
            }
        }
    });
    out.push(match r.app_idle(now, app_idle_warning) {
        true => line("app_idle", Failed, format!("webhooks arrive but the Business App has sent nothing for {} or more", crate::core::numbers::written(app_idle_warning)),
            Some("open the WhatsApp Business App on the phone and send a message: Meta disconnects a coexistence number after about 14 days without it")),
        false => line("app_idle", Passed, "the Business App is in use".into(), None),
    });
    out
}

/// The checklist of number `id` now.
pub async fn check(store: &RedisStore, config: &Config, id: &str) -> Result<Checked, Error> {
    let id = number_id(id)?;
    let record = store.number(id).await?.unwrap_or_else(|| Record {
        phone_number_id: id.to_owned(),
        ..Record::default()
    });
    let (rules, _) = crate::tools::explain::number_rules(store, config, id).await?;
    let lines = checklist(&record, &rules, Millis::now(), config.app_idle_warning);
    Ok(Checked {
        phone_number_id: id.to_owned(),
        passed: lines.iter().all(|l| l.status != Status::Failed),
        lines,
    })
}

/// The checklist as text: a line each, then what to do.
pub fn text(c: &Checked) -> String {
    let shown = |s: &str| crate::tools::printable::escape(s).into_owned();
    let mut out = format!("number {}\n", c.phone_number_id);
    for l in &c.lines {
        out.push_str(&format!(
            "  {:<8} {:<14} {}\n",
            l.status.words(),
            l.check,
            shown(&l.saw)
        ));
        if let Some(todo) = l.todo.as_deref().filter(|_| l.status != Status::Passed) {
            out.push_str(&format!("  {:<8} {:<14} → {}\n", "", "", shown(todo)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn record(now: Millis) -> Record {
        Record {
            phone_number_id: "1".into(),
            first_seen_at: Some(Millis(now.0 - 5 * DAY).rfc3339()),
            last_webhook_at: Some(Millis(now.0 - 1000).rfc3339()),
            last_customer_at: Some(Millis(now.0 - 1000).rfc3339()),
            ..Record::default()
        }
    }

    fn status(lines: &[Line], check: &str) -> (Status, String) {
        let l = lines.iter().find(|l| l.check == check).unwrap();
        (l.status, l.saw.clone())
    }

    #[test]
    fn a_near_miss_after_the_last_reset_fails_the_reset_line_and_names_the_text() {
        let now = Millis(1_800_000_000_000);
        let mut r = record(now);
        r.last_app_message_at = Some(Millis(now.0 - 2000).rfc3339());
        r.last_near_miss_at = r.last_app_message_at.clone();
        r.near_miss_text = Some("reset".into());
        let warning = crate::core::numbers::DEFAULT_APP_IDLE_WARNING;
        let (s, saw) = status(
            &checklist(&r, &Rules::default(), now, warning),
            "reset_command",
        );
        assert_eq!(s, Status::Failed);
        assert!(saw.contains("'reset'") && saw.contains("'/reset'"), "{saw}");
        // A reset matched after the near miss: passed.
        r.last_reset_at = Some(Millis(now.0 - 1000).rfc3339());
        let (s, _) = status(
            &checklist(&r, &Rules::default(), now, warning),
            "reset_command",
        );
        assert_eq!(s, Status::Passed);
        // Reset off: said, not failed.
        let off = Rules::new(
            "",
            Rules::default().timeout,
            Rules::default().session_timeout,
        );
        let (s, saw) = status(&checklist(&r, &off, now, warning), "reset_command");
        assert_eq!(s, Status::Passed);
        assert!(saw.contains("turned off"), "{saw}");
    }

    #[test]
    fn customers_writing_for_days_with_no_app_message_fail_the_app_line() {
        let now = Millis(1_800_000_000_000);
        let warning = crate::core::numbers::DEFAULT_APP_IDLE_WARNING;
        let r = record(now);
        let (s, saw) = status(
            &checklist(&r, &Rules::default(), now, warning),
            "app_message",
        );
        assert_eq!(s, Status::Failed, "{saw}");
        let mut young = record(now);
        young.first_seen_at = Some(Millis(now.0 - DAY).rfc3339());
        let (s, _) = status(
            &checklist(&young, &Rules::default(), now, warning),
            "app_message",
        );
        assert_eq!(s, Status::NotYet, "a new number has not had time");
    }
}
