//! The `coexist` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use coexist::config::{Config, LogFormat};
use coexist::domain::{valid_phone_number_id, CustomerKey, Scope};
use coexist::engine::OperatorAction;
use coexist::operator;
use coexist::supervise::Ended;
use coexist::time::Millis;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

/// Run the WhatsApp Business App (people) and a Cloud API AI agent on one number without the two
/// talking over each other.
///
/// A human's reply from the App pauses the AI agent for that customer; the reset command
/// (default /reset) or the timeout (default 7d) hands the customer back. Configuration:
/// built-in defaults (config/default.toml), then --config FILE, then COEXIST_* variables.
#[derive(Parser)]
#[command(name = "coexist", version, propagate_version = true)]
struct Cli {
    /// A TOML file holding any subset of the configuration keys.
    #[arg(long, global = true, env = "COEXIST_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// HTTP ingress: GET /webhook (Meta's handshake), POST /webhook (signed webhooks, answered 200
    /// once the broker confirmed them), /healthz, /readyz, /metrics. Needs COEXIST_APP_SECRET.
    Ingress,
    /// Consumes its share of the inbound partitions, decides with the state in Redis, publishes
    /// events to {ns}.bot and {ns}.human_chat; /healthz, /readyz, /metrics on the admin address.
    Worker,
    /// Ingress, a worker and the reply gate in one process (small deployments, local use).
    Serve,
    /// The reply gate: the AI agent sends its WhatsApp messages through it (its Graph API base
    /// URL set to the gate's address) and it refuses every reply while a human holds the
    /// conversation (409), forwarding the rest to COEXIST_GRAPH_URL as they came.
    ///
    /// POST /{version}/{phone_number_id}/messages (header X-Coexist-Reply-Token: the
    /// reply_token of the message answered); GET /v1/conversations/{phone_number_id}/{customer};
    /// /healthz, /readyz, /metrics. On COEXIST_GATE_LISTEN; COEXIST_GATE_TOKEN required on a
    /// non-loopback address.
    Gate,
    /// The operator console: a web page for the people who run the number (who is with a human
    /// now, pause/release/extend, live events, dead letters), on COEXIST_CONSOLE_LISTEN. Needs
    /// COEXIST_CONSOLE_TOKEN (name:token pairs); `serve` runs it too when the token is set.
    Console,
    /// Runs webhook bodies through the engine offline (in-memory state, no servers) and prints
    /// one JSON line per event it would publish.
    ///
    /// Each FILE is one JSON body, or JSON lines with one body per line; stdin when no FILE is
    /// named. The clock is the items' own timestamps, so a run is deterministic. Stops with a
    /// message and exit code 1 at the first body that is not a webhook, after printing the
    /// events of every body before it.
    Process {
        /// `json`: one JSON line per event ({"exchange", "routing_key", "event"}); `summary`: one
        /// aligned, readable line per event (exchange, type, customer, text or detail).
        #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
        format: OutputFormat,
        /// Webhook bodies (.json: one body; .jsonl: one per line).
        files: Vec<PathBuf>,
    },
    /// Operator view and control of one conversation (state in Redis).
    #[command(subcommand)]
    Conversation(ConversationCommand),
    /// Dead-lettered input ({ns}.dead): inspect and replay.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Declares exchanges and queues (idempotent; ingress and worker also do it at start).
    Topology,
    /// Signs each webhook body with the first app secret (COEXIST_APP_SECRET) and POSTs it, as
    /// Meta does; retries 503 and connection errors with backoff (at most 8 attempts); prints
    /// each answer. Exits 1 if any body was finally refused, naming the answer.
    Send {
        /// Where to post (plain HTTP). Default: http://{listen}/webhook.
        #[arg(long)]
        url: Option<String>,
        /// Move the bodies' timestamps so that the latest is now, keeping the gaps between them
        /// (a live deployment's clock is the wall clock; a story written once is otherwise old).
        #[arg(long)]
        now: bool,
        /// Webhook bodies: a file holds one JSON body, or JSON lines with one body per line.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Shows the events as they are published, through a temporary queue of its own (it never
    /// takes events from the default queues): one readable line each (time, exchange, type,
    /// customer, text or detail), or with --json each event body as one JSON line. Ctrl-C ends it.
    Tail {
        /// Only this exchange (default: both).
        #[arg(long, value_enum)]
        exchange: Option<ExchangeArg>,
        /// Only this conversation: PHONE_NUMBER_ID:CUSTOMER (the customer by any of its names).
        #[arg(long, value_name = "PNID:CUSTOMER")]
        conversation: Option<String>,
        /// Each event body as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Prints the JSON Schema (draft 2020-12) of every event body: one oneOf branch per type.
    /// docs/events.schema.json is its output.
    Schema,
    /// Prints the AsyncAPI 3.0 document of the exchanges, queues and events (AMQP 0-9-1
    /// bindings; payloads from the same types as `schema`). docs/asyncapi.yaml is its output.
    Asyncapi,
}

/// An exchange to follow.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ExchangeArg {
    Bot,
    HumanChat,
}

/// How `process` prints events.
#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Json,
    Summary,
}

