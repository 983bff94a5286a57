//! Numbers at runtime (docs/contract.md, "Numbers") on real RabbitMQ and Redis: settings changed
//! with `coexist number set` while the workers run, the lifecycle from `account_update` at the
//! gate, and the activity the registry records.

use std::time::Duration;

use serde_json::{json, Value};

use crate::gate::{text_reply, GateStack};
use crate::support::*;

const SECS: Duration = Duration::from_secs(1);

/// The `coexist` binary against a stack's namespace and servers.
fn number_cli(ns: &str, args: &[&str]) -> std::process::Output {
    coexist_in(ns, &[], args)
}

fn ok(out: std::process::Output) -> std::process::Output {
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// An `account_update` as Meta sends it to the app's default URL: about the WABA, no number.
fn account_update(event: &str, time: i64, reason: Option<&str>) -> String {
    let mut value =
        json!({"event": event, "waba_info": {"waba_id": WABA, "owner_business_id": "5550001"}});
    if let Some(r) = reason {
        value["disconnection_info"] = json!({"reason": r, "initiated_by": "SYSTEM"});
    }
    json!({"object": "whatsapp_business_account",
           "entry": [{"id": WABA, "time": time, "changes": [{"value": value, "field": "account_update"}]}]})
    .to_string()
}

#[tokio::test]
async fn a_reset_text_set_at_runtime_is_used_by_the_running_worker_with_no_restart() {
    let s = Stack::start("numbers-set", 1, &[]).await;
    let t = t0();
    s.post_until_ok(&customer_text(ANA, "wamid.N1", t, "hola"), 10 * SECS)
        .await;
    s.post_until_ok(&echo_text(ANA, "wamid.N2", t + 1, "Soy Sam"), 10 * SECS)
        .await;
    let paused = first_event(&s.ns, "human_chat", 10 * SECS, |e| {
        e.kind == "conversation.handover"
    })
    .await;
    assert!(paused.is_some(), "the App's reply paused the AI agent");
    let set = ok(number_cli(
        &s.ns,
        &["number", "set", PNID, "reset_text=/ai", "--by", "ana"],
    ));
    let published = lines(&set);
    assert_eq!(published[0]["routing_key"], json!("number.updated"));
    assert_eq!(
        published[0]["event"]["changed"],
        json!({"reset_text": "/ai"})
    );
    assert_eq!(
        published[0]["event"]["by"],
        json!({"kind": "operator", "name": "ana"})
    );
    let updated = first_event(&s.ns, "human_chat", 10 * SECS, |e| {
        e.kind == "number.updated"
    })
    .await;
    assert!(updated.is_some(), "number.updated reached the inbox");
    // Within the contract's 2 s every worker decides with it.
    tokio::time::sleep(2 * SECS).await;
    s.post_until_ok(&echo_text(ANA, "wamid.N3", t + 2, "/reset"), 10 * SECS)
        .await;
    s.post_until_ok(&echo_text(ANA, "wamid.N4", t + 3, " /AI "), 10 * SECS)
        .await;
    let events = take_events(&s.ns, "human_chat", 2, 10 * SECS).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["message.sent_from_app", "conversation.released"],
        "the old reset text is an ordinary App message now, the new one releases"
    );
    assert_eq!(events[0].body["message"]["text"], json!("/reset"));
    assert_eq!(events[1].body["reason"], json!("reset_command"));
    // Unset: the global /reset applies again.
    ok(number_cli(&s.ns, &["number", "unset", PNID, "reset_text"]));
    let shown = ok(number_cli(&s.ns, &["number", "show", PNID, "--json"]));
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    let reset = shown["effective"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "reset_text")
        .cloned()
        .unwrap();
    assert_eq!(
        reset,
        json!({"key": "reset_text", "value": "/reset", "from": "default"})
    );
    assert_eq!(
        shown["changes"].as_array().unwrap().len(),
        2,
        "who changed what"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_bad_setting_is_refused_in_one_line_naming_the_key_and_nothing_changes() {
    let ns = unique_ns("numbers-bad");
    let _redis = NsGuard(ns.clone());
    let _amqp = AmqpNsGuard(ns.clone());
    assert_refused(
        &number_cli(&ns, &["number", "set", PNID, "timeout=soon"]),
        "timeout: \"soon\" is not a duration",
    );
    assert_refused(
        &number_cli(&ns, &["number", "set", PNID, "handback_messages=5000"]),
        "handback_messages: expected a whole number from 0 to 1000",
    );
    assert_refused(
        &number_cli(
            &ns,
            &["number", "set", PNID, r#"automated_texts=["/RESET "]"#],
        ),
        "automated_texts: \"/reset\" is the reset command",
    );
    assert_refused(
        &number_cli(&ns, &["number", "set", PNID, "colour=red"]),
        "colour: not a number setting",
    );
    let listed = ok(number_cli(&ns, &["number", "list", "--json"]));
    assert!(listed.stdout.is_empty(), "nothing was recorded");
}

#[tokio::test]
async fn with_coexistence_off_app_messages_are_recorded_and_pause_nothing() {
    let s = Stack::start("numbers-coexistence", 1, &[]).await;
    ok(number_cli(
        &s.ns,
        &["number", "set", PNID, "coexistence=false"],
    ));
    let _ = first_event(&s.ns, "human_chat", 10 * SECS, |e| {
        e.kind == "number.updated"
    })
    .await;
    tokio::time::sleep(2 * SECS).await;
    let t = t0();
    s.post_until_ok(&echo_text(ANA, "wamid.C1", t, "Hola, soy Sam"), 10 * SECS)
        .await;
    s.post_until_ok(
        &customer_text(ANA, "wamid.C2", t + 1, "¿Y el pedido?"),
        10 * SECS,
    )
    .await;
    let human = take_events(&s.ns, "human_chat", 1, 10 * SECS).await;
    assert_eq!(human.len(), 1);
    assert_eq!(human[0].kind, "message.sent_from_app");
    assert_eq!(human[0].body["message"]["source"], json!("business_app"));
    assert_eq!(human[0].body["message"]["icon"], json!("📱"));
    let bot = take_events(&s.ns, "bot", 1, 10 * SECS).await;
    assert_eq!(bot.len(), 1, "the customer's message went to the AI agent");
    assert_eq!(bot[0].kind, "message.received");
    stays_empty(&s.ns, "human_chat", "no handover").await;
    s.stop().await;
}

#[tokio::test]
async fn offboarded_holds_the_agents_replies_reconnected_releases_them_removed_refuses() {
    let g = GateStack::start("numbers-life", &[]).await;
    let ns = g.stack.ns.clone();
    ok(number_cli(
        &ns,
        &[
            "number",
            "add",
            PNID,
            "--waba-id",
            WABA,
            "--name",
            "Tienda Sol",
        ],
    ));
    tokio::time::sleep(2 * SECS).await;
    let t = t0();
    let token = g
        .bot_token(&customer_text(ANA, "wamid.L1", t, "hola"))
        .await;
    let reply = text_reply(ANA, "¡Hola! ¿En qué te ayudo?");

    g.stack
        .post_until_ok(
            &account_update("ACCOUNT_OFFBOARDED", t + 1, None),
            10 * SECS,
        )
        .await;
    let bot = take_events(&ns, "bot", 2, 10 * SECS).await;
    let kinds: Vec<&str> = bot.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["account.updated", "number.state_changed"]);
    assert_eq!(bot[1].body["phone_number_id"], json!(PNID));
    assert_eq!(bot[1].body["from"], json!("active"));
    assert_eq!(bot[1].body["to"], json!("offboarded"));
    assert_eq!(bot[1].body["by"]["kind"], json!("system"));
    let human = take_events(&ns, "human_chat", 1, 10 * SECS).await;
    assert_eq!(human[0].kind, "number.state_changed", "on both exchanges");
    assert_eq!(human[0].body["event_id"], bot[1].body["event_id"]);
    // Meta sends it again: no second change.
    g.stack
        .post_until_ok(
            &account_update("ACCOUNT_OFFBOARDED", t + 1, None),
            10 * SECS,
        )
        .await;
    tokio::time::sleep(2 * SECS).await;
    let (status, answer) = g.reply(&reply, Some(&token)).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        answer["error"]["error_data"]["reason"],
        json!("number_offboarded")
    );
    assert!(
        g.graph.received().is_empty(),
        "nothing forwarded while offboarded"
    );

    g.stack
        .post_until_ok(
            &account_update("ACCOUNT_RECONNECTED", t + 2, None),
            10 * SECS,
        )
        .await;
    let back = first_event(&ns, "human_chat", 10 * SECS, |e| {
        e.kind == "number.state_changed" && e.body["to"] == "active"
    })
    .await;
    assert!(back.is_some(), "active again");
    let human = take_events(&ns, "human_chat", 5, 3 * SECS).await;
    assert!(
        human.iter().all(|e| e.kind != "number.state_changed"),
        "the repeated ACCOUNT_OFFBOARDED changed nothing: {:?}",
        human.iter().map(|e| &e.kind).collect::<Vec<_>>()
    );
    tokio::time::sleep(2 * SECS).await;
    let (status, answer) = g.reply(&reply, Some(&token)).await;
    assert_eq!(status, 200, "released: {answer}");
    assert_eq!(g.graph.received().len(), 1);

    g.stack
        .post_until_ok(
            &account_update("PARTNER_REMOVED", t + 3, Some("PRIMARY_INACTIVITY")),
            10 * SECS,
        )
        .await;
    let removed = first_event(&ns, "human_chat", 10 * SECS, |e| {
        e.kind == "number.state_changed" && e.body["to"] == "disconnected"
    })
    .await
    .expect("disconnected");
    assert_eq!(
        removed.1.body["reason"],
        json!("PARTNER_REMOVED: PRIMARY_INACTIVITY")
    );
    tokio::time::sleep(2 * SECS).await;
    let (status, answer) = g.reply(&reply, Some(&token)).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer["error"]["error_data"]["reason"],
        json!("number_disconnected")
    );
    assert_eq!(g.graph.received().len(), 1, "nothing more forwarded");
    let shown = ok(number_cli(&ns, &["number", "show", PNID]));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("disconnected (PARTNER_REMOVED: PRIMARY_INACTIVITY)"),
        "{text}"
    );
    assert!(
        text.contains("was not opened for about 14 days"),
        "the remedy: {text}"
    );
    g.stop().await;
}

