//! Acknowledging finished deliveries, gathered across the worker's partitions: the first waits
//! up to `publish_gather` for others (when they come that close together), and all go to the broker together (their frames written at
//! once on the worker's connection), as publishes do (docs/operations.md, "Gathering
//! publishes"). A partition flushes what waits before it acts on a seal and before it closes its
//! channel, so a finished item is never delivered again for want of its ack. An ack the broker
//! did not take halts its partition: its deliveries come again, and find their events published.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::BasicAckOptions;
use tokio::sync::{mpsc, oneshot, Notify};

/// A gathering holding this many acks goes at once.
const ENOUGH: usize = 64;
/// How long the broker may take to take an ack before its partition is halted.
const ACK_WITHIN: Duration = Duration::from_secs(2);

/// A partition's side of acking: halted, and told, when one of its acks failed.
#[derive(Default)]
pub(super) struct Partition {
    pub partition: u16,
    pub halted: AtomicBool,
    pub failed: Notify,
}

enum Ack {
    /// A delivery finished: acknowledge it, ending its `settle` span.
    Finished(lapin::Acker, opentelemetry::Context, Arc<Partition>),
    /// Send every ack waiting now, then answer.
    Flush(oneshot::Sender<()>),
}

/// Where the lanes hand their finished deliveries.
pub(super) struct Acks {
    tx: mpsc::UnboundedSender<Ack>,
}

impl Acks {
    /// Starts the acking task; it ends when this is dropped, after the acks handed to it.
    pub fn spawn(within: Duration) -> Acks {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(acking(rx, within));
        Acks { tx }
    }

    /// Hands a finished delivery over to be acknowledged: false when acking has ended.
    pub fn finished(
        &self,
        acker: lapin::Acker,
        span: opentelemetry::Context,
        partition: &Arc<Partition>,
    ) -> bool {
        self.tx
            .send(Ack::Finished(acker, span, partition.clone()))
            .is_ok()
    }

    /// Sends every ack handed over so far: false when acking has ended.
    pub async fn flush(&self) -> bool {
        let (done, sent) = oneshot::channel();
        self.tx.send(Ack::Flush(done)).is_ok() && sent.await.is_ok()
    }
}

async fn acking(mut lanes: mpsc::UnboundedReceiver<Ack>, within: Duration) {
    let mut open = true;
    let mut company = crate::adapters::broker::publisher::Company::new(within);
    while open {
        let Some(first) = lanes.recv().await else {
            return;
        };
        let now = tokio::time::Instant::now();
        company.arrived(now.into_std());
        let until = now + company.wait();
        let mut finished = Vec::new();
        let mut flushes = Vec::new();
        let take = |a: Ack, finished: &mut Vec<_>, flushes: &mut Vec<_>| match a {
            Ack::Finished(acker, span, partition) => {
                finished.push((acker, span, partition));
                finished.len() < ENOUGH
            }
            Ack::Flush(done) => {
                flushes.push(done);
                false
            }
        };
        let mut wait = take(first, &mut finished, &mut flushes);
        while wait {
            let by = tokio::time::Instant::from_std(company.next_by(until.into_std()));
            match tokio::time::timeout_at(by, lanes.recv()).await {
                Ok(Some(a)) => {
                    company.arrived(std::time::Instant::now());
                    wait = take(a, &mut finished, &mut flushes);
                }
                Ok(None) => {
                    open = false;
                    wait = false;
                }
                Err(_) => wait = false,
            }
        }
        while let Ok(a) = lanes.try_recv() {
            take(a, &mut finished, &mut flushes);
        }
        let sent = futures_util::future::join_all(finished.iter().map(|(acker, _, _)| {
            tokio::time::timeout(ACK_WITHIN, acker.ack(BasicAckOptions::default()))
        }))
        .await;
        for ((_, span, partition), acked) in finished.iter().zip(&sent) {
            let failure = match acked {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("the broker did not answer".to_owned()),
            };
            crate::runtime::trace::end(span, failure.as_ref().map(|_| "failed"));
            if let Some(error) = failure {
                // Once per failing partition: it halts, and its deliveries come again.
                if !partition.halted.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        partition = partition.partition,
                        error,
                        "an ack failed; the partition's deliveries come again"
                    );
                    partition.failed.notify_one();
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
