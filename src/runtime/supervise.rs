//! Supervised tasks: a process's long-running tasks, each with a name. None of them may end on
//! its own: the first that does (returns or panics) while the process is not stopping is a
//! failure, logged by name, and the process stops with a non-zero exit instead of running on
//! with a part missing while it looks healthy.

use futures_util::future::select_all;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A task that ended while it should have been running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {name} task {how}")]
pub struct Ended {
    pub name: &'static str,
    /// `ended` or `panicked: {message}`.
    pub how: String,
}

/// Named tasks, watched together.
#[derive(Default)]
pub struct Tasks {
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Watches a spawned task under `name`.
    pub fn add(&mut self, name: &'static str, handle: JoinHandle<()>) {
        self.running.push((name, handle));
    }

    /// Spawns `task` and watches it under `name`.
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.add(name, tokio::spawn(task));
    }

    /// Waits until `stop` is cancelled (`Ok`), or a task ends first (`Err`, logged; `stop` is
    /// then cancelled, so the others stop too).
    pub async fn watch(&mut self, stop: &CancellationToken) -> Result<(), Ended> {
        if self.running.is_empty() {
            stop.cancelled().await;
            return Ok(());
        }
        let first = select_all(self.running.iter_mut().map(|(_, h)| h));
        let (result, index) = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            (result, index, _) = first => (result, index),
        };
        let (name, _) = self.running.remove(index);
        let how = match result {
            Ok(()) => "ended".to_owned(),
            Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
            Err(_) => "was cancelled".to_owned(),
        };
        let ended = Ended { name, how };
        tracing::error!(task = name, what = %ended, "a task ended unexpectedly; stopping");
        stop.cancel();
        Err(ended)
    }

    /// Waits for the task named `name` to finish (if it is still watched): for stopping in order.
    pub async fn join(&mut self, name: &str) {
        if let Some(i) = self.running.iter().position(|(n, _)| *n == name) {
            let (_, handle) = self.running.remove(i);
            let _ = handle.await;
        }
    }

    /// Waits for every task still watched.
    pub async fn join_all(&mut self) {
        for (_, handle) in self.running.drain(..) {
            let _ = handle.await;
        }
    }
}

/// A started part (worker, ingress, gate, console) seen from outside: stop it, or wait until it
/// stops. Dropping it stops the part.
pub struct Handle {
    name: &'static str,
    done: JoinHandle<Result<(), Ended>>,
    stop: DropGuard,
}

impl Handle {
    /// `done` is the part's supervisor (it resolves once the part has stopped); `stop` stops it.
    pub fn new(
        name: &'static str,
        done: JoinHandle<Result<(), Ended>>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            name,
            done,
            stop: stop.drop_guard(),
        }
    }

    /// Stops gracefully and waits until it has.
    pub async fn stop(self) {
        let Handle { done, stop, .. } = self;
        drop(stop);
        let _ = done.await;
    }

    /// Resolves when it has stopped: after its stop token was cancelled (`Ok`), or because one
    /// of its tasks ended by itself (`Err`, naming it; the rest of the part was stopped).
    pub async fn stopped(self) -> Result<(), Ended> {
        let Handle { name, done, stop } = self;
        let result = done.await.unwrap_or_else(|e| {
            Err(Ended {
                name,
                how: e.to_string(),
            })
        });
        drop(stop);
        result
    }
}

/// A started part that serves HTTP on `addr` (the gate, the console). Dropping it stops it.
pub struct Listening {
    pub addr: std::net::SocketAddr,
    pub handle: Handle,
}

impl Listening {
    /// Stops gracefully and waits until it has.
    pub async fn stop(self) {
        self.handle.stop().await
    }

    /// See [`Handle::stopped`].
    pub async fn stopped(self) -> Result<(), Ended> {
        self.handle.stopped().await
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "(no message)".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_task_to_end_is_named_and_stops_the_rest() {
        let stop = CancellationToken::new();
        let mut tasks = Tasks::new();
        let s = stop.clone();
        tasks.spawn("steady", async move { s.cancelled().await });
        tasks.spawn("flaky", async { panic!("boom") });
        let ended = tasks.watch(&stop).await.unwrap_err();
        assert_eq!(ended.name, "flaky");
        assert_eq!(ended.how, "panicked: boom");
        assert!(stop.is_cancelled(), "the others are told to stop");
        tasks.join_all().await;
    }

    #[tokio::test]
    async fn a_stop_asked_for_is_not_a_failure() {
        let stop = CancellationToken::new();
        let mut tasks = Tasks::new();
        let s = stop.clone();
        tasks.spawn("steady", async move { s.cancelled().await });
        stop.cancel();
        assert_eq!(tasks.watch(&stop).await, Ok(()));
        tasks.join("steady").await;
        let mut quiet = Tasks::new();
        quiet.spawn("returns", async {});
        let ended = quiet.watch(&CancellationToken::new()).await.unwrap_err();
        assert_eq!((ended.name, ended.how.as_str()), ("returns", "ended"));
    }
}
