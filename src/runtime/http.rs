//! HTTP plumbing shared by the ingress and the worker's admin address: health, readiness,
//! metrics, and serving under the limits of docs/contract.md ("Configuration") with graceful shutdown.
//!
//! Both addresses may face the internet, so a client must not be able to hold them: the accept
//! loop closes connections beyond `max_connections` at once, and every connection carries a
//! [`Deadline`] that closes it when its headers do not arrive in time (`header_timeout`, also for a
//! connection that never sends a request) or when it sits idle between requests
//! (`idle_timeout`). The body timeout and the memory budget for bodies apply where bodies are read
//! ([`BodyBudget`]: the ingress and the gate read their bodies through it; the console's routes sit
//! behind [`bounded_bodies`]). Each cut is counted, by reason, in the server's counter. Every
//! request carries its peer's address (`ConnectInfo<SocketAddr>`) for logs that need a client.
//!
//! hyper's own `header_read_timeout` starts when hyper waits for a request head, which is also
//! the whole idle time of a keep-alive connection, so it cannot keep the two timeouts apart; the
//! connection's I/O wrapper does, with one tokio timer per connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::task::AtomicWaker;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// One check of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Ok,
    /// Not ready, and why.
    NotReady(String),
    /// Ready, but running short of what it should have (said, not failed).
    Degraded(String),
}

impl Check {
    /// `Ok` when `ok`, else not ready for `why`.
    pub fn from(ok: bool, why: &str) -> Check {
        match ok {
            true => Check::Ok,
            false => Check::NotReady(why.to_owned()),
        }
    }
}

/// What `/readyz` asks: named checks.
pub type Readiness = Arc<dyn Fn() -> Vec<(&'static str, Check)> + Send + Sync>;

/// `/healthz` (the process answers), `/readyz` (no check is not ready; the body names each and
/// says why), `/metrics` (Prometheus).
pub fn admin_routes(ready: Readiness) -> Router {
    probe_routes(ready).route(
        "/metrics",
        get(|| async {
            (
                [("content-type", "text/plain; version=0.0.4")],
                crate::runtime::metrics::render(),
            )
                .into_response()
        }),
    )
}

/// `/healthz` and `/readyz` alone: what a public address serves beside its own routes (a load
/// balancer's probes); `/metrics` is for the admin address only.
pub fn probe_routes(ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    let checks = ready();
                    let body: String = checks
                        .iter()
                        .map(|(name, check)| match check {
                            Check::Ok => format!("{name}: ok\n"),
                            Check::NotReady(why) => format!("{name}: not ready ({why})\n"),
                            Check::Degraded(why) => format!("{name}: degraded ({why})\n"),
                        })
                        .collect();
                    let ready = checks.iter().all(|(_, c)| !matches!(c, Check::NotReady(_)));
                    let status = match ready {
                        true => StatusCode::OK,
                        false => StatusCode::SERVICE_UNAVAILABLE,
                    };
                    (status, body)
                }
            }),
        )
}

/// The connection limits of docs/contract.md ("Configuration"), and where a server counts what it cuts.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// The counter that cuts are added to (label `result="cut"`, `reason`).
    pub counter: &'static str,
}

impl Limits {
    pub fn new(config: &crate::runtime::config::Config, counter: &'static str) -> Self {
        Limits {
            header_timeout: config.http.header_timeout,
            idle_timeout: config.http.idle_timeout,
            max_connections: config.http.max_connections,
            counter,
        }
    }

    fn cut(&self, reason: &'static str) {
        metrics::counter!(self.counter, "result" => "cut", "reason" => reason).increment(1);
    }
}

/// Binds `addr` (port 0 picks one) and serves until `stop` is cancelled (requests in flight
/// finish); returns the bound address and the serving task.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
) -> io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(accept(listener, router, Arc::new(limits), stop));
    Ok((bound, task))
}

