//! Contracts for the tools around coexist: the alerts (promtool), the dashboard and the metrics
//! they name, the AsyncAPI document.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `coexist_…` metric name a text names.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("coexist_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.insert(name);
    }
    out
}

/// A name as exported: histograms add `_bucket`, `_sum` and `_count`.
fn exported(name: &str) -> bool {
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    coexist::runtime::metrics::NAMES.contains(&base)
        || coexist::runtime::metrics::NAMES.contains(&name)
}

#[test]
fn promtool_checks_the_alerts_and_their_unit_tests_pass() {
    let dir = root().join("config/prometheus");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (scripts/test installs Debian's prometheus package)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_alerts_and_the_dashboard_name_only_metrics_coexist_exports() {
    let alerts = std::fs::read_to_string(root().join("config/prometheus/alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(root().join("config/grafana/coexist.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let operations = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    for (what, text) in [("alerts.yml", &alerts), ("coexist.json", &dashboard)] {
        let named = names_in(text);
        assert!(!named.is_empty());
        for name in &named {
            assert!(
                exported(name),
                "{what} names {name}, which coexist does not export"
            );
        }
    }
    // Every alert has its runbook section.
    for line in alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook: docs/operations.md#"))
    {
        assert!(
            operations.contains(&format!("## {line}\n")),
            "runbook section {line}"
        );
    }
}

/// What a running ingress and worker export is declared in `metrics::NAMES`, and the metrics
/// the alerts lean on most are there once some traffic passed.
#[tokio::test]
async fn a_running_ingress_and_worker_export_the_declared_metrics() {
    let stack = Stack::start("metrics", 1, &[]).await;
    let t = t0();
    stack
        .post_until_ok(
            &customer_text(ANA, "wamid.MT1", t, "hola"),
            10 * Duration::from_secs(1),
        )
        .await;
    let _ = take_events(&stack.ns, "bot", 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(6)).await; // the 5-second readings
    let mut seen = BTreeSet::new();
    for addr in [
        stack.ingress.admin_addr.unwrap(),
        stack.workers[0].admin_addr,
    ] {
        let (_, text) = http(addr, "GET", "/metrics", &[], b"").await;
        for line in text.lines().filter(|l| l.starts_with("coexist_")) {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exported(&name),
                "{name} is exported but not declared in metrics::NAMES"
            );
            seen.insert(name);
        }
    }
    for wanted in [
        "coexist_webhooks_total",
        "coexist_items_total",
        "coexist_events_total",
        "coexist_accept_to_confirm_seconds_bucket",
        "coexist_partitions",
        "coexist_partitions_owned",
        "coexist_partitions_consuming",
        "coexist_inbound_backlog",
        "coexist_dead_letters_waiting",
        "coexist_paused_conversations",
    ] {
        assert!(seen.contains(wanted), "{wanted} is exported: {seen:?}");
    }
    stack.stop().await;
}

#[test]
fn the_asyncapi_document_validates_with_asyncapis_own_cli() {
    let cli = std::env::var("COEXIST_TEST_ASYNCAPI").unwrap_or_else(|_| "asyncapi".into());
    // From docs/: the CLI reads a `config/` directory of its working directory as its own.
    let out = Command::new(&cli)
        .args(["validate", "asyncapi.yaml"])
        .current_dir(root().join("docs"))
        .env("SUPPRESS_NO_CONFIG_WARNING", "1")
        .env("ASYNCAPI_METRICS", "false")
        .output()
        .unwrap_or_else(|e| panic!("{cli} ({e}): scripts/test installs @asyncapi/cli from npm"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "asyncapi validate:\n{said}");
    assert!(said.contains("is valid"), "{said}");
    assert!(!said.contains(" error "), "{said}");
}
