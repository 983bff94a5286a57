//! Retrying transient failures until they pass or shutdown is asked for. The schedule is
//! `backon`'s exponential one, never giving up, with jitter of our own around each pause. (The
//! design card named the `backoff` crate; it is unmaintained, RUSTSEC-2025-0012, and was only
//! ever used here for this schedule, so it was replaced: docs/deploy.md, "Dependencies".)

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// Work stopped because shutdown was asked for: what was in hand is left unacknowledged, to be
/// delivered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by shutdown")]
pub struct Interrupted;

/// Why [`until_ok`] stopped without success.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped<E> {
    /// `permanent` said the error is not worth retrying: the last error and the attempts made.
    GaveUp { error: E, attempts: u32 },
    /// Shutdown was asked for.
    Interrupted,
}

impl<E> From<Interrupted> for Stopped<E> {
    fn from(_: Interrupted) -> Self {
        Stopped::Interrupted
    }
}

/// An exponential schedule of pauses, each spread at random by ± `spread` of itself, with no
/// end: after the last step it stays at the longest pause.
pub struct Schedule {
    steps: <ExponentialBuilder as BackoffBuilder>::Backoff,
    longest: Duration,
    spread: f64,
}

impl Schedule {
    fn new(first: Duration, longest: Duration, spread: f64) -> Self {
        let steps = ExponentialBuilder::new()
            .with_min_delay(first)
            .with_max_delay(longest)
            .with_factor(2.0)
            .without_max_times()
            .build();
        Schedule {
            steps,
            longest,
            spread,
        }
    }

    /// The next pause.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.steps.next().unwrap_or(self.longest);
        pause.mul_f64(1.0 - self.spread + 2.0 * self.spread * fastrand::f64())
    }
}

/// The schedule of retries: 50 ms doubling to 5 s between attempts, ± 30 %, never giving up.
pub fn schedule() -> Schedule {
    Schedule::new(Duration::from_millis(50), Duration::from_secs(5), 0.3)
}

/// The pauses between attempts of the apply loop after losing a race for a conversation: 2 ms
/// doubling to 100 ms, ± 50 %, so that the two sides do not meet again.
pub struct ConflictPauses(Schedule);

impl Default for ConflictPauses {
    fn default() -> Self {
        ConflictPauses(Schedule::new(
            Duration::from_millis(2),
            Duration::from_millis(100),
            0.5,
        ))
    }
}

impl ConflictPauses {
    /// The next pause.
    pub fn next_pause(&mut self) -> Duration {
        self.0.next_pause()
    }
}

/// Runs `op` until it succeeds, `permanent` says its error is not worth retrying, or `stop` is
/// cancelled. Each failure is logged with `what` and the attempt number.
pub async fn until_ok<T, E, F, Fut>(
    what: &str,
    stop: &CancellationToken,
    permanent: impl Fn(&E, u32) -> bool,
    op: F,
) -> Result<T, Stopped<E>>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let log = |e: &E, attempt: u32, delay: Duration| {
        tracing::warn!(what, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "retrying");
    };
    retrying(stop, permanent, log, op).await
}

/// [`until_ok`], telling `before_retry` of each failure that is retried (the error, the attempt,
/// the pause before the next) instead of logging it.
pub async fn retrying<T, E, F, Fut>(
    stop: &CancellationToken,
    permanent: impl Fn(&E, u32) -> bool,
    mut before_retry: impl FnMut(&E, u32, Duration),
    mut op: F,
) -> Result<T, Stopped<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = schedule();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                if stop.is_cancelled() {
                    return Err(Stopped::Interrupted);
                }
                if permanent(&e, attempt) {
                    return Err(Stopped::GaveUp {
                        error: e,
                        attempts: attempt,
                    });
                }
                let delay = backoff.next_pause();
                before_retry(&e, attempt, delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return Err(Stopped::Interrupted),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_and_stops_on_permanent_errors() {
        let mut n = 0;
        let never = CancellationToken::new();
        let r: Result<u32, Stopped<String>> = until_ok(
            "t",
            &never,
            |_, _| false,
            || {
                n += 1;
                let v = n;
                async move {
                    if v < 5 {
                        Err(format!("fail {v}"))
                    } else {
                        Ok(v)
                    }
                }
            },
        )
        .await;
        assert_eq!(r.unwrap(), 5);
        let r: Result<(), Stopped<String>> = until_ok(
            "t",
            &never,
            |_, attempt| attempt >= 3,
            || async { Err("no".to_owned()) },
        )
        .await;
        assert_eq!(
            r.unwrap_err(),
            Stopped::GaveUp {
                error: "no".to_owned(),
                attempts: 3
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_retrying() {
        let stop = CancellationToken::new();
        let attempts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (token, counted) = (stop.clone(), attempts.clone());
        let task = tokio::spawn(async move {
            until_ok(
                "t",
                &token,
                |_, _| false,
                || {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async { Err::<(), _>("down".to_owned()) }
                },
            )
            .await
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        stop.cancel();
        assert_eq!(task.await.unwrap().unwrap_err(), Stopped::Interrupted);
        assert!(attempts.load(std::sync::atomic::Ordering::SeqCst) > 3);
    }

    #[test]
    fn the_schedule_doubles_to_its_longest_pause_and_stays_there() {
        let mut s = Schedule::new(Duration::from_millis(50), Duration::from_secs(5), 0.3);
        let pauses: Vec<Duration> = (0..20).map(|_| s.next_pause()).collect();
        let within = |p: Duration, of: u64| {
            let of = Duration::from_millis(of);
            p >= of.mul_f64(0.7) && p <= of.mul_f64(1.3)
        };
        assert!(within(pauses[0], 50), "{:?}", pauses[0]);
        assert!(within(pauses[1], 100), "{:?}", pauses[1]);
        assert!(within(pauses[6], 3200), "{:?}", pauses[6]);
        for p in &pauses[7..] {
            assert!(
                within(*p, 5000),
                "never past the longest, never ending: {p:?}"
            );
        }
    }
}
