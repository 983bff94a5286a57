//! Onboarding a coexistence number (docs/contract.md, "Onboarding"): what Meta's answers mean,
//! the rule of the two syncs (each once, within 24 h of onboarding), and the record of each
//! step. Nothing here does I/O: the calls are [`crate::tools::onboard`], the record in Redis is
//! [`crate::adapters::redis::numbers`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::time::Millis;

/// Meta allows each sync once, within this long after onboarding.
pub const SYNC_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Meta's rule of the syncs, in words (said whenever coexist refuses a sync for it).
pub const SYNC_RULE: &str = "Meta allows the contacts sync and the history sync once each, within 24 hours of onboarding; past that (or once made) a sync can only be had again by offboarding the number and signing up again (Embedded Signup), then coexist number onboard --again";

/// Countries whose numbers Meta does not serve for coexistence, by calling code.
pub const REFUSED_COUNTRIES: &[(&str, &str)] = &[("234", "Nigeria"), ("27", "South Africa")];

/// One of the two syncs Meta makes once for a coexistence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// The App's contacts (`smb_app_state_sync`).
    Contacts,
    /// The App's chat history (`history`).
    History,
}

impl SyncKind {
    pub const ALL: [SyncKind; 2] = [SyncKind::Contacts, SyncKind::History];

    /// The name of the sync in the record (and its Redis fields' prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncKind::Contacts => "contacts",
            SyncKind::History => "history",
        }
    }

    /// Meta's `sync_type` for `POST /{phone_number_id}/smb_app_data`.
    pub fn sync_type(self) -> &'static str {
        match self {
            SyncKind::Contacts => "smb_app_state_sync",
            SyncKind::History => "history",
        }
    }
}

/// Where a sync request stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SyncResult {
    /// Not asked of Meta.
    #[default]
    NotRequested,
    /// Recorded as asked, and no answer known: the request may or may not have reached Meta
    /// (an answer lost, a process stopped). Never asked again by coexist itself.
    Unknown,
    /// Meta accepted it (`request_id`): accepted, not yet delivered.
    Requested,
    /// Meta refused it (its message in `error`).
    Refused,
}

/// One sync's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SyncRecord {
    /// RFC 3339: when coexist recorded it was about to ask Meta.
    pub requested_at: Option<String>,
    pub request_id: Option<String>,
    pub result: SyncResult,
    /// Meta's refusal, as it said it.
    pub error: Option<String>,
}

/// The history sync's progress, from `history` webhooks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HistoryProgress {
    /// The latest phase seen (0: the last day, 1: up to 90 days, 2: up to 180 days).
    pub phase: Option<i64>,
    /// The progress (0-100) within that phase.
    pub progress: Option<i64>,
    /// Chunks seen (each phase and chunk counted once).
    pub chunks: u64,
    /// The business declined to share its history (error 2593109).
    pub declined: bool,
}

/// A number's onboarding record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Onboarding {
    /// RFC 3339: when coexist's onboarding began; the syncs' 24 h are counted from it.
    pub started_at: Option<String>,
    /// RFC 3339: when Meta confirmed the number is on the Business App and the Cloud API.
    pub checked_at: Option<String>,
    /// Meta's `platform_type` at that check (`CLOUD_API` for coexistence).
    pub platform_type: Option<String>,
    /// Meta's `verified_name` at that check.
    pub verified_name: Option<String>,
    /// RFC 3339: when the app was subscribed to the WABA's webhooks (`subscribed_apps`).
    pub subscribed_at: Option<String>,
    pub contacts: SyncRecord,
    pub history: SyncRecord,
    /// The history sync's progress, from `history` webhooks.
    pub history_progress: HistoryProgress,
}

impl Onboarding {
    pub fn sync(&self, kind: SyncKind) -> &SyncRecord {
        match kind {
            SyncKind::Contacts => &self.contacts,
            SyncKind::History => &self.history,
        }
    }

    /// Whether every step has been made (a sync made counts whatever Meta answered).
    pub fn finished(&self) -> bool {
        self.checked_at.is_some()
            && self.subscribed_at.is_some()
            && SyncKind::ALL
                .iter()
                .all(|k| self.sync(*k).result != SyncResult::NotRequested)
    }

