//! `coexist partitions`: the partition count in force and where a change of it stands; `set N`
//! changes it online (docs/operations.md, "Changing the partition count").

use clap::Subcommand;
use coexist::adapters::broker::Topology;
use coexist::adapters::redis::partitions::{Began, Partitions, Record};
use coexist::core::time::Millis;
use coexist::runtime::config::Config;

use super::{failed, Failure};

#[derive(Subcommand)]
pub enum Command {
    /// The count in force, its epoch, and a change in progress (how many old partitions are
    /// drained). Exit code 0 when no change is in progress, 3 while one is.
    Show {
        /// One JSON object instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Changes the partition count while webhooks keep being accepted: the workers move every
    /// business number's slot to the new partitions, drain the old ones, and consume the new
    /// ones after (each conversation's order holds; nothing is lost or decided twice). One
    /// change at a time; the workers must be running for it to finish.
    Set {
        /// The new count (1 to 1024).
        #[arg(value_parser = clap::value_parser!(u16).range(1..=1024))]
        count: u16,
        /// Waits until the change is done (or SECONDS pass: exit code 3), printing its progress.
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
    },
}

/// The record of the namespace's layout (for `topology` too).
pub async fn record(config: &Config) -> Result<Partitions, Failure> {
    let store = coexist::tools::operator::store(config)
        .await
        .map_err(|e| failed(&e))?;
    Ok(Partitions::new(store.connection(), &config.namespace))
}

pub async fn run(command: Command, config: &Config) -> Result<(), Failure> {
    let partitions = record(config).await?;
    let topology = Topology::new(&config.namespace, config.partitions);
    match command {
        Command::Show { json } => {
            let record = partitions
                .read_or_init(topology.first_layout())
                .await
                .map_err(|e| failed(&e))?;
            if json {
                println!("{}", as_json(&record));
            } else {
                println!("{}", record.describe());
            }
            match record.change {
                None => Ok(()),
                Some(_) => Err(Failure(String::new(), 3)),
            }
        }
        Command::Set { count, wait } => {
            let began = partitions
                .begin(topology.first_layout(), count, "cli", Millis::now())
                .await
                .map_err(|e| failed(&e))?;
            match began {
                Began::Started(r) => println!("recorded: {}", r.describe()),
                Began::Unchanged(r) => {
                    println!("unchanged: {}", r.describe());
                    return Ok(());
                }
                Began::Busy(r) => {
                    return Err(Failure(
                        format!(
                            "another change is in progress ({}); one at a time",
                            r.describe()
                        ),
                        1,
                    ))
                }
            }
            let Some(seconds) = wait else {
                println!(
                    "the workers carry it out; `coexist partitions show` says where it stands"
                );
                return Ok(());
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
            let mut said = String::new();
            loop {
                let r = partitions
                    .read_or_init(topology.first_layout())
                    .await
                    .map_err(|e| failed(&e))?;
                let line = r.describe();
                if line != said {
                    println!("{line}");
                    said = line;
                }
                if r.change.is_none() {
                    return Ok(());
                }
                if std::time::Instant::now() >= deadline {
                    return Err(Failure(
                        format!("not done within {seconds} s (are the workers running?)"),
                        3,
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

fn as_json(r: &Record) -> serde_json::Value {
    serde_json::json!({
        "epoch": r.layout.epoch,
        "count": r.layout.count,
        "laid_out": r.laid_out == Some(r.layout.epoch),
        "change": r.change.as_ref().map(|c| serde_json::json!({
            "from_epoch": c.from.epoch,
            "from_count": c.from.count,
            "stage": c.stage.as_str(),
            "old_drained": c.sealed,
            "since": c.since.0,
            "by": c.by,
        })),
    })
}
