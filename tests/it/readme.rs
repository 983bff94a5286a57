//! The README's commands run as written: every shell block marked ```` ```sh runnable ```` is run,
//! in order, in one bash session (`set -euo pipefail`), against a real ingress, worker, reply gate
//! (forwarding to a Graph stand-in) and console in a namespace of its own, so the README cannot
//! drift from what the product does. The only rewrites are where the README names what a test
//! cannot have: the release binary (`target/release/coexist`, `cargo run --release --`) is the
//! binary under test, and the console's fixed address `127.0.0.1:8082` is the test console's.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::support::*;

/// The README's blocks marked runnable, in order.
fn runnable_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh runnable") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), l) => {
                block.push_str(l);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[tokio::test(flavor = "multi_thread")]
async fn every_runnable_readme_block_runs_as_written() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = runnable_blocks(&readme);
    assert!(
        blocks.len() >= 6,
        "the README marks its runnable blocks: {}",
        blocks.len()
    );
    let secret = "local-development-secret";
    let api = "platform-readme-token";
    let g = crate::gate::GateStack::start(
        "readme",
        &[
            ("COEXIST_APP_SECRET", secret),
            ("COEXIST_CONSOLE_LISTEN", "127.0.0.1:0"),
            ("COEXIST_CONSOLE_TOKEN", "ana:readme-console-token"),
            ("COEXIST_API_TOKEN", &format!("platform:{api}")),
        ],
    )
    .await;
    let shutdown = CancellationToken::new();
    let console = coexist::services::console::start(&g.stack.config, &shutdown)
        .await
        .unwrap();
    let bin = env!("CARGO_BIN_EXE_coexist");
    let (amqp, redis) = (amqp_url(), redis_url());
    let listen = g.stack.ingress.addr.to_string();
    let ns = g.stack.ns.clone();
    let graph = g.graph.url.clone();
    let script: String = blocks
        .iter()
        .map(|b| {
            b.replace("cargo run --release --", bin)
                .replace("target/release/coexist", bin)
                .replace("127.0.0.1:8082", &console.addr.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n");
    // A person reads `send`'s answers before the next command, and the worker has decided the
    // webhooks by then (within milliseconds); on a test machine busy with every other test it
    // may take longer, so the script leaves the worker a second, as the person would.
    let script: String = script
        .lines()
        .map(|l| match l.starts_with(&format!("{bin} send")) {
            true => format!("{l}\nsleep 1"),
            false => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    // In a directory of its own (a command may write a file), with the examples at hand.
    let dir = std::env::temp_dir().join(format!("coexist-readme-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::os::unix::fs::symlink(root.join("examples"), dir.join("examples"));
    let cleanup = dir.clone();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{script}"))
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("COEXIST_NAMESPACE", &ns)
            .env("COEXIST_AMQP_URL", amqp)
            .env("COEXIST_REDIS_URL", redis)
            .env("COEXIST_PARTITIONS", "4")
            .env("COEXIST_LISTEN", listen)
            .env("COEXIST_GRAPH_URL", graph)
            .env("BUSINESS_TOKEN", "EAAG-readme-business-token")
            .env("API_TOKEN", api)
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the README's commands finish")
        .unwrap();
    let _ = std::fs::remove_dir_all(cleanup);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a README command failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // What the README says they show, they show.
    for shown in [
        "human_chat conversation.released  15550004444  reset_command",
        "released by the reset command '/reset' from the Business App",
        "reset_text         \"/bot\"",
        "number 123456789012345: active, onboarding finished",
        "\"reset_text\":\"/bot\"",
    ] {
        assert!(
            stdout.contains(shown),
            "{shown:?} not shown:\n{stdout}\n{stderr}"
        );
    }
    console.stop().await;
    g.stop().await;
}
