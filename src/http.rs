//! HTTP plumbing shared by the ingress and the worker's admin address: health, readiness,
//! metrics, and serving with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use tokio_util::sync::CancellationToken;

/// What `/readyz` asks: named checks, each true when ready.
pub type Readiness = Arc<dyn Fn() -> Vec<(&'static str, bool)> + Send + Sync>;

/// `/healthz` (the process answers), `/readyz` (every check passes), `/metrics` (Prometheus).
pub fn admin_routes(ready: Readiness) -> Router {
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
                        .map(|(name, ok)| {
                            format!("{name}: {}\n", if *ok { "ok" } else { "not ready" })
                        })
                        .collect();
                    let status = if checks.iter().all(|(_, ok)| *ok) {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, body)
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    crate::metrics::render(),
                )
                    .into_response()
            }),
        )
}

/// Binds `addr` (port 0 picks one) and serves until `stop` is cancelled (requests in flight
/// finish); returns the bound address and the serving task.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    Ok((bound, task))
}
