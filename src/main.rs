//! The `coexist` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use coexist::config::{Config, LogFormat};
use coexist::domain::{valid_phone_number_id, CustomerKey, Scope};
use coexist::engine::OperatorAction;
use coexist::store::redis::RedisStore;
use coexist::store::Engine;
use coexist::time::Millis;

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
    /// HTTP ingress: verifies Meta's webhooks and publishes them to RabbitMQ. [not built yet]
    Ingress,
    /// Consumes the inbound partitions, decides, publishes events. [not built yet]
    Worker,
    /// Ingress and a worker in one process. [not built yet]
    Serve,
    /// Runs webhook bodies through the engine offline (in-memory state, no servers) and prints
    /// one JSON line per event it would publish.
    ///
    /// Each FILE is one JSON body, or JSON lines with one body per line; stdin when no FILE is
    /// named. The clock is the items' own timestamps, so a run is deterministic. Stops with a
    /// message and exit code 1 at the first body that is not a webhook, after printing the
    /// events of every body before it.
    Process {
        /// Webhook bodies (.json: one body; .jsonl: one per line).
        files: Vec<PathBuf>,
    },
    /// Operator view and control of one conversation (state in Redis).
    #[command(subcommand)]
    Conversation(ConversationCommand),
    /// Dead-lettered input. [not built yet]
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Declares exchanges and queues (idempotent). [not built yet]
    Topology,
}

#[derive(Subcommand)]
enum ConversationCommand {
    /// Prints the conversation's state as JSON: paused until, session, handler.
    Show(ConversationArgs),
    /// Pauses the AI agent for the customer, as a human reply would (R4 without a message).
    Pause(ConversationArgs),
    /// Hands the customer back to the AI agent, as the reset command would (reason: operator).
    Release(ConversationArgs),
}

#[derive(clap::Args)]
struct ConversationArgs {
    /// The business number's phone_number_id.
    phone_number_id: String,
    /// The customer: a phone number (any punctuation) or a business-scoped user id.
    customer: String,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Lists dead-lettered input: id, reason, attempts, age.
    List,
    /// Sends dead-lettered input back through the pipeline.
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn not_built(what: &str) -> Result<(), Failure> {
    Err(Failure(format!("`coexist {what}` is not built yet: it arrives with the pipeline (issue #3); `coexist process` runs the engine offline"), 2))
}

async fn run(command: Command, config: Config) -> Result<(), Failure> {
    match command {
        Command::Ingress => not_built("ingress"),
        Command::Worker => not_built("worker"),
        Command::Serve => not_built("serve"),
        Command::Topology => not_built("topology"),
        Command::Dlq(DlqCommand::List) => not_built("dlq list"),
        Command::Dlq(DlqCommand::Replay { .. }) => not_built("dlq replay"),
        Command::Process { files } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            coexist::process::run(Arc::new(config.rules), &files, &mut out).await.map_err(|e| Failure(e.to_string(), 1))
        }
        Command::Conversation(c) => conversation(c, config).await,
    }
}

async fn conversation(command: ConversationCommand, config: Config) -> Result<(), Failure> {
    let (args, action) = match &command {
        ConversationCommand::Show(a) => (a, None),
        ConversationCommand::Pause(a) => (a, Some(OperatorAction::Pause)),
        ConversationCommand::Release(a) => (a, Some(OperatorAction::Release)),
    };
    if !valid_phone_number_id(&args.phone_number_id) {
        return Err(Failure(format!("{:?} is not a phone_number_id", args.phone_number_id), 2));
    }
    let Some(customer) = CustomerKey::parse(&args.customer) else {
        return Err(Failure(format!("{:?} is neither a phone number nor a business-scoped user id", args.customer), 2));
    };
    let scope = Scope::conversation(&args.phone_number_id, customer);
    let store = RedisStore::connect(config.redis_url.expose(), &config.namespace)
        .await
        .map_err(|e| Failure(format!("cannot reach Redis: {e}"), 1))?;
    let now = Millis::now();
    let redis_failed = |e: coexist::store::Error| Failure(e.to_string(), 1);
    match action {
        None => {
            let view = coexist::operator::show(&store, &scope, now).await.map_err(redis_failed)?;
            println!("{}", serde_json::to_string_pretty(&view).expect("views serialise"));
        }
        Some(action) => {
            let engine = Engine::new(store, Arc::new(config.rules));
            let applied = coexist::operator::command(&engine, scope.clone(), action, now).await.map_err(redis_failed)?;
            for e in &applied.events {
                println!("{}", e.to_line());
            }
            engine.acknowledge(&applied).await.map_err(redis_failed)?;
            if !applied.events.is_empty() {
                eprintln!("coexist: events printed, not published: publishing arrives with the pipeline (issue #3)");
            }
            let view = coexist::operator::show(engine.store(), &scope, now).await.map_err(redis_failed)?;
            eprintln!("{}", serde_json::to_string(&view).expect("views serialise"));
        }
    }
    Ok(())
}
