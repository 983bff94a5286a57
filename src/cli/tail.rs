//! `coexist tail`: the events as they are published, through a queue of its own.

use coexist::adapters::broker::Topology;
use coexist::core::domain::Scope;
use coexist::core::engine::event::Exchange;
use coexist::runtime::config::Config;
use tokio_util::sync::CancellationToken;

use super::{failed, signalled, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// Only this exchange (default: both).
    #[arg(long, value_enum)]
    exchange: Option<ExchangeArg>,
    /// Only this conversation: PHONE_NUMBER_ID:CUSTOMER (the customer by any of its names).
    #[arg(long, value_name = "PNID:CUSTOMER")]
    conversation: Option<String>,
    /// Each event body as one JSON line.
    #[arg(long)]
    json: bool,
}

/// An exchange to follow.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ExchangeArg {
    Bot,
    /// As the contract spells it (`human-chat` is accepted too).
    #[value(name = "human_chat", alias = "human-chat")]
    HumanChat,
}

pub async fn run(args: Args, config: &Config) -> Result<(), Failure> {
    let exchanges = match args.exchange {
        Some(ExchangeArg::Bot) => vec![Exchange::Bot],
        Some(ExchangeArg::HumanChat) => vec![Exchange::HumanChat],
        None => vec![Exchange::Bot, Exchange::HumanChat],
    };
    let conversation = match args.conversation {
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
    let options = coexist::tools::tail::Options {
        exchanges,
        conversation,
        json: args.json,
    };
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        signalled().await;
        on_signal.cancel();
    });
    let topology = Topology::new(&config.namespace, config.partitions);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let ready = |from: &str| eprintln!("following {from} (Ctrl-C ends)");
    let url = config.amqp_url.expose();
    let shown = coexist::tools::tail::run(url, &topology, &options, stop, ready, &mut out)
        .await
        .map_err(|e| failed(&e))?;
    eprintln!("{shown} event(s) shown");
    Ok(())
}