async fn accept(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Arc<Limits>,
    stop: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    // The Deadline below keeps the header and idle timeouts; hyper's own would merge them.
    http.timer(TokioTimer::new()).header_read_timeout(None);
    let open = metrics::gauge!(crate::runtime::metrics::CONNECTIONS, "server" => limits.counter);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            limits.cut("max_connections");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let phase = Arc::new(Phase::default());
        let io = TokioIo::new(Deadline::new(stream, phase.clone(), limits.clone()));
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            phase.begin();
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let phase = phase.clone();
            let answer = router.clone().oneshot(request);
            async move {
                let response = answer.await;
                phase.end();
                response
            }
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        let open = open.clone();
        open.increment(1.0);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            open.decrement(1.0);
        });
    }
    drop(listener);
    // Idle connections close at once; requests in flight are answered (bounded).
    let bound = Duration::from_secs(45);
    if tokio::time::timeout(bound, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open {bound:?} after shutdown began: dropped");
    }
}

/// Where a connection is between requests, written by its service and read by its I/O.
/// The low bits hold the state, the rest count changes, so every change is seen.
#[derive(Default)]
struct Phase {
    state: AtomicU32,
    /// The connection's reader, woken on every change: hyper may have polled the stream while
    /// the request was handled and wait for the socket alone, so the idle deadline must be
    /// armed by a wake-up, not by chance.
    reader: AtomicWaker,
}

// State 0: a new connection, no request yet.
const BUSY: u32 = 1;
const IDLE: u32 = 2;

impl Phase {
    fn set(&self, state: u32) {
        let now = self.state.load(Ordering::Acquire);
        self.state
            .store(((now >> 2).wrapping_add(1) << 2) | state, Ordering::Release);
        self.reader.wake();
    }
    /// A request's head has arrived: no read deadline while it is answered.
    fn begin(&self) {
        self.set(BUSY)
    }
    /// Its answer is ready: the connection may now sit idle, up to the idle timeout.
    fn end(&self) {
        self.set(IDLE)
    }
    fn get(&self) -> u32 {
        self.state.load(Ordering::Acquire)
    }
}

/// A connection's stream with its read deadline: header timeout from the connection's opening
/// and from a request's first byte, idle timeout after an answer, none while a request is handled.
struct Deadline {
    stream: TcpStream,
    phase: Arc<Phase>,
    seen: u32,
    limits: Arc<Limits>,
    timer: Pin<Box<Sleep>>,
    /// What the running timer cuts for (`None`: no deadline).
    armed: Option<&'static str>,
}

impl Deadline {
    fn new(stream: TcpStream, phase: Arc<Phase>, limits: Arc<Limits>) -> Self {
        let timer = Box::pin(tokio::time::sleep(limits.header_timeout));
        Deadline {
            stream,
            seen: phase.get(),
            phase,
            limits,
            timer,
            armed: Some("header_timeout"),
        }
    }

    fn arm(&mut self, reason: Option<&'static str>, after: Duration) {
        self.armed = reason;
        if reason.is_some() {
            self.timer.as_mut().reset(Instant::now() + after);
        }
    }

    /// Follows the service's phase, and a request's first bytes after an idle spell.
    fn follow(&mut self, read_bytes: bool) {
        let now = self.phase.get();
        if now != self.seen {
            self.seen = now;
            match now & 3 {
                BUSY => self.arm(None, Duration::ZERO),
                _ => self.arm(Some("idle_timeout"), self.limits.idle_timeout),
            }
        }
        if read_bytes && self.armed == Some("idle_timeout") {
            self.arm(Some("header_timeout"), self.limits.header_timeout);
        }
    }
}

