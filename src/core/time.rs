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
    /// The latest instant coexist represents: 9999-12-31T23:59:59.999Z (RFC 3339 has four-digit
    /// years). Arithmetic saturates here, so every instant formats.
    pub const LATEST: Millis = Millis(253_402_300_799_999);

    /// The latest time an item may carry: 9000-01-01T00:00:00Z. Later ones (and any before 1970)
    /// are no time Meta sends; the reader parks them as unreadable. Up to here, every duration
    /// coexist adds (at most ten years) stays within [`Millis::LATEST`].
    pub const READABLE_UNTIL: Millis = Millis(221_845_392_000_000);

    /// The wall clock now.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Millis(d.as_millis() as i64)
    }

    /// Unix seconds, as Meta writes them (saturating at [`Millis::LATEST`]).
    pub fn from_secs(secs: i64) -> Self {
        Millis(secs.saturating_mul(1000).min(Self::LATEST.0))
    }

    /// This instant plus a duration (saturating at [`Millis::LATEST`]).
    pub fn plus(self, d: Duration) -> Self {
        Millis(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64)
                .min(Self::LATEST.0),
        )
    }

    /// Whether an item may carry this time ([`Millis::READABLE_UNTIL`]).
    pub fn readable(self) -> bool {
        (0..=Self::READABLE_UNTIL.0).contains(&self.0)
    }

    /// This instant minus a duration (saturating).
    pub fn minus(self, d: Duration) -> Self {
        Millis(
            self.0
                .saturating_sub(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// Reads an RFC 3339 instant (as [`Millis::rfc3339`] writes it).
    pub fn parse_rfc3339(s: &str) -> Option<Millis> {
        let t = humantime::parse_rfc3339_weak(s.trim()).ok()?;
        let d = t.duration_since(UNIX_EPOCH).ok()?;
        Some(Millis(d.as_millis().min(Self::LATEST.0 as u128) as i64))
    }

    /// RFC 3339 in UTC: whole seconds when the instant has no fraction, milliseconds otherwise.
    /// Total: instants before 1970 read as 1970, after [`Millis::LATEST`] as it.
    pub fn rfc3339(self) -> String {
        let ms = self.0.clamp(0, Self::LATEST.0) as u64;
        let t = UNIX_EPOCH + Duration::from_millis(ms);
        if ms % 1000 == 0 {
            humantime::format_rfc3339_seconds(t).to_string()
        } else {
            humantime::format_rfc3339_millis(t).to_string()
        }
    }
}

/// Where a process reads the time: the wall clock, or (for tests) a clock of its own, corrected
/// by an offset that [`Clock::align`] sets to agree with a reference (the worker and the gate
/// align theirs with Redis's `TIME`, the clock that expires pause keys: so routing, the gate and
/// the keys' expiry read one time, whatever the hosts' clocks say). Handed to what decides by
/// time, so that no code reads the wall clock behind its back.
#[derive(Clone)]
pub struct Clock {
    read: std::sync::Arc<dyn Fn() -> Millis + Send + Sync>,
    offset: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl Clock {
    fn reading(read: impl Fn() -> Millis + Send + Sync + 'static) -> Self {
        Clock {
            read: std::sync::Arc::new(read),
            offset: Default::default(),
        }
    }

    /// The wall clock.
    pub fn system() -> Self {
        Clock::reading(Millis::now)
    }

    /// The wall clock set `ahead` (negative: behind), as a host whose clock is off.
    pub fn skewed(ahead_ms: i64) -> Self {
        Clock::reading(move || Millis(Millis::now().0.saturating_add(ahead_ms)))
    }

    /// The time now, corrected.
    pub fn now(&self) -> Millis {
        let offset = self.offset.load(std::sync::atomic::Ordering::Relaxed);
        Millis((self.read)().0.saturating_add(offset))
    }

    /// The uncorrected reading, for measuring against a reference.
    pub fn reading_now(&self) -> Millis {
        (self.read)()
    }

    /// Corrects the clock (and every clone of it) to agree with a reference that read
    /// `reference` when this clock's own reading was `read_at`.
    pub fn align(&self, reference: Millis, read_at: Millis) {
        self.offset.store(
            reference.0.saturating_sub(read_at.0),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The correction in force, ms (the reference minus this clock's own reading).
    pub fn offset_ms(&self) -> i64 {
        self.offset.load(std::sync::atomic::Ordering::Relaxed)
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
    fn every_instant_formats_even_past_year_9999() {
        assert_eq!(Millis(i64::MAX).rfc3339(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Millis::LATEST.rfc3339(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Millis::READABLE_UNTIL.rfc3339(), "9000-01-01T00:00:00Z");
        let late = Millis::from_secs(253_402_300_799); // 9999-12-31T23:59:59Z, as Meta writes it
        assert_eq!(late.plus(Duration::from_secs(7 * 86_400)), Millis::LATEST);
        assert_eq!(Millis::from_secs(i64::MAX), Millis::LATEST);
        assert!(!late.readable() && Millis::READABLE_UNTIL.readable() && !Millis(-1).readable());
    }

    #[test]
    fn an_aligned_clock_reads_its_reference_whatever_its_own_skew() {
        let ahead = Clock::skewed(30_000);
        let copy = ahead.clone();
        let reference = Millis::now();
        ahead.align(reference, ahead.reading_now());
        let d = (copy.now().0 - Millis::now().0).abs();
        assert!(
            d < 50,
            "every clone reads the reference's time: off by {d} ms"
        );
        assert!((ahead.offset_ms() + 30_000).abs() < 50);
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(
            Millis(i64::MAX).plus(Duration::from_secs(1)),
            Millis::LATEST
        );
        assert_eq!(Millis(10).minus(Duration::from_millis(4)), Millis(6));
    }
}