#[derive(Subcommand)]
enum ConversationCommand {
    /// Lists the conversations whose AI agent is paused now, soonest release first: number,
    /// customer, paused until, time left, trigger message (read from the deadline set and the
    /// pause keys, never a scan of the keyspace).
    List {
        /// One JSON object per line: phone_number_id, customer, paused_until, trigger_message_id.
        #[arg(long)]
        json: bool,
    },
    /// Prints the conversation's state as JSON: paused until, session, handler, and every name the
    /// customer is known by (any of them finds the conversation).
    Show(ConversationArgs),
    /// Pauses the AI agent for the customer, as a human reply would (R4 without a message).
    Pause {
        #[command(flatten)]
        conversation: ConversationArgs,
        /// How long (e.g. 30m, 2h, 7d). Default: the coexistence timeout.
        #[arg(long = "for", value_name = "DURATION", value_parser = duration)]
        duration: Option<std::time::Duration>,
        /// Who pauses it, recorded as `by.name`. Default: the login name.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
    /// Hands the customer back to the AI agent, as the reset command would (reason: operator).
    Release {
        #[command(flatten)]
        conversation: ConversationArgs,
        /// Who releases it, recorded as `by.name`. Default: the login name.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
}

/// A duration written like 30s, 15m, 24h, 7d (longer than zero).
fn duration(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".into()),
        Err(_) => Err(format!("{s:?} is not a duration (write e.g. 30m, 2h, 7d)")),
    }
}

/// The login name, for `--by` left out.
fn login_name() -> Option<String> {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok())
        .filter(|n| !n.trim().is_empty())
}

#[derive(clap::Args)]
struct ConversationArgs {
    /// The business number's phone_number_id.
    phone_number_id: String,
    /// The customer: a phone number (any punctuation) or a business-scoped user id; any of a
    /// customer's linked names names their conversation.
    customer: String,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Lists dead-lettered input: id, reason, attempts, age.
    List,
    /// Sends dead-lettered input back through the pipeline; it is decided again against the
    /// conversation's state at that time.
    Replay {
        /// Replay at most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// A failure that ends the command: its one-line message and exit code.
struct Failure(String, u8);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => return fail(Failure(e.to_string(), 2)),
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(Failure(format!("cannot start the runtime: {e}"), 1)),
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(f),
    }
}

fn fail(Failure(message, code): Failure) -> ExitCode {
    eprintln!("coexist: {message}");
    ExitCode::from(code)
}

fn init_logging(config: &Config) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Resolves on SIGTERM or SIGINT.
async fn signalled() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// How long a stopping process may take to finish what it holds.
const STOP_BUDGET: std::time::Duration = std::time::Duration::from_secs(9);

