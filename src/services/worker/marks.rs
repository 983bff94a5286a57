//! Recording published events as published, in batches. Once an item's events are confirmed its
//! delivery is acknowledged at once, and its dedup mark turns to `done` in the next batch: one
//! pipeline of `SET ... XX KEEPTTL` for every item finished while the previous batch was on its
//! way. Until then a redelivery of the item (Meta sending it again) publishes the same events
//! with the same ids again, which the contract allows; nothing is decided twice.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::adapters::redis::RedisStore;
use crate::core::domain::Scope;
use crate::core::store::StateStore;
use crate::runtime::retry::{until_ok, Stopped};

/// The most marks one pipeline carries.
const BATCH: usize = 512;
/// Attempts at a batch before its marks are left as they are (a redelivery repeats events).
const ATTEMPTS: u32 = 5;

/// Marks waiting to be written at most: past it, finishing an item waits (memory stays bounded
/// when Redis is slow).
const QUEUE: usize = 8192;

/// Where finished items go to be marked.
#[derive(Clone)]
pub(super) struct Marks(mpsc::Sender<(Scope, String)>);

impl Marks {
    /// Starts the task that writes the marks; it ends when `stop` is cancelled, after writing
    /// what it holds.
    pub(super) fn spawn(
        store: RedisStore,
        stop: CancellationToken,
    ) -> (Marks, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Marks(tx), tokio::spawn(run(store, rx, stop)))
    }

    /// Queues an item's mark (waiting while the queue is full).
    pub(super) async fn add(&self, scope: &Scope, key: &str) {
        // Only closed after the worker stopped: the mark is then left to a redelivery.
        let _ = self.0.send((scope.clone(), key.to_owned())).await;
    }
}

async fn run(store: RedisStore, mut rx: mpsc::Receiver<(Scope, String)>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            () = stop.cancelled() => None,
        };
        match first {
            Some(m) => batch.push(m),
            None if stop.is_cancelled() => {
                // Stopping: write what was queued before the stop.
                while let Ok(m) = rx.try_recv() {
                    batch.push(m);
                }
                write(&store, &mut batch).await;
                return;
            }
            None => return,
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        write(&store, &mut batch).await;
    }
}

async fn write(store: &RedisStore, batch: &mut Vec<(Scope, String)>) {
    if batch.is_empty() {
        return;
    }
    // Never interrupted: the marks are written even while the worker stops.
    let marked = until_ok(
        "recording events as published",
        &CancellationToken::new(),
        |_, attempt| attempt >= ATTEMPTS,
        || store.mark_published(batch),
    )
    .await;
    if let Err(Stopped::GaveUp { error, .. }) = marked {
        tracing::warn!(error = %error, marks = batch.len(), "events published but not recorded as such; a redelivery repeats them");
    }
    batch.clear();
}
