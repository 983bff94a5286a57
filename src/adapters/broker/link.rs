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
use crate::runtime::retry::until_ok;

/// How long closing a lost connection may take before the link goes on without it.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);
/// How often a held connection is checked when nobody reports a failure.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Work done on each new connection before it is handed out (laying out the partitions).
pub trait OnConnect: Send + Sync {
    fn on_connect<'a>(&'a self, conn: &'a Connection) -> futures_util::future::BoxFuture<'a, ()>;
}

/// A background task connects (with backoff), declares the topology and holds the publisher (which
/// gathers publishes for up to `gather`, [`Publisher::open_gathering`]) until
/// the connection fails, then starts over, until its token is cancelled. Callers get the current
/// publisher or `None` while it is down. With several node URLs (a cluster) it starts with the
/// first, and after a loss goes on with the node after the one it lost.
pub struct Link {
    current: RwLock<Option<(Arc<Connection>, Publisher)>>,
    broken: Notify,
    connected: AtomicBool,
    /// Why the broker blocks this connection's publishers now (a memory or disk alarm), if it
    /// does: from its `connection.blocked` / `connection.unblocked` notifications.
    blocked: std::sync::Mutex<Option<String>>,
    /// Told when the broker blocks the connection (publishes waiting for confirms give up).
    blocking: Notify,
    /// Counts the connections made, so a waiter learns of a new one at once.
    made: tokio::sync::watch::Sender<u64>,
}

impl Link {
    /// Starts the link; it keeps reconnecting until `stop` is cancelled, then closes (and its
    /// task ends).
    pub fn spawn(
        url: String,
        name: String,
        topology: Topology,
        on_connect: Option<Arc<dyn OnConnect>>,
        gather: Duration,
        stop: CancellationToken,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let link = Arc::new(Link {
            current: Default::default(),
            broken: Default::default(),
            connected: Default::default(),
            blocked: Default::default(),
            blocking: Default::default(),
            made: tokio::sync::watch::Sender::new(0),
        });
        let task = tokio::spawn(
            link.clone()
                .run(url, name, topology, on_connect, gather, stop),
        );
        (link, task)
    }

    async fn run(
        self: Arc<Self>,
        url: String,
        name: String,
        topology: Topology,
        on_connect: Option<Arc<dyn OnConnect>>,
        gather: Duration,
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
                    if let Some(hook) = &on_connect {
                        hook.on_connect(&conn).await;
                    }
                    let publisher = Publisher::open_gathering(&conn, gather).await?;
                    Ok::<_, Error>((conn, publisher, node))
                },
            )
            .await;
            let Ok((conn, publisher, node)) = attempt else {
                break;
            };
            next = node + 1;
            tracing::info!(connection = %name, node, "connected to RabbitMQ");
            *self.blocked.lock().expect("blocked") = None;
            let watching = tokio::spawn(self.clone().watch_blocking(conn.events_listener()));
            *self.current.write().await = Some((Arc::new(conn), publisher));
            self.connected.store(true, Ordering::SeqCst);
            self.made.send_modify(|n| *n += 1);
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
            watching.abort();
            *self.blocked.lock().expect("blocked") = None;
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

    /// Follows the broker's `connection.blocked` / `unblocked` notifications.
    async fn watch_blocking(
        self: Arc<Self>,
        events: impl futures_util::Stream<Item = lapin::Event>,
    ) {
        use futures_util::StreamExt;
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                lapin::Event::ConnectionBlocked(reason) => {
                    tracing::warn!(reason, "the broker blocks publishing (a resource alarm): answering 503 until it lifts");
                    metrics::counter!(crate::runtime::metrics::BROKER_BLOCKED).increment(1);
                    *self.blocked.lock().expect("blocked") = Some(reason);
                    self.blocking.notify_waiters();
                }
                lapin::Event::ConnectionUnblocked => {
                    tracing::info!("the broker publishes again (its alarm lifted)");
                    *self.blocked.lock().expect("blocked") = None;
                }
                _ => {}
            }
        }
    }

    /// Why the broker blocks publishing on this link now (`None`: it does not).
    pub fn blocked(&self) -> Option<String> {
        self.blocked.lock().expect("blocked").clone()
    }

    /// Resolves when the broker starts blocking this link's publishers.
    pub async fn blocking(&self) {
        self.blocking.notified().await
    }

    /// The link's `/readyz` check: connected, and not blocked by the broker.
    pub fn check(&self) -> crate::runtime::http::Check {
        use crate::runtime::http::Check;
        if !self.is_connected() {
            return Check::NotReady("not connected".into());
        }
        match self.blocked() {
            Some(reason) => Check::NotReady(format!("the broker blocks publishers: {reason}")),
            None => Check::Ok,
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

    /// [`Link::connection`], waiting up to `within` for one to be made (a process just started,
    /// or reconnecting).
    pub async fn connection_within(&self, within: Duration) -> Option<Arc<Connection>> {
        let mut made = self.connections();
        let waited = tokio::time::timeout(within, async {
            loop {
                if let Some(c) = self.connection().await {
                    return Some(c);
                }
                if made.changed().await.is_err() {
                    return None;
                }
            }
        });
        waited.await.ok().flatten()
    }

    /// Changes each time a connection is made: its holder can start using it at once.
    pub fn connections(&self) -> tokio::sync::watch::Receiver<u64> {
        self.made.subscribe()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Reports a failure: the link checks the connection at once.
    pub fn report_failure(&self) {
        self.broken.notify_one();
    }

    /// Sends one message without waiting for a confirm ([`Publisher::send`]): an answer to a
    /// command's sender. Not connected: nothing is sent (the sender times out and says so).
    pub async fn send(&self, message: &super::Outgoing) -> super::Result<()> {
        let publisher = self.publisher().await.ok_or(Error::NotConnected)?;
        publisher.send(message).await
    }

    /// Publishes on the current connection; a failure makes the link check its connection.
    /// While the broker blocks publishers it fails at once (`Blocked`), and a publish already
    /// waiting for its confirms gives up when the block begins: the caller waits the alarm out
    /// (the worker) or answers `503` (the ingress), and nothing is acknowledged meanwhile.
    pub async fn publish_all(&self, messages: &[super::Outgoing]) -> super::Result<()> {
        if let Some(reason) = self.blocked() {
            return Err(Error::Blocked(reason));
        }
        let publisher = self.publisher().await.ok_or(Error::NotConnected)?;
        let blocking = self.blocking();
        tokio::select! {
            published = publisher.publish_all(messages) => {
                published.inspect_err(|_| self.report_failure())
            }
            () = blocking => Err(Error::Blocked(self.blocked().unwrap_or_default())),
        }
    }
}