    /// Whether a sync not yet asked may still be asked at `now` (within [`SYNC_WINDOW`] of the
    /// start).
    pub fn within_window(&self, now: Millis) -> bool {
        let started = self.started_at.as_deref().and_then(Millis::parse_rfc3339);
        started.is_none_or(|s| now.0 - s.0 <= SYNC_WINDOW.as_millis() as i64)
    }
}

/// What Meta said of a number (`GET /{id}?fields=is_on_biz_app,platform_type,...`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NumberAtMeta {
    pub is_on_biz_app: Option<bool>,
    pub platform_type: Option<String>,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
}

impl NumberAtMeta {
    /// Why coexistence cannot go on for this number, in words; `None`: it can.
    pub fn refusal(&self) -> Option<String> {
        if self.is_on_biz_app != Some(true) {
            return Some(format!(
                "Meta says this number is not on the WhatsApp Business App (is_on_biz_app: {}): coexistence is for a number in use on the Business App; the business must finish Embedded Signup choosing to connect its existing WhatsApp Business App",
                self.is_on_biz_app.map_or("absent".into(), |b| b.to_string())
            ));
        }
        if let Some(p) = self.platform_type.as_deref().filter(|p| *p != "CLOUD_API") {
            return Some(format!(
                "Meta says this number's platform_type is {p}, not CLOUD_API: it is not connected to the Cloud API yet; finish Embedded Signup first"
            ));
        }
        let digits: String = (self.display_phone_number.as_deref().unwrap_or(""))
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        REFUSED_COUNTRIES
            .iter()
            .find(|(code, _)| digits.starts_with(code))
            .map(|(code, country)| format!(
                "the number is in {country} (+{code}): Meta does not offer coexistence (the Business App and the Cloud API on one number) to numbers of Nigeria (+234) and South Africa (+27)"
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_meta(on_app: Option<bool>, platform: Option<&str>, display: &str) -> NumberAtMeta {
        NumberAtMeta {
            is_on_biz_app: on_app,
            platform_type: platform.map(str::to_owned),
            display_phone_number: Some(display.to_owned()),
            verified_name: None,
        }
    }

    #[test]
    fn only_a_business_app_number_on_the_cloud_api_outside_nigeria_and_south_africa_goes_on() {
        assert_eq!(
            at_meta(Some(true), Some("CLOUD_API"), "+1 555-000-1111").refusal(),
            None
        );
        assert_eq!(at_meta(Some(true), None, "15550001111").refusal(), None);
        let not_on_app = at_meta(Some(false), Some("CLOUD_API"), "15550001111").refusal();
        assert!(not_on_app.unwrap().contains("is_on_biz_app: false"));
        let absent = at_meta(None, None, "15550001111").refusal();
        assert!(absent.unwrap().contains("is_on_biz_app: absent"));
        let on_premise = at_meta(Some(true), Some("ON_PREMISE"), "15550001111").refusal();
        assert!(on_premise.unwrap().contains("ON_PREMISE, not CLOUD_API"));
        let nigeria = at_meta(Some(true), Some("CLOUD_API"), "+234 803 000 0000").refusal();
        assert!(nigeria.unwrap().contains("Nigeria (+234)"));
        let south_africa = at_meta(Some(true), Some("CLOUD_API"), "+27 82 000 0000").refusal();
        assert!(south_africa.unwrap().contains("in South Africa (+27)"));
        // +1 270… (Kentucky) is not South Africa: codes are read from the start.
        assert_eq!(
            at_meta(Some(true), Some("CLOUD_API"), "+1 270 555 0100").refusal(),
            None
        );
    }

    #[test]
    fn a_sync_may_be_asked_within_a_day_of_the_start_only_and_finished_needs_every_step() {
        let start = Millis(1_700_000_000_000);
        let mut o = Onboarding {
            started_at: Some(start.rfc3339()),
            ..Default::default()
        };
        assert!(o.within_window(Millis(start.0 + 23 * 3_600_000)));
        assert!(o.within_window(Millis(start.0 + 24 * 3_600_000)));
        assert!(!o.within_window(Millis(start.0 + 24 * 3_600_000 + 1000)));
        assert!(!o.finished());
        o.checked_at = Some(start.rfc3339());
        o.subscribed_at = Some(start.rfc3339());
        o.contacts.result = SyncResult::Requested;
        assert!(!o.finished());
        o.history.result = SyncResult::Unknown;
        assert!(o.finished(), "a sync whose answer was lost is made");
    }
}
