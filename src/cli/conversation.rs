//! `coexist conversation list|show|explain|pause|release`: one conversation seen and controlled by an
//! operator.

use coexist::core::domain::{numeric_phone_number_id, CustomerKey, Scope};
use coexist::core::engine::OperatorAction;
use coexist::core::time::Millis;
use coexist::runtime::config::Config;
use coexist::tools::operator;

use super::Failure;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Lists the conversations whose AI agent is paused now, soonest release first: number,
    /// customer, paused until, time left, trigger message (read from the deadline set and the
    /// pause keys, never a scan of the keyspace).
    List {
        /// One JSON object per line: phone_number_id, customer, paused_until, trigger_message_id.
        #[arg(long)]
        json: bool,
        /// Show at most this many (default: all, read a page at a time).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Prints the conversation's state as JSON: paused until, session, handler, and every name the
    /// customer is known by (any of them finds the conversation).
    Show(ConversationArgs),
    /// Why: the conversation's latest decisions, each in one sentence (what the rule was and
    /// where the message went), its state now, and what happens on the customer's next message.
    Explain {
        #[command(flatten)]
        conversation: ConversationArgs,
        /// JSON: the state (as show), `trail` and `next_message`.
        #[arg(long)]
        json: bool,
    },
    /// Pauses the AI agent for the customer, as a human reply would (R4 without a message).
    Pause {
        #[command(flatten)]
        conversation: ConversationArgs,
        /// How long (e.g. 30m, 2h, 7d). Default: the coexistence timeout.
        #[arg(long = "for", value_name = "DURATION", value_parser = coexist::runtime::config::duration)]
        duration: Option<std::time::Duration>,
        /// Who pauses it, recorded as `by.name`. Default: the login name.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Hands the customer back to the AI agent, as the reset command would (reason: operator).
    Release {
        #[command(flatten)]
        conversation: ConversationArgs,
        /// Who releases it, recorded as `by.name`. Default: the login name.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
}

/// How long a command waits for a worker to decide it.
#[derive(clap::Args)]
pub struct Wait {
    /// A command is decided by the worker that consumes the conversation's partition, in order
    /// with the webhooks before it; wait this long for its answer (e.g. 10s, 2m). Past it the
    /// command stays queued and is decided when a worker reaches it.
    #[arg(long, value_name = "DURATION", value_parser = coexist::runtime::config::duration, default_value = "30s")]
    wait: std::time::Duration,
}

/// The login name, for `--by` left out.
pub(super) fn login_name() -> Option<String> {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok())
        .filter(|n| !n.trim().is_empty())
}

#[derive(clap::Args)]
pub struct ConversationArgs {
    /// The business number's phone_number_id.
    phone_number_id: String,
    /// The customer: a phone number (any punctuation) or a business-scoped user id; any of a
    /// customer's linked names names their conversation.
    customer: String,
}

pub async fn run(command: Command, config: Config) -> Result<(), Failure> {
    let failed = |e: operator::Error| Failure(e.to_string(), 1);
    let (args, action) = match &command {
        Command::List { json, limit } => {
            const PAGE: usize = 1000;
            let store = operator::store(&config).await.map_err(failed)?;
            let now = Millis::now();
            let mut shown = 0;
            let mut after = None;
            if !json {
                print!("{}", operator::table_header());
            }
            // A page at a time, printed as it comes: memory stays flat however many there are.
            loop {
                let want = limit.map_or(PAGE, |l| (l - shown).min(PAGE));
                if want == 0 {
                    break;
                }
                let (page, next) = operator::list(&store, now, after, want)
                    .await
                    .map_err(|e| failed(e.into()))?;
                shown += page.len();
                match json {
                    true => {
                        for p in &page {
                            println!("{}", serde_json::to_string(p).expect("serialises"));
                        }
                    }
                    false => print!("{}", operator::table_rows(&page)),
                }
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            eprintln!("{shown} conversation(s) with a human");
            return Ok(());
        }
        Command::Show(a) => (a, None),
        Command::Explain { conversation, .. } => (conversation, None),
        Command::Pause {
            conversation,
            duration,
            by,
            wait,
        } => (
            conversation,
            Some((
                OperatorAction::Pause,
                *duration,
                by.clone().or_else(login_name),
                wait.wait,
            )),
        ),
        Command::Release {
            conversation,
            by,
            wait,
        } => (
            conversation,
            Some((
                OperatorAction::Release,
                None,
                by.clone().or_else(login_name),
                wait.wait,
            )),
        ),
    };
    if !numeric_phone_number_id(&args.phone_number_id) {
        return Err(Failure(
            format!(
                "{:?} is not a phone_number_id (Meta's are digits)",
                args.phone_number_id
            ),
            2,
        ));
    }
    let Some(customer) = CustomerKey::parse_typed(&args.customer) else {
        return Err(Failure(
            format!(
                "{:?} is not a customer: a phone number (6 to 15 digits) or a business-scoped user id (e.g. US.13491208655302741918)",
                args.customer
            ),
            2,
        ));
    };
    let scope = Scope::conversation(&args.phone_number_id, customer);
    let now = Millis::now();
    if let Command::Explain { json, .. } = command {
        let store = operator::store(&config).await.map_err(failed)?;
        let explained = coexist::tools::explain::explain(&store, &config, &scope, now)
            .await
            .map_err(|e| failed(e.into()))?;
        match json {
            true => println!(
                "{}",
                serde_json::to_string_pretty(&explained).expect("serialises")
            ),
            false => print!("{}", coexist::tools::explain::text(&explained)),
        }
        return Ok(());
    }
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
            let (action, duration, by, wait) = action;
            let command = operator::Command {
                scope,
                action,
                duration,
                by,
            };
            let done = operator::act(&config, command, wait)
                .await
                .map_err(failed)?;
            for e in &done.events {
                println!("{}", e.to_line());
            }
            let json = serde_json::to_string(&done.view).expect("views serialise");
            eprintln!("{json}");
        }
    }
    Ok(())
}