#[tokio::test]
async fn an_account_update_of_a_waba_with_no_registered_number_changes_nothing() {
    let s = Stack::start("numbers-unmatched", 1, &[]).await;
    s.post_until_ok(&account_update("ACCOUNT_OFFBOARDED", t0(), None), 10 * SECS)
        .await;
    let bot = take_events(&s.ns, "bot", 1, 10 * SECS).await;
    assert_eq!(bot[0].kind, "account.updated", "published as before");
    stays_empty(&s.ns, "bot", "no number.state_changed").await;
    stays_empty(&s.ns, "human_chat", "no number.state_changed").await;
    s.stop().await;
}

#[tokio::test]
async fn a_number_seen_in_webhooks_is_listed_unregistered_with_its_activity() {
    let s = Stack::start("numbers-seen", 1, &[]).await;
    let t = t0();
    s.post_until_ok(&customer_text(ANA, "wamid.S1", t, "hola"), 10 * SECS)
        .await;
    s.post_until_ok(&echo_text(ANA, "wamid.S2", t + 1, "Soy Sam"), 10 * SECS)
        .await;
    // Activity is written every few seconds, not per item.
    let deadline = std::time::Instant::now() + 20 * SECS;
    let listed = loop {
        let out = number_cli(&s.ns, &["number", "list", "--json"]);
        let first = lines(&out).into_iter().next().unwrap_or(Value::Null);
        if first["last_app_message_at"].is_string() {
            break first;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recorded: {first}"
        );
        tokio::time::sleep(SECS / 2).await;
    };
    assert_eq!(listed["phone_number_id"], json!(PNID));
    assert_eq!(listed["state"], json!("unregistered"));
    assert_eq!(listed["with_a_human"], json!(1));
    assert_eq!(listed["app_idle"], json!(false));
    assert!(listed["last_webhook_at"].is_string());
    s.stop().await;
}

