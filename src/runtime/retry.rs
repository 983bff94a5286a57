//! Retrying transient failures until they pass or shutdown is asked for. The one place that
//! uses the `backoff` crate (unmaintained, RUSTSEC-2025-0012, but the one asked for): its
//! exponential schedule, with no give-up time (its default of 15 minutes would drop work).

use std::future::Future;
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
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

/// The schedule: 50 ms doubling to 5 s between attempts, with jitter, never giving up.
pub fn schedule() -> ExponentialBackoff {
    ExponentialBackoff {
        initial_interval: Duration::from_millis(50),
        max_interval: Duration::from_secs(5),
        multiplier: 2.0,
        randomization_factor: 0.3,
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    }
}

/// The pauses between attempts of the apply loop after losing a race for a conversation: 2 ms
/// doubling to 100 ms, with wide jitter so that the two sides do not meet again.
pub struct ConflictPauses(ExponentialBackoff);

impl Default for ConflictPauses {
    fn default() -> Self {
        ConflictPauses(ExponentialBackoff {
            initial_interval: Duration::from_millis(2),
            max_interval: Duration::from_millis(100),
            multiplier: 2.0,
            randomization_factor: 0.5,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        })
    }
}

impl ConflictPauses {
    /// The next pause.
    pub fn next_pause(&mut self) -> Duration {
        self.0.next_backoff().unwrap_or(Duration::from_millis(100))
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
                let delay = backoff.next_backoff().unwrap_or(Duration::from_secs(5));
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
}
