//! `coexist ingress|worker|gate|console|serve`: runs services until SIGTERM or SIGINT, then
//! stops them gracefully; the first that stops by itself stops the process, non-zero.

use coexist::runtime::config::Config;
use coexist::runtime::supervise::Ended;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use super::{signalled, Failure};

/// How long a stopping process may take to finish what it holds.
const STOP_BUDGET: std::time::Duration = std::time::Duration::from_secs(9);

/// Which services a process runs.
#[derive(Clone, Copy)]
pub struct Services {
    ingress: bool,
    worker: bool,
    gate: bool,
    console: bool,
}

impl Services {
    pub const NONE: Services = Services {
        ingress: false,
        worker: false,
        gate: false,
        console: false,
    };
    pub const INGRESS: Services = Services {
        ingress: true,
        ..Services::NONE
    };
    pub const WORKER: Services = Services {
        worker: true,
        ..Services::NONE
    };
    pub const GATE: Services = Services {
        gate: true,
        ..Services::NONE
    };
    pub const CONSOLE: Services = Services {
        console: true,
        ..Services::NONE
    };
    /// `serve`: all of them, the console when its token is set.
    pub const ALL: Services = Services {
        ingress: true,
        worker: true,
        gate: true,
        console: true,
    };
}

/// Runs the services asked for until SIGTERM or SIGINT, then stops them gracefully.
pub async fn run(config: Config, run: Services) -> Result<(), Failure> {
    if run.ingress && config.app_secrets.is_empty() {
        return Err(Failure(
            "config: app_secret: the ingress needs Meta's app secret (COEXIST_APP_SECRET)".into(),
            2,
        ));
    }
    if run.gate {
        coexist::services::gate::check(&config).map_err(|e| Failure(e, 2))?;
    }
    // Traces: exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT says where; `service.name` per
    // role unless OTEL_SERVICE_NAME says otherwise.
    let role = match (run.ingress, run.worker, run.gate) {
        (true, true, _) => "coexist-serve",
        (true, false, _) => "coexist-ingress",
        (false, true, _) => "coexist-worker",
        (false, false, true) => "coexist-gate",
        _ => "coexist-console",
    };
    coexist::runtime::trace::init(role).map_err(|e| Failure(e.to_string(), 2))?;
    // `serve` runs the console only when its token is set; `console` refuses without one.
    let run = Services {
        console: run.console && (!run.ingress || !config.console.operators.is_empty()),
        ..run
    };
    if run.console {
        coexist::services::console::check(&config).map_err(|e| Failure(e, 2))?;
    }
    let shutdown = CancellationToken::new();
    // Each service resolves when it has stopped: on shutdown, or because one of its tasks ended
    // by itself (then the whole process stops, non-zero).
    let mut running: FuturesUnordered<Stopping> = FuturesUnordered::new();
    if let Err(failure) = start(&config, run, &shutdown, &mut running).await {
        // What started before stops in order (its broker links closed) before the process exits.
        stop_all(&shutdown, &mut running).await;
        return Err(failure);
    }
    let failed = tokio::select! {
        () = signalled() => None,
        Some(stopped) = running.next() => Some(stopped.err().unwrap_or_else(|| Ended {
            name: "service",
            how: "stopped by itself".into(),
        })),
    };
    tracing::info!("stopping");
    stop_all(&shutdown, &mut running).await;
    coexist::runtime::trace::flush();
    match failed {
        None => Ok(()),
        Some(ended) => Err(Failure(ended.to_string(), 1)),
    }
}

/// Stops every running service and waits for them, at most [`STOP_BUDGET`].
async fn stop_all(shutdown: &CancellationToken, running: &mut FuturesUnordered<Stopping>) {
    shutdown.cancel();
    let stopping = async { while running.next().await.is_some() {} };
    if tokio::time::timeout(STOP_BUDGET, stopping).await.is_err() {
        tracing::warn!("did not finish within {STOP_BUDGET:?}; exiting (unacknowledged work is delivered again)");
    }
}

/// Starts the services asked for, each pushed onto `running` once started.
async fn start(
    config: &Config,
    run: Services,
    shutdown: &CancellationToken,
    running: &mut FuturesUnordered<Stopping>,
) -> Result<(), Failure> {
    let io = |what: &'static str| move |e: std::io::Error| Failure(format!("{what}: {e}"), 1);
    if run.ingress {
        // With a worker beside it, the worker's admin address serves the process's metrics.
        let ingress = coexist::services::ingress::start_with(config, shutdown, !run.worker)
            .await
            .map_err(io("cannot start the ingress"))?;
        running.push(Box::pin(ingress.stopped()));
    }
    if run.gate {
        let gate = coexist::services::gate::start(config, shutdown)
            .await
            .map_err(io("cannot start the reply gate"))?;
        running.push(Box::pin(gate.stopped()));
    }
    if run.console {
        let console = coexist::services::console::start(config, shutdown)
            .await
            .map_err(io("cannot start the console"))?;
        running.push(Box::pin(console.stopped()));
    }
    if run.worker {
        let options = coexist::services::worker::Options {
            fault: injected_fault(),
            ..Default::default()
        };
        let worker = coexist::services::worker::start_with(config, shutdown, options)
            .await
            .map_err(io("cannot start the worker"))?;
        running.push(Box::pin(worker.stopped()));
    }
    Ok(())
}

/// A running service, resolving when it has stopped.
type Stopping = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Ended>> + Send>>;

/// The fault to inject into a worker's task (`COEXIST_FAULT=<task name>`): debug builds only,
/// for the tests of supervision.
fn injected_fault() -> Option<String> {
    if cfg!(debug_assertions) {
        std::env::var("COEXIST_FAULT")
            .ok()
            .filter(|f| !f.is_empty())
    } else {
        None
    }
}