/// What every worker and gate reloads (every 30 s, and at each change) carries what decisions
/// and the metrics read (state, WABA, settings, activity) and not the changes' history or the
/// onboarding, which only `number show` and the console's pages need.
#[tokio::test]
async fn the_registry_every_process_reloads_carries_what_decisions_read_and_no_history() {
    let ns = NsGuard(unique_ns("numlight"));
    let store = coexist::adapters::redis::RedisStore::connect(&redis_url(), &ns.0)
        .await
        .unwrap();
    let now = coexist::core::time::Millis::now();
    let added = coexist::adapters::redis::Added {
        waba_id: Some("900000000000001".into()),
        name: Some("Tienda".into()),
        display_phone_number: Some("+52 1 555 000 9999".into()),
    };
    store.add_number(PNID, &added, now).await.unwrap();
    let changed = json!({"reset_text": "/bot", "timeout": "2d"});
    let change = coexist::core::numbers::Change {
        at: now.rfc3339(),
        by: coexist::core::engine::event::By::system(),
        changed: changed.as_object().cloned().unwrap(),
    };
    store.change_number_settings(PNID, &change).await.unwrap();
    let full = store.number_records().await.unwrap();
    let light = store.number_records_light().await.unwrap();
    assert_eq!((full.len(), light.len()), (1, 1));
    let (full, light) = (&full[0], &light[0]);
    assert_eq!(full.changes.len(), 1, "the full record has its change");
    assert!(light.changes.is_empty(), "the reloaded one does not");
    assert_eq!(light.settings, full.settings);
    assert_eq!(
        light.settings.get("reset_text"),
        Some(&json!("/bot")),
        "{light:?}"
    );
    assert_eq!(light.state, full.state);
    assert_eq!(light.waba_id, full.waba_id);
    assert_eq!(light.display_phone_number, full.display_phone_number);
    assert_eq!(light.last_webhook_at, full.last_webhook_at);
}
