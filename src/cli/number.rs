//! `coexist number list|show|add|set|unset|remove|check|onboard`: the business numbers coexist serves, and
//! their settings at runtime (docs/contract.md, "Numbers").

use coexist::adapters::redis::Added;
use coexist::runtime::config::Config;
use coexist::tools::numbers::{self, Error};
use coexist::tools::onboard;
use coexist::tools::operator;

use super::Failure;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Every number seen or added: id, name, state (and app_idle), last webhook, last App
    /// message, conversations with a human now.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// A number's record and its effective settings, each with where it comes from (runtime,
    /// file, default), and what to do about its state.
    Show {
        phone_number_id: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Adds a number to the registry (active), or names it again.
    Add {
        phone_number_id: String,
        /// Its WhatsApp Business Account: account_update events name it, not the number.
        #[arg(long, value_name = "W")]
        waba_id: Option<String>,
        /// A label for people.
        #[arg(long, value_name = "N")]
        name: Option<String>,
        /// The phone number as people dial it (digits).
        #[arg(long = "display-number", value_name = "D")]
        display_number: Option<String>,
    },
    /// Changes settings at runtime: every worker and gate use them within 2 s, no restart.
    /// Keys: reset_text, timeout, session_timeout, automated_texts (a JSON list or one text),
    /// handback_messages, service_window, coexistence. Publishes number.updated.
    Set {
        phone_number_id: String,
        /// KEY=VALUE, e.g. reset_text=/bot timeout=2d coexistence=false.
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// Who changes them, recorded as `by.name`. Default: the login name.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
    /// Removes runtime settings: the file's or the global value applies again. Publishes
    /// number.updated.
    Unset {
        phone_number_id: String,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        /// Who changes them, recorded as `by.name`. Default: the login name.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
    /// Forgets a number's record and runtime settings (its conversations stay; a webhook for it
    /// lists it again as unregistered).
    Remove { phone_number_id: String },
    /// The post-setup checklist, from what coexist saw: webhooks arriving, an App message (the
    /// 📱 test), a handover, the reset command matched (or a near miss such as `reset` for
    /// `/reset`), reset off, the number's state and onboarding, app_idle. Each line passed,
    /// failed or not yet, with what to do; exit 1 when one failed.
    Check {
        phone_number_id: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Onboards a coexistence number after Embedded Signup, through COEXIST_GRAPH_URL: checks it
    /// is on the Business App (is_on_biz_app, platform_type; Nigerian and South African numbers
    /// are refused, as Meta does), subscribes the app to the WABA's webhooks, then asks Meta for
    /// the contacts sync and the history sync. Meta allows each sync once, within 24 h: each is
    /// recorded before it is asked and never asked twice (an answer lost is shown as unknown).
    /// Running it again resumes where it stopped. The business token is read from
    /// COEXIST_GRAPH_TOKEN, else from the first line of stdin; it is never stored or logged.
    Onboard {
        phone_number_id: String,
        /// The number's WhatsApp Business Account (Embedded Signup's waba_id).
        #[arg(long, value_name = "W")]
        waba_id: String,
        /// The business signed up again (after an offboarding): forget the earlier onboarding
        /// and begin a new one, with a new 24 h window for the syncs.
        #[arg(long)]
        again: bool,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        /// Who onboards, recorded as `by.name`. Default: the login name.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
}

/// The business token: `COEXIST_GRAPH_TOKEN`, else the first line of stdin.
fn graph_token(config: &Config) -> Result<coexist::runtime::secret::Secret, Failure> {
    if let Some(t) = &config.graph_token {
        return Ok(t.clone());
    }
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("the business's token (not shown anywhere, not stored): ");
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Failure(format!("cannot read the token from stdin: {e}"), 2))?;
    match line.trim() {
        "" => Err(Failure(
            "no business token: set COEXIST_GRAPH_TOKEN or give it on stdin".into(),
            2,
        )),
        t => Ok(coexist::runtime::secret::Secret::new(t.to_owned())),
    }
}

fn failed(e: Error) -> Failure {
    let code = match e {
        Error::Invalid(_) => 2,
        _ => 1,
    };
    Failure(e.to_string(), code)
}

pub async fn run(command: Command, config: Config) -> Result<(), Failure> {
    let store = operator::store(&config)
        .await
        .map_err(|e| Failure(e.to_string(), 1))?;
    match command {
        Command::List { json } => {
            let listed = numbers::list(&store, &config, coexist::core::time::Millis::now())
                .await
                .map_err(failed)?;
            match json {
                true => {
                    for l in &listed {
                        println!("{}", serde_json::to_string(l).expect("serialises"));
                    }
                }
                false => print!("{}", numbers::table(&listed)),
            }
            eprintln!("{} number(s)", listed.len());
        }
        Command::Show {
            phone_number_id,
            json,
        } => {
            let shown = numbers::show(&store, &config, &phone_number_id)
                .await
                .map_err(failed)?;
            match json {
                true => println!(
                    "{}",
                    serde_json::to_string_pretty(&shown).expect("serialises")
                ),
                false => print!("{}", numbers::show_text(&shown)),
            }
        }
        Command::Add {
            phone_number_id,
            waba_id,
            name,
            display_number,
        } => {
            let added = Added {
                waba_id,
                name,
                display_phone_number: display_number,
            };
            let record = numbers::add(&store, &phone_number_id, &added)
                .await
                .map_err(failed)?;
            eprintln!(
                "number {} is {}",
                record.phone_number_id,
                record.state.as_str()
            );
        }
        Command::Set {
            phone_number_id,
            settings,
            by,
        } => {
            let asked = numbers::pairs(&settings).map_err(failed)?;
            changed(&store, &config, &phone_number_id, &asked, by).await?;
        }
        Command::Unset {
            phone_number_id,
            keys,
            by,
        } => {
            let asked = keys.into_iter().map(|k| (k, None)).collect();
            changed(&store, &config, &phone_number_id, &asked, by).await?;
        }
        Command::Remove { phone_number_id } => {
            numbers::remove(&store, &phone_number_id)
                .await
                .map_err(failed)?;
            eprintln!("number {phone_number_id} removed from the registry");
        }
        Command::Check {
            phone_number_id,
            json,
        } => {
            let checked = coexist::tools::check::check(&store, &config, &phone_number_id)
                .await
                .map_err(failed)?;
            match json {
                true => println!(
                    "{}",
                    serde_json::to_string_pretty(&checked).expect("serialises")
                ),
                false => print!("{}", coexist::tools::check::text(&checked)),
            }
            if !checked.passed {
                return Err(Failure(
                    format!("number {phone_number_id}: a check failed (above)"),
                    1,
                ));
            }
        }
        Command::Onboard {
            phone_number_id,
            waba_id,
            again,
            json,
            by,
        } => {
            let token = graph_token(&config)?;
            let by = by.or_else(super::conversation::login_name);
            let report = onboard::onboard(
                &store,
                &config,
                &phone_number_id,
                &waba_id,
                &token,
                again,
                by,
            )
            .await
            .map_err(|e| match e {
                onboard::Stopped::Number(e) => failed(e),
                e => Failure(e.to_string(), 1),
            })?;
            match json {
                true => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialises")
                ),
                false => print!("{}", onboard::text(&report)),
            }
            if report
                .steps
                .iter()
                .any(|s| s.outcome == onboard::Outcome::Refused)
            {
                return Err(Failure(
                    format!("number {phone_number_id}: a step was refused (above)"),
                    1,
                ));
            }
        }
    }
    Ok(())
}

async fn changed(
    store: &coexist::adapters::redis::RedisStore,
    config: &Config,
    id: &str,
    asked: &numbers::Asked,
    by: Option<String>,
) -> Result<(), Failure> {
    let by = by.or_else(super::conversation::login_name);
    match numbers::change(store, config, id, asked, by)
        .await
        .map_err(failed)?
    {
        Some(event) => println!("{}", event.to_line()),
        None => eprintln!("number {id}: nothing changed"),
    }
    Ok(())
}
