//! A connection and confirm-mode publisher that re-establish themselves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::Connection;
use tokio::sync::{Notify, RwLock};
use tokio_util::sync::CancellationToken;

use super::publisher::Publisher;
use super::topology::Topology;
use super::{connect_from, Error};
use crate::retry::until_ok;

/// How long closing a lost connection may take before the link goes on without it.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);
/// How often a held connection is checked when nobody reports a failure.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// A background task connects (with backoff), declares the topology and holds the publisher until
/// the connection fails, then starts over, until its token is cancelled. Callers get the current
/// publisher or `None` while it is down. With several node URLs (a cluster) it starts with the
/// first, and after a loss goes on with the node after the one it lost.
pub struct Link {
    current: RwLock<Option<(Arc<Connection>, Publisher)>>,
    broken: Notify,
    connected: AtomicBool,
}

impl Link {
    /// Starts the link; it keeps reconnecting until `stop` is cancelled, then closes (and its
    /// task ends).
    pub fn spawn(
        url: String,
        name: String,
        topology: Topology,
        stop: CancellationToken,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let link = Arc::new(Link {
            current: Default::default(),
            broken: Default::default(),
            connected: Default::default(),
        });
        let task = tokio::spawn(link.clone().run(url, name, topology, stop));
        (link, task)
    }

    async fn run(
        self: Arc<Self>,
        url: String,
        name: String,
        topology: Topology,
        stop: CancellationToken,
    ) {
        let mut next = 0;
        while !stop.is_cancelled() {
            let attempt = until_ok(
                "connecting to RabbitMQ",
                &stop,
                |_, _| false,
                || async {
                    let (conn, node) = connect_from(&url, &name, next).await?;
                    topology.declare(&conn).await?;
                    let publisher = Publisher::open(&conn).await?;
                    Ok::<_, Error>((conn, publisher, node))
                },
            )
            .await;
            let Ok((conn, publisher, node)) = attempt else {
                break;
            };
            next = node + 1;
            tracing::info!(connection = %name, node, "connected to RabbitMQ");
            *self.current.write().await = Some((Arc::new(conn), publisher));
            self.connected.store(true, Ordering::SeqCst);
            // Hold it until a caller reports a failure or the connection drops.
            loop {
                tokio::select! {
                    _ = self.broken.notified() => {}
                    _ = tokio::time::sleep(CHECK_EVERY) => {}
                    _ = stop.cancelled() => {}
                }
                let alive = self.current.read().await.as_ref().is_some_and(|(c, p)| {
                    c.status().connected() && p.channel().status().connected()
                });
                if !alive || stop.is_cancelled() {
                    break;
                }
            }
            self.connected.store(false, Ordering::SeqCst);
            // Out of the lock first: closing a dead connection may wait, and callers must get
            // `None` meanwhile rather than wait behind it.
            let lost = self.current.write().await.take();
            if let Some((conn, _)) = lost {
                let closing = conn.close(200, "reconnecting".into());
                let _ = tokio::time::timeout(CLOSE_WITHIN, closing).await;
            }
            if !stop.is_cancelled() {
                tracing::warn!(connection = %name, "lost RabbitMQ; reconnecting");
            }
        }
    }

    /// The publisher, while connected.
    pub async fn publisher(&self) -> Option<Publisher> {
        self.current.read().await.as_ref().map(|(_, p)| p.clone())
    }

    /// A connection to open more channels on (consumers), while connected.
    pub async fn connection(&self) -> Option<Arc<Connection>> {
        self.current.read().await.as_ref().map(|(c, _)| c.clone())
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Reports a failure: the link checks the connection at once.
    pub fn report_failure(&self) {
        self.broken.notify_one();
    }

    /// Publishes on the current connection; a failure makes the link check its connection.
    pub async fn publish_all(&self, messages: &[super::Outgoing]) -> super::Result<()> {
        let publisher = self.publisher().await.ok_or(Error::NotConnected)?;
        publisher
            .publish_all(messages)
            .await
            .inspect_err(|_| self.report_failure())
    }
}
