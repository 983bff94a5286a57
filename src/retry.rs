//! Retrying transient failures, and the shutdown signal that ends retrying. The one place that
//! uses the `backoff` crate (unmaintained, RUSTSEC-2025-0012, but the one asked for): its
//! exponential schedule, with no give-up time (its default of 15 minutes would drop work).

use std::future::Future;
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use tokio::sync::watch;

/// A shutdown signal: cheap to clone, triggered once.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Triggers a [`Shutdown`].
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// A signal that never fires.
    pub fn never() -> Shutdown {
        let (trigger, s) = Shutdown::new();
        std::mem::forget(trigger);
        s
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when shutdown is triggered.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|v| *v).await;
    }
}

impl ShutdownTrigger {
    /// Another handle that triggers the same signal.
    pub fn clone_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger {
            tx: self.tx.clone(),
        }
    }

    pub fn trigger(&self) {
        let _ = self.tx.send(true);
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

/// Runs `op` until it succeeds, `permanent` says its error is not worth retrying, or shutdown.
/// Each failure is logged with `what` and the attempt number. Returns the last error when it
/// stops without success, with the number of attempts made.
pub async fn until_ok<T, E, F, Fut>(
    what: &str,
    shutdown: &Shutdown,
    permanent: impl Fn(&E, u32) -> bool,
    mut op: F,
) -> Result<T, (E, u32)>
where
    E: std::fmt::Display,
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
                if permanent(&e, attempt) || shutdown.is_triggered() {
                    return Err((e, attempt));
                }
                let delay = backoff.next_backoff().unwrap_or(Duration::from_secs(5));
                tracing::warn!(what, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait() => return Err((e, attempt)),
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
        let r: Result<u32, (String, u32)> = until_ok(
            "t",
            &Shutdown::never(),
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
        let r: Result<(), (String, u32)> = until_ok(
            "t",
            &Shutdown::never(),
            |_, attempt| attempt >= 3,
            || async { Err("no".to_owned()) },
        )
        .await;
        assert_eq!(r.unwrap_err(), ("no".to_owned(), 3));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_retrying() {
        let (trigger, shutdown) = Shutdown::new();
        let task = tokio::spawn(async move {
            until_ok(
                "t",
                &shutdown,
                |_, _| false,
                || async { Err::<(), _>("down".to_owned()) },
            )
            .await
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        trigger.trigger();
        let (e, attempts) = task.await.unwrap().unwrap_err();
        assert_eq!(e, "down");
        assert!(attempts > 3);
    }
}