impl AsyncRead for Deadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.follow(buf.filled().len() > before);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                this.phase.reader.register(cx.waker());
                this.follow(false);
                if let Some(reason) = this.armed {
                    if this.timer.as_mut().poll(cx).is_ready() {
                        this.armed = None;
                        this.limits.cut(reason);
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason)));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Deadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// `router` with every request's body read through `budget` before a handler sees it: the
/// declared length and the size checked first, the body timeout, the shared byte budget; a cut
/// answered as [`Refusal::response`] and counted in `counter` (`result="cut"`).
pub fn bounded_bodies(router: Router, budget: BodyBudget, counter: &'static str) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let budget = budget.clone();
            async move {
                let (parts, body) = request.into_parts();
                match budget.read(&parts.headers, body).await {
                    Ok(held) => {
                        let request = axum::extract::Request::from_parts(
                            parts,
                            Body::from(held.bytes.clone()),
                        );
                        let response = next.run(request).await;
                        // The body's share of the budget is held until it is answered.
                        drop(held);
                        response
                    }
                    Err(refusal) => {
                        metrics::counter!(counter, "result" => "cut", "reason" => refusal.reason())
                            .increment(1);
                        refusal.response()
                    }
                }
            }
        },
    ))
}

/// Request bodies in memory, all connections together, and how long one may take to arrive.
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    max_body: usize,
    timeout: Duration,
}

/// A body read in full, holding its share of the budget until dropped.
pub struct HeldBody {
    pub bytes: Bytes,
    _share: Option<OwnedSemaphorePermit>,
}

/// Why a body was not read; each answers with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than `max_body`: 413.
    TooLarge,
    /// Would pass the budget of bytes held at once: 503 at once.
    BufferFull,
    /// Not complete within the body timeout: 408, and the connection closes.
    Timeout,
    /// The client broke off or sent a malformed body: 400.
    Unreadable,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::TooLarge => "too_large",
            Refusal::BufferFull => "buffer_full",
            Refusal::Timeout => "body_timeout",
            Refusal::Unreadable => "unreadable_body",
        }
    }

    /// The answer; the connection is closed after it, since the body was not read to its end.
    pub fn response(self) -> axum::response::Response {
        let status = match self {
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BufferFull => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Timeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::Unreadable => StatusCode::BAD_REQUEST,
        };
        (status, [(header::CONNECTION, "close")]).into_response()
    }
}

impl BodyBudget {
    pub fn new(max_buffered_bytes: usize, max_body: usize, timeout: Duration) -> Self {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(max_buffered_bytes)),
            max_body,
            timeout,
        }
    }

    /// Takes `n` bytes of the budget, or refuses at once.
    fn take(&self, n: usize, into: &mut Option<OwnedSemaphorePermit>) -> Result<(), Refusal> {
        if n == 0 {
            return Ok(());
        }
        let n = u32::try_from(n).map_err(|_| Refusal::TooLarge)?;
        let share = self
            .bytes
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| Refusal::BufferFull)?;
        match into {
            Some(held) => held.merge(share),
            None => *into = Some(share),
        }
        Ok(())
    }

    /// Reads a body in full within the limits. A declared length is reserved before any byte is
    /// read; a body without one takes its share frame by frame.
    pub async fn read(&self, headers: &HeaderMap, body: Body) -> Result<HeldBody, Refusal> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut share = None;
        if let Some(n) = declared {
            if n > self.max_body {
                return Err(Refusal::TooLarge);
            }
            self.take(n, &mut share)?;
        }
        let reading = async {
            let mut body = body;
            let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(64 << 10));
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| Refusal::Unreadable)?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if bytes.len() + data.len() > self.max_body {
                    return Err(Refusal::TooLarge);
                }
                if declared.is_none() {
                    self.take(data.len(), &mut share)?;
                }
                bytes.extend_from_slice(&data);
            }
            Ok(bytes)
        };
        match tokio::time::timeout(self.timeout, reading).await {
            Ok(Ok(bytes)) => Ok(HeldBody {
                bytes: Bytes::from(bytes),
                _share: share,
            }),
            Ok(Err(refusal)) => Err(refusal),
            Err(_) => Err(Refusal::Timeout),
        }
    }
}
