//! `coexist dlq list|replay`: dead-lettered input, inspected and sent back.

use coexist::adapters::broker::Topology;
use coexist::runtime::config::Config;

use super::{failed, Failure};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Lists dead-lettered input, oldest first: id, kind, stage, attempts, age, reason. The
    /// letters shown move to the back of the queue, unchanged (a look never hands a letter
    /// back, which RabbitMQ would count as a delivery): running it again shows the next ones.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Sends dead-lettered input back through the pipeline; it is decided again against the
    /// conversation's state at that time.
    Replay {
        /// Replay at most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
}

pub async fn run(command: Command, config: &Config) -> Result<(), Failure> {
    let topology = Topology::new(&config.namespace, config.partitions);
    let url = config.amqp_url.expose();
    match command {
        Command::List { limit } => {
            let page = coexist::tools::dlq::list(url, &topology, limit)
                .await
                .map_err(|e| failed(&e))?;
            print!("{}", coexist::tools::dlq::table(&page.entries));
            eprintln!(
                "{} of {} dead letter(s) in {}{}",
                page.entries.len(),
                page.total,
                topology.dead(),
                if page.entries.len() < page.total {
                    " (they moved to the back: run it again for the next ones)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Command::Replay { limit } => {
            // Counts as it goes, on stderr: one line rewritten in place on a terminal, a line per
            // hundred letters otherwise.
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let progress = |r: &coexist::tools::dlq::Replayed, total: usize| {
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
            let r = coexist::tools::dlq::replay(url, &topology, limit, progress)
                .await
                .map_err(|e| failed(&e))?;
            if terminal {
                eprintln!();
            }
            println!("{}", serde_json::to_string(&r).expect("serialises"));
            Ok(())
        }
    }
}