async fn run(command: Command, config: Config) -> Result<(), Failure> {
    let failed = |e: &dyn std::fmt::Display| Failure(e.to_string(), 1);
    let topology = coexist::broker::Topology::new(&config.namespace, config.partitions);
    match command {
        Command::Ingress => services(config, Services::INGRESS).await,
        Command::Worker => services(config, Services::WORKER).await,
        Command::Gate => services(config, Services::GATE).await,
        Command::Console => services(config, Services::CONSOLE).await,
        Command::Serve => services(config, Services::ALL).await,
        Command::Topology => {
            coexist::broker::declare(config.amqp_url.expose(), &topology)
                .await
                .map_err(|e| failed(&e))?;
            print!("{}", topology.describe());
            Ok(())
        }
        Command::Dlq(DlqCommand::List) => {
            let entries = coexist::dlq::list(config.amqp_url.expose(), &topology)
                .await
                .map_err(|e| failed(&e))?;
            print!("{}", coexist::dlq::table(&entries));
            eprintln!("{} dead letter(s) in {}", entries.len(), topology.dead());
            Ok(())
        }
        Command::Dlq(DlqCommand::Replay { limit }) => {
            // Counts as it goes, on stderr: one line rewritten in place on a terminal, a line per
            // hundred letters otherwise.
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let progress = |r: &coexist::dlq::Replayed, total: usize| {
                let line = format!(
                    "replayed {}/{total}: {} unit(s) sent back, {} parked again",
                    r.replayed, r.units, r.parked_again
                );
                if terminal {
                    eprint!("\r{line}");
                } else if r.replayed % 100 == 0 || r.replayed == total {
                    eprintln!("{line}");
                }
            };
            let url = config.amqp_url.expose();
            let r = coexist::dlq::replay(url, &topology, limit, progress)
                .await
                .map_err(|e| failed(&e))?;
            if terminal {
                eprintln!();
            }
            println!("{}", serde_json::to_string(&r).expect("serialises"));
            Ok(())
        }
        Command::Process { format, files } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let format = match format {
                OutputFormat::Json => coexist::process::Format::Json,
                OutputFormat::Summary => coexist::process::Format::Summary,
            };
            coexist::process::run(Arc::new(config.rules), format, &files, &mut out)
                .await
                .map_err(|e| failed(&e))
        }
        Command::Conversation(c) => conversation(c, config).await,
        Command::Tail {
            exchange,
            conversation,
            json,
        } => {
            use coexist::engine::event::Exchange;
            let exchanges = match exchange {
                Some(ExchangeArg::Bot) => vec![Exchange::Bot],
                Some(ExchangeArg::HumanChat) => vec![Exchange::HumanChat],
                None => vec![Exchange::Bot, Exchange::HumanChat],
            };
            let conversation = match conversation {
                None => None,
                Some(c) => Some(
                    Scope::parse(c.trim())
                        .filter(|s| s.customer.is_some())
                        .ok_or_else(|| {
                            Failure(
                                format!("--conversation {c:?}: expected PHONE_NUMBER_ID:CUSTOMER"),
                                2,
                            )
                        })?,
                ),
            };
            let options = coexist::tail::Options {
                exchanges,
                conversation,
                json,
            };
            let stop = CancellationToken::new();
            let on_signal = stop.clone();
            tokio::spawn(async move {
                signalled().await;
                on_signal.cancel();
            });
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let ready = |from: &str| eprintln!("following {from} (Ctrl-C ends)");
            let url = config.amqp_url.expose();
            let shown = coexist::tail::run(url, &topology, &options, stop, ready, &mut out)
                .await
                .map_err(|e| failed(&e))?;
            eprintln!("{shown} event(s) shown");
            Ok(())
        }
        Command::Send { url, now, files } => {
            let Some(secret) = config.app_secrets.first() else {
                return Err(Failure(
                    "config: app_secret: send signs with Meta's app secret (COEXIST_APP_SECRET)"
                        .into(),
                    2,
                ));
            };
            let url = url.unwrap_or_else(|| format!("http://{}/webhook", config.listen));
            let mut bodies = Vec::new();
            for path in &files {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Failure(format!("{name}: {e}"), 1))?;
                let source = coexist::process::Source { name, text };
                for (name, body) in coexist::process::bodies(&source) {
                    bodies.push((name, body.to_owned()));
                }
            }
            if now {
                coexist::send::shift_to_now(&mut bodies, Millis::now().0 / 1000);
            }
            let stdout = std::io::stdout();
            let refused = coexist::send::send(&url, secret, &bodies, &mut stdout.lock())
                .await
                .map_err(|e| Failure(e.to_string(), 2))?;
            match refused.first() {
                None => Ok(()),
                Some((name, answer)) => Err(Failure(
                    format!(
                        "{} of {} body(ies) refused; first: {name}: {answer}",
                        refused.len(),
                        bodies.len()
                    ),
                    1,
                )),
            }
        }
        Command::Asyncapi => {
            print!(
                "{}",
                coexist::asyncapi::yaml(&coexist::asyncapi::document())
            );
            Ok(())
        }
        Command::Schema => {
            let schema = coexist::engine::event::schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("serialises")
            );
            Ok(())
        }
    }
}

/// Which services a process runs.
#[derive(Clone, Copy)]
struct Services {
    ingress: bool,
    worker: bool,
    gate: bool,
    console: bool,
}

impl Services {
    const NONE: Services = Services {
        ingress: false,
        worker: false,
        gate: false,
        console: false,
    };
    const INGRESS: Services = Services {
        ingress: true,
        ..Services::NONE
    };
    const WORKER: Services = Services {
        worker: true,
        ..Services::NONE
    };
    const GATE: Services = Services {
        gate: true,
        ..Services::NONE
    };
    const CONSOLE: Services = Services {
        console: true,
        ..Services::NONE
    };
    /// `serve`: all of them, the console when its token is set.
    const ALL: Services = Services {
        ingress: true,
        worker: true,
        gate: true,
        console: true,
    };
}

