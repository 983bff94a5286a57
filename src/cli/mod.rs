//! The `coexist` command line: the commands and what they share (configuration, logging, the
//! one-line failure). Each subcommand is a file of its own with its arguments:
//! [`serve`] (ingress, worker, gate, console, serve), [`process`], [`conversation`], [`dlq`],
//! [`tail`], [`send`] and [`docs`] (schema, asyncapi, topology).

mod conversation;
mod dlq;
mod docs;
mod number;
mod partitions;
mod process;
mod send;
mod serve;
mod tail;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coexist::runtime::config::{Config, LogFormat};

use serve::Services;

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
    Process(process::Args),
    /// Operator view and control of one conversation (state in Redis).
    #[command(subcommand)]
    Conversation(conversation::Command),
    /// The business numbers coexist serves: list, show, add, remove, and their settings changed
    /// at runtime (set, unset) without a restart.
    #[command(subcommand)]
    Number(number::Command),
    /// Dead-lettered input ({ns}.dead): inspect and replay.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// Declares exchanges and queues and lays out the partitions in force again, unless a change
    /// of their count is in progress (idempotent; the ingress and workers lay them out at start).
    Topology,
    /// The partition count in force and a change in progress; `set N` changes it online.
    #[command(subcommand)]
    Partitions(partitions::Command),
    /// Signs each webhook body with the first app secret (COEXIST_APP_SECRET) and POSTs it, as
    /// Meta does; retries 503 and connection errors with backoff (at most 8 attempts); prints
    /// each answer. Exits 1 if any body was finally refused, naming the answer.
    Send(send::Args),
    /// Shows the events as they are published, through a temporary queue of its own (it never
    /// takes events from the default queues): one readable line each (time, exchange, type,
    /// customer, text or detail), or with --json each event body as one JSON line. Ctrl-C ends it.
    Tail(tail::Args),
    /// Prints the JSON Schema (draft 2020-12) of every event body: one oneOf branch per type.
    /// docs/events.schema.json is its output.
    Schema,
    /// Prints the AsyncAPI 3.0 document of the exchanges, queues and events (AMQP 0-9-1
    /// bindings; payloads from the same types as `schema`). docs/asyncapi.yaml is its output.
    Asyncapi,
    /// Prints the OpenAPI 3.1 document of the reply gate and the admin API (/api/v1 on the
    /// console process). docs/openapi.yaml is its output.
    Openapi,
}

/// A failure that ends the command: its one-line message and exit code.
pub struct Failure(pub String, pub u8);

pub fn main() -> ExitCode {
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
    // An exit code that is an answer (`partitions show` during a change) says nothing more.
    if !message.is_empty() {
        eprintln!("coexist: {message}");
    }
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

async fn run(command: Command, config: Config) -> Result<(), Failure> {
    match command {
        Command::Ingress => serve::run(config, Services::INGRESS).await,
        Command::Worker => serve::run(config, Services::WORKER).await,
        Command::Gate => serve::run(config, Services::GATE).await,
        Command::Console => serve::run(config, Services::CONSOLE).await,
        Command::Serve => serve::run(config, Services::ALL).await,
        Command::Topology => docs::topology(&config).await,
        Command::Partitions(c) => partitions::run(c, &config).await,
        Command::Dlq(c) => dlq::run(c, &config).await,
        Command::Process(args) => process::run(args, config).await,
        Command::Conversation(c) => conversation::run(c, config).await,
        Command::Number(c) => number::run(c, config).await,
        Command::Tail(args) => tail::run(args, &config).await,
        Command::Send(args) => send::run(args, &config).await,
        Command::Asyncapi => docs::asyncapi(),
        Command::Openapi => docs::openapi(),
        Command::Schema => docs::schema(),
    }
}

/// A failure's one line, from anything displayable, with exit code 1.
fn failed(e: &dyn std::fmt::Display) -> Failure {
    Failure(e.to_string(), 1)
}
