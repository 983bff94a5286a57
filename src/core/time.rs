//! Instants and durations as the engine sees them: Unix milliseconds, formatted as RFC 3339 UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// An instant in Unix milliseconds (UTC). Meta's timestamps are whole seconds; the clock has ms.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub i64);

impl Millis {
    /// The wall clock now.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Millis(d.as_millis() as i64)
    }

    /// Unix seconds, as Meta writes them.
    pub fn from_secs(secs: i64) -> Self {
        Millis(secs.saturating_mul(1000))
    }

    /// This instant plus a duration (saturating).
    pub fn plus(self, d: Duration) -> Self {
        Millis(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// This instant minus a duration (saturating).
    pub fn minus(self, d: Duration) -> Self {
        Millis(
            self.0
                .saturating_sub(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// RFC 3339 in UTC: whole seconds when the instant has no fraction, milliseconds otherwise.
    pub fn rfc3339(self) -> String {
        let ms = self.0.max(0) as u64;
        let t = UNIX_EPOCH + Duration::from_millis(ms);
        if ms % 1000 == 0 {
            humantime::format_rfc3339_seconds(t).to_string()
        } else {
            humantime::format_rfc3339_millis(t).to_string()
        }
    }
}

/// Where a process reads the time: the wall clock, or (for tests) a clock of its own. Handed to
/// what decides by time, so that no code reads the wall clock behind its back.
#[derive(Clone)]
pub struct Clock(std::sync::Arc<dyn Fn() -> Millis + Send + Sync>);

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Clock(std::sync::Arc::new(Millis::now))
    }

    /// The wall clock set `ahead` (negative: behind), as a host whose clock is off.
    pub fn skewed(ahead_ms: i64) -> Self {
        Clock(std::sync::Arc::new(move || {
            Millis(Millis::now().0.saturating_add(ahead_ms))
        }))
    }

    pub fn now(&self) -> Millis {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now().rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(
            Millis::from_secs(1764000000).rfc3339(),
            "2025-11-24T16:00:00Z"
        );
        assert_eq!(Millis(1764000000123).rfc3339(), "2025-11-24T16:00:00.123Z");
        assert_eq!(Millis(-5).rfc3339(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(
            Millis(i64::MAX).plus(Duration::from_secs(1)),
            Millis(i64::MAX)
        );
        assert_eq!(Millis(10).minus(Duration::from_millis(4)), Millis(6));
    }
}
