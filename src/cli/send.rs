//! `coexist send`: signs webhook bodies as Meta does and posts them.

use std::path::PathBuf;

use coexist::core::time::Millis;
use coexist::runtime::config::Config;

use super::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// Where to post (plain HTTP). Default: http://{listen}/webhook.
    #[arg(long)]
    url: Option<String>,
    /// Move the bodies' timestamps so that the latest is now, keeping the gaps between them
    /// (a live deployment's clock is the wall clock; a story written once is otherwise old).
    #[arg(long)]
    now: bool,
    /// Play the story out in real time: the first body now, each next one when its timestamp
    /// comes (the gaps between them kept), so that a person's reply can arrive while the AI
    /// agent is still thinking. Implies moving the timestamps (as --now does).
    #[arg(long)]
    pace: bool,
    /// Webhook bodies: a file holds one JSON body, or JSON lines with one body per line.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub async fn run(args: Args, config: &Config) -> Result<(), Failure> {
    let Some(secret) = config.app_secrets.first() else {
        return Err(Failure(
            "config: app_secret: send signs with Meta's app secret (COEXIST_APP_SECRET)".into(),
            2,
        ));
    };
    let url = args
        .url
        .unwrap_or_else(|| format!("http://{}/webhook", config.listen));
    let mut bodies = Vec::new();
    for path in &args.files {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Failure(format!("{name}: {e}"), 1))?;
        let source = coexist::tools::process::Source { name, text };
        for (name, body) in coexist::tools::process::bodies(&source) {
            bodies.push((name, body.to_owned()));
        }
    }
    let now = Millis::now();
    let due = match (args.pace, args.now) {
        (true, _) => coexist::tools::send::shift_to_start(&mut bodies, now.0 / 1000),
        (false, true) => {
            coexist::tools::send::shift_to_now(&mut bodies, now.0 / 1000);
            Vec::new()
        }
        (false, false) => Vec::new(),
    };
    let mut refused = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        if let Some(secs) = due.get(i) {
            // Each body when its second comes, counted from the first (sent at once).
            let wait = (secs - now.0 / 1000) * 1000 - (Millis::now().0 - now.0);
            if wait > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(wait as u64)).await;
            }
        }
        let stdout = std::io::stdout();
        let one = std::slice::from_ref(body);
        refused.extend(
            coexist::tools::send::send(&url, secret, one, &mut stdout.lock())
                .await
                .map_err(|e| Failure(e.to_string(), 2))?,
        );
    }
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