/// Runs the services asked for until SIGTERM or SIGINT, then stops them gracefully.
async fn services(config: Config, run: Services) -> Result<(), Failure> {
    if run.ingress && config.app_secrets.is_empty() {
        return Err(Failure(
            "config: app_secret: the ingress needs Meta's app secret (COEXIST_APP_SECRET)".into(),
            2,
        ));
    }
    if run.gate {
        coexist::gate::check(&config).map_err(|e| Failure(e, 2))?;
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
    coexist::trace::init(role).map_err(|e| Failure(e.to_string(), 2))?;
    // `serve` runs the console only when its token is set; `console` refuses without one.
    let run = Services {
        console: run.console && (!run.ingress || !config.console.operators.is_empty()),
        ..run
    };
    if run.console {
        coexist::console::check(&config).map_err(|e| Failure(e, 2))?;
    }
    let io = |what: &'static str| move |e: std::io::Error| Failure(format!("{what}: {e}"), 1);
    let shutdown = CancellationToken::new();
    // Each service resolves when it has stopped: on shutdown, or because one of its tasks ended
    // by itself (then the whole process stops, non-zero).
    let mut running: FuturesUnordered<Stopping> = FuturesUnordered::new();
    if run.ingress {
        let ingress = coexist::ingress::start(&config, &shutdown)
            .await
            .map_err(io("cannot start the ingress"))?;
        running.push(Box::pin(ingress.stopped()));
    }
    if run.gate {
        let gate = coexist::gate::start(&config, &shutdown)
            .await
            .map_err(io("cannot start the reply gate"))?;
        running.push(Box::pin(gate.stopped()));
    }
    if run.console {
        let console = coexist::console::start(&config, &shutdown)
            .await
            .map_err(io("cannot start the console"))?;
        running.push(Box::pin(console.stopped()));
    }
    if run.worker {
        let options = coexist::worker::Options {
            fault: injected_fault(),
            ..Default::default()
        };
        let worker = coexist::worker::start_with(&config, &shutdown, options)
            .await
            .map_err(io("cannot start the worker"))?;
        running.push(Box::pin(worker.stopped()));
    }
    let failed = tokio::select! {
        () = signalled() => None,
        Some(stopped) = running.next() => Some(stopped.err().unwrap_or_else(|| Ended {
            name: "service",
            how: "stopped by itself".into(),
        })),
    };
    tracing::info!("stopping");
    shutdown.cancel();
    let stopping = async { while running.next().await.is_some() {} };
    if tokio::time::timeout(STOP_BUDGET, stopping).await.is_err() {
        tracing::warn!("did not finish within {STOP_BUDGET:?}; exiting (unacknowledged work is delivered again)");
    }
    coexist::trace::flush();
    match failed {
        None => Ok(()),
        Some(ended) => Err(Failure(ended.to_string(), 1)),
    }
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

async fn conversation(command: ConversationCommand, config: Config) -> Result<(), Failure> {
    let failed = |e: operator::Error| Failure(e.to_string(), 1);
    let (args, action) = match &command {
        ConversationCommand::List { json } => {
            let store = operator::store(&config).await.map_err(failed)?;
            let paused = operator::list(&store, Millis::now())
                .await
                .map_err(|e| failed(e.into()))?;
            match json {
                true => {
                    for p in &paused {
                        println!("{}", serde_json::to_string(p).expect("serialises"));
                    }
                }
                false => print!("{}", operator::table(&paused)),
            }
            eprintln!("{} conversation(s) with a human", paused.len());
            return Ok(());
        }
        ConversationCommand::Show(a) => (a, None),
        ConversationCommand::Pause {
            conversation,
            duration,
            by,
        } => (
            conversation,
            Some((
                OperatorAction::Pause,
                *duration,
                by.clone().or_else(login_name),
            )),
        ),
        ConversationCommand::Release { conversation, by } => (
            conversation,
            Some((
                OperatorAction::Release,
                None,
                by.clone().or_else(login_name),
            )),
        ),
    };
    if !valid_phone_number_id(&args.phone_number_id) {
        return Err(Failure(
            format!("{:?} is not a phone_number_id", args.phone_number_id),
            2,
        ));
    }
    let Some(customer) = CustomerKey::parse(&args.customer) else {
        return Err(Failure(
            format!(
                "{:?} is neither a phone number nor a business-scoped user id",
                args.customer
            ),
            2,
        ));
    };
    let scope = Scope::conversation(&args.phone_number_id, customer);
    let now = Millis::now();
    match action {
        None => {
            let store = operator::store(&config).await.map_err(failed)?;
            let view = operator::show(&store, &scope, now)
                .await
                .map_err(|e| failed(e.into()))?;
            let json = serde_json::to_string_pretty(&view).expect("views serialise");
            println!("{json}");
        }
        Some(action) => {
            let (action, duration, by) = action;
            let command = operator::Command {
                scope,
                action,
                duration,
                by,
            };
            let done = operator::act(&config, command, now).await.map_err(failed)?;
            for e in &done.events {
                println!("{}", e.to_line());
            }
            let json = serde_json::to_string(&done.view).expect("views serialise");
            eprintln!("{json}");
        }
    }
    Ok(())
}
