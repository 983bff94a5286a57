//! `coexist process`: webhook bodies through the engine offline, no servers.

use std::path::PathBuf;
use std::sync::Arc;

use coexist::runtime::config::Config;

use super::{failed, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// `json`: one JSON line per event ({"exchange", "routing_key", "event"}); `summary`: one
    /// aligned, readable line per event (exchange, type, customer, text or detail).
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    format: OutputFormat,
    /// Say why beside each event, as `conversation explain` does (JSON: a `why` field; summary:
    /// a line under the events of each decision).
    #[arg(long)]
    explain: bool,
    /// Webhook bodies (.json: one body; .jsonl: one per line).
    files: Vec<PathBuf>,
}

/// How `process` prints events.
#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Json,
    Summary,
}

pub async fn run(args: Args, config: Config) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let format = match args.format {
        OutputFormat::Json => coexist::tools::process::Format::Json,
        OutputFormat::Summary => coexist::tools::process::Format::Summary,
    };
    coexist::tools::process::run(
        Arc::new(config.rules),
        format,
        args.explain,
        &args.files,
        &mut out,
    )
    .await
    .map_err(|e| failed(&e))
}
