//! The `coexist` binary: offline `process`, configuration errors, help, operator commands.

use serde_json::{json, Value};

use crate::support::*;

#[test]
fn an_otlp_protocol_it_does_not_speak_stops_start_up_in_one_line() {
    let out = coexist(
        &["gate"],
        &[
            ("COEXIST_GATE_LISTEN", "127.0.0.1:0"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ],
        None,
    );
    assert_refused(&out, "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\"");
}

#[test]
fn process_tells_the_handover_story() {
    let out = coexist(&["process", "examples/handover-story.jsonl"], &[], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Vec<(String, String, Value)> = lines(&out)
        .into_iter()
        .map(|l| {
            (
                l["exchange"].as_str().unwrap().to_owned(),
                l["routing_key"].as_str().unwrap().to_owned(),
                l["event"].clone(),
            )
        })
        .collect();
    let route: Vec<(&str, &str)> = got
        .iter()
        .map(|(x, k, _)| (x.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        route,
        vec![
            ("bot", "message.received"),
            ("bot", "session.paused"),
            ("human_chat", "conversation.handover"),
            ("human_chat", "message.sent_from_app"),
            ("human_chat", "message.received"),
            ("human_chat", "message.received"),
            ("human_chat", "conversation.released"),
            ("bot", "message.received"),
            ("human_chat", "conversation.handover"),
            ("human_chat", "message.sent_from_app"),
            ("human_chat", "conversation.released"),
            ("bot", "message.received"),
        ]
    );
    for (_, kind, event) in &got {
        assert_eq!(event["type"].as_str(), Some(kind.as_str()));
    }
    assert_eq!(
        got[5].2["message"]["text"],
        json!("Shared location: Shop, 5th Ave")
    );
    assert_eq!(got[6].2["reason"], json!("reset_command"));
    assert_eq!(got[7].2["session_started"], json!(true));
    assert_eq!(
        got[10].2["reason"],
        json!("timeout"),
        "Omar's pause timed out between two items"
    );
    assert_eq!(got[10].2["occurred_at"], json!("2025-12-02T12:05:00Z"));
    // Deterministic: the same run prints the same bytes.
    let again = coexist(&["process", "examples/handover-story.jsonl"], &[], None);
    assert_eq!(out.stdout, again.stdout);
}

#[test]
fn process_tells_the_coexistence_story() {
    let args = [
        "--config",
        "examples/coexistence.toml",
        "process",
        "examples/coexistence-story.jsonl",
    ];
    let out = coexist(&args, &[], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = lines(&out);
    let route: Vec<(&str, &str)> = got
        .iter()
        .map(|l| {
            (
                l["exchange"].as_str().unwrap(),
                l["routing_key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        route,
        [
            ("bot", "message.received"),
            ("human_chat", "message.sent_from_app"), // the App's greeting: no pause
            ("bot", "message.edited"),               // Lena's edit, while the AI handles her
            ("bot", "session.paused"),
            ("human_chat", "conversation.handover"),
            ("human_chat", "message.sent_from_app"),
            ("human_chat", "message.received"),
            ("human_chat", "message.edited"), // her edit, while Jo handles her
            ("human_chat", "message.sent_from_app"),
            ("human_chat", "conversation.released"),
            ("bot", "message.received"),
        ]
    );
    let greeting = &got[1]["event"]["message"];
    assert_eq!(greeting["source"], json!("business_app_automation"));
    assert_eq!(greeting["icon"], json!("📱"));
    assert_eq!(got[2]["event"]["original_message_id"], json!("wamid.CS1"));
    let handback = &got[10]["event"]["handback"];
    assert_eq!(handback["reason"], json!("reset_command"));
    let texts: Vec<&str> = handback["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "Hi Lena, Jo here. Yes, we fix e-bikes. Which model?",
            "A VanMoof S3, the motor cuts out on hills",
            "Bring it in Thursday and I'll take a look",
        ]
    );
    assert_eq!(got[0]["event"]["handback"], json!(null));
    // Without the configuration, the greeting is taken for a human and pauses the AI agent.
    let out = coexist(&args[2..], &[], None);
    assert_eq!(lines(&out)[1]["routing_key"], json!("session.paused"));
}

#[test]
fn process_reads_stdin_and_follows_configuration() {
    let story = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/handover-story.jsonl"
    ))
    .unwrap();
    let out = coexist(&["process"], &[("COEXIST_RESET_TEXT", "")], Some(&story));
    assert!(out.status.success(), "{}", stderr(&out));
    let reasons: Vec<Value> = lines(&out)
        .iter()
        .filter(|l| l["routing_key"] == json!("conversation.released"))
        .map(|l| l["event"]["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        vec![json!("timeout"), json!("timeout")],
        "with reset off, both pauses run out"
    );
    let texts: Vec<Value> = lines(&out)
        .iter()
        .map(|l| l["event"]["message"]["text"].clone())
        .collect();
    assert!(
        texts.contains(&json!("/reset")),
        "reset off: /reset is an ordinary echo"
    );
}

#[test]
fn process_stops_at_a_bad_body_after_the_good_ones() {
    let good = customer_text(ANA, "wamid.CL1", 1_764_000_000, "hola");
    let input = format!(
        "{good}\nthis is not json\n{}\n",
        customer_text(ANA, "wamid.CL2", 1_764_000_001, "otra")
    );
    let out = coexist(&["process"], &[], Some(&input));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        lines(&out).len(),
        1,
        "the good body before it was processed"
    );
    let err = stderr(&out);
    assert!(err.starts_with("coexist: stdin:2: not JSON"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let out = coexist(
        &[
            "process",
            "examples/webhooks/customer-text.json",
            "/nonexistent.json",
        ],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(lines(&out).len(), 1);
    assert!(stderr(&out).contains("/nonexistent.json"));
    let out = coexist(&["process"], &[], Some(r#"{"object":"page","entry":[]}"#));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a WhatsApp webhook"));
}

#[test]
fn process_accepts_each_example_body() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhooks");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let out = coexist(&["process", path.to_str().unwrap()], &[], None);
        assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
        let alone_reset = path.ends_with("echo-reset.json"); // R5: not paused, no event
        assert_eq!(lines(&out).is_empty(), alone_reset, "{}", path.display());
    }
}

#[test]
fn a_bad_configuration_stops_with_one_line() {
    let out = coexist(&["process"], &[("COEXIST_TIMEOUT", "forever")], Some(""));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).trim_end(), "coexist: config: timeout (from COEXIST_TIMEOUT): \"forever\" is not a duration (write e.g. 30s, 15m, 24h, 7d)");
    let out = coexist(&["--config", "/nonexistent.toml", "process"], &[], Some(""));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("coexist: config: /nonexistent.toml: cannot read"));
    let out = coexist(
        &["process"],
        &[("COEXIST_CONFIG", "/nonexistent.toml")],
        Some(""),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "COEXIST_CONFIG names the file too"
    );
}

#[test]
fn every_command_explains_itself() {
    for args in [
        vec!["--help"],
        vec!["process", "--help"],
        vec!["conversation", "--help"],
        vec!["conversation", "show", "--help"],
        vec!["conversation", "pause", "--help"],
        vec!["conversation", "release", "--help"],
        vec!["ingress", "--help"],
        vec!["worker", "--help"],
        vec!["serve", "--help"],
        vec!["topology", "--help"],
        vec!["dlq", "--help"],
        vec!["dlq", "list", "--help"],
        vec!["dlq", "replay", "--help"],
        vec!["conversation", "list", "--help"],
        vec!["tail", "--help"],
        vec!["send", "--help"],
        vec!["schema", "--help"],
    ] {
        let out = coexist(&args, &[], None);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{args:?}"
        );
    }
    let out = coexist(&["frobnicate"], &[], None);
    assert_eq!(out.status.code(), Some(2));
}

/// The operator commands as a user runs them, with a worker deciding them in the
/// conversation's lane (docs/contract.md, "Operator commands").
#[tokio::test(flavor = "multi_thread")]
async fn conversation_commands_against_redis() {
    let stack = Stack::start("cli", 1, &[("COEXIST_PARTITIONS", "2")]).await;
    let ns = stack.ns.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| conversation_commands(&ns, &handle));
    stack.stop().await;
}

fn conversation_commands(ns: &str, handle: &tokio::runtime::Handle) {
    let env = [
        ("COEXIST_NAMESPACE", ns),
        ("COEXIST_REDIS_URL", "redis://127.0.0.1:6379"),
        ("COEXIST_PARTITIONS", "2"),
    ];
    let show = |env: &[(&str, &str)]| {
        let out = coexist(
            &["conversation", "show", PNID, "+52 1 555 123 0001"],
            env,
            None,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let v = show(&env);
    assert_eq!(v["handler"], json!("bot"));
    assert_eq!(v["paused"], json!(false));
    assert_eq!(v["conversation"], json!(format!("{PNID}:{ANA}")));
    let with_user: Vec<(&str, &str)> = env.iter().copied().chain([("USER", "sam")]).collect();
    let out = coexist(&["conversation", "pause", PNID, ANA], &with_user, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = lines(&out);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["routing_key"], json!("conversation.handover"));
    assert_eq!(
        ev[0]["event"]["by"],
        json!({"kind": "operator", "name": "sam"}),
        "--by defaults to the login name"
    );
    // Published, not only printed.
    let got = handle.block_on(take_events(
        ns,
        "human_chat",
        1,
        std::time::Duration::from_secs(5),
    ));
    assert_eq!(got[0].kind, "conversation.handover");
    assert_eq!(got[0].body["event_id"], ev[0]["event"]["event_id"]);
    let v = show(&env);
    assert_eq!(v["handler"], json!("human"));
    assert!(v["pause_ttl_ms"].as_i64().unwrap() > 6 * 86_400_000);
    assert!(v["session"]["id"].is_string());
    assert_eq!(v["names"], json!([ANA]));
    assert_eq!(v["paused_by"], json!({"kind": "operator", "name": "sam"}));
    let out = coexist(
        &["conversation", "release", PNID, ANA, "--by", "Lee Park"],
        &env,
        None,
    );
    assert!(out.status.success());
    let ev = lines(&out);
    assert_eq!(ev[0]["event"]["reason"], json!("operator"));
    assert_eq!(
        ev[0]["event"]["by"],
        json!({"kind": "operator", "name": "Lee Park"})
    );
    assert_eq!(show(&env)["handler"], json!("bot"));
    // --for sets the pause's length.
    let out = coexist(
        &[
            "conversation",
            "pause",
            PNID,
            ANA,
            "--for",
            "2h",
            "--by",
            "sam",
        ],
        &env,
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ttl = show(&env)["pause_ttl_ms"].as_i64().unwrap();
    assert!((7_000_000..=7_200_000).contains(&ttl), "{ttl}");
    let out = coexist(
        &["conversation", "pause", PNID, ANA, "--for", "soon"],
        &env,
        None,
    );
    // clap's own refusal: its line, then a pointer to --help.
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a duration"), "{}", stderr(&out));
    // Bad arguments: one line, non-zero.
    let out = coexist(
        &["conversation", "show", PNID, "not a customer!"],
        &env,
        None,
    );
    assert_refused(&out, "");
    let out = coexist(
        &["conversation", "show", PNID, ANA],
        &[("COEXIST_REDIS_URL", "redis://127.0.0.1:1")],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("coexist: cannot reach Redis"),
        "{}",
        stderr(&out)
    );
    // Absurd lengths are refused in one line, not carried into a date past year 9999.
    let out = coexist(
        &["conversation", "pause", PNID, ANA, "--for", "100000y"],
        &env,
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("at most ten years"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_ingress_refuses_to_start_without_an_app_secret() {
    for cmd in [vec!["ingress"], vec!["serve"]] {
        let out = coexist(&cmd, &[], None);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
        assert_eq!(
            stderr(&out).trim_end(),
            "coexist: config: app_secret: the ingress needs Meta's app secret (COEXIST_APP_SECRET)"
        );
    }
}

#[test]
fn conversation_show_finds_a_customer_by_any_linked_name() {
    let ns = NsGuard(unique_ns("clinames"));
    let bsuid = "US.13491208655302741918";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = coexist::adapters::redis::RedisStore::connect(&redis_url(), &ns.0)
            .await
            .unwrap();
        let engine = coexist::core::apply::Applier::new(
            store,
            book(coexist::core::engine::Rules::default()),
        );
        let t = t0();
        feed(&engine, &echo_text(ANA, "wamid.CN1", t, "Te atiendo"), t).await;
        // A message naming both links the id to the phone's conversation.
        let mut both: Value =
            serde_json::from_str(&customer_text(ANA, "wamid.CN2", t + 1, "hola")).unwrap();
        both["entry"][0]["changes"][0]["value"]["contacts"][0]["user_id"] = json!(bsuid);
        feed(&engine, &both.to_string(), t + 1).await;
    });
    let env = [
        ("COEXIST_NAMESPACE", ns.0.as_str()),
        ("COEXIST_REDIS_URL", "redis://127.0.0.1:6379"),
    ];
    let out = coexist(&["conversation", "show", PNID, bsuid], &env, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["conversation"], json!(format!("{PNID}:{ANA}")));
    assert_eq!(v["names"], json!([ANA, bsuid]));
    assert_eq!(v["handler"], json!("human"));
}

#[test]
fn process_summary_lines_match_the_json_lines_one_for_one() {
    for (args, config) in [
        (vec!["examples/handover-story.jsonl"], None),
        (
            vec!["examples/coexistence-story.jsonl"],
            Some("examples/coexistence.toml"),
        ),
    ] {
        let mut json_args = vec!["process"];
        let mut summary_args = vec!["process", "--format", "summary"];
        json_args.extend(&args);
        summary_args.extend(&args);
        let env: Vec<(&str, &str)> = config.map(|c| ("COEXIST_CONFIG", c)).into_iter().collect();
        let json = lines(&coexist(&json_args, &env, None));
        let out = coexist(&summary_args, &env, None);
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(summary.len(), json.len(), "{args:?}");
        for (line, j) in summary.iter().zip(&json) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields[0], j["exchange"].as_str().unwrap(), "{line}");
            assert_eq!(fields[1], j["routing_key"].as_str().unwrap(), "{line}");
            let e = &j["event"];
            if let Some(text) = e["message"]["text"].as_str() {
                assert!(line.contains(text), "{line} shows {text:?}");
                assert_eq!(
                    line.contains("📱"),
                    e["message"]["icon"] == json!("📱"),
                    "{line}"
                );
            }
            if let Some(reason) = e["reason"].as_str() {
                assert!(line.ends_with(reason), "{line}");
            }
        }
    }
    let out = coexist(&["process", "--format", "yaml"], &[], Some(""));
    assert_eq!(out.status.code(), Some(2), "an unknown format is refused");
}

#[test]
fn schema_prints_the_checked_in_schema_and_it_refuses_what_is_not_an_event() {
    let out = coexist(&["schema"], &[], None);
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let file: Value = serde_json::from_str(include_str!("../../docs/events.schema.json")).unwrap();
    assert_eq!(
        printed, file,
        "docs/events.schema.json is `coexist schema`'s output"
    );
    assert_eq!(
        printed["$schema"],
        json!("https://json-schema.org/draft/2020-12/schema")
    );
    // Every story event passes (checked in `lines`' callers); these do not.
    let story = lines(&coexist(
        &["process", "examples/handover-story.jsonl"],
        &[],
        None,
    ));
    let good = story[0]["event"].clone();
    assert_matches_schema(&good);
    for broken in [
        json!({"type": "message.received"}),
        {
            let mut e = good.clone();
            e["type"] = json!("message.teleported");
            e
        },
        {
            let mut e = good.clone();
            e.as_object_mut().unwrap().remove("session_id");
            e
        },
        {
            let mut e = good.clone();
            e.as_object_mut().unwrap().remove("handback");
            e
        },
        {
            let mut e = good.clone();
            e["message"]["source"] = json!("carrier_pigeon");
            e
        },
    ] {
        let refused = std::panic::catch_unwind(|| assert_matches_schema(&broken)).is_err();
        assert!(refused, "the schema refuses {broken}");
    }
}

#[test]
fn conversation_list_shows_who_is_with_a_human_soonest_release_first() {
    let ns = NsGuard(unique_ns("clilist"));
    let env = [
        ("COEXIST_NAMESPACE", ns.0.as_str()),
        ("COEXIST_REDIS_URL", "redis://127.0.0.1:6379"),
    ];
    let list = || {
        let out = coexist(&["conversation", "list", "--json"], &env, None);
        assert!(out.status.success(), "{}", stderr(&out));
        lines(&out)
    };
    assert!(list().is_empty(), "nobody yet");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = t0();
    let store = rt
        .block_on(coexist::adapters::redis::RedisStore::connect(
            &redis_url(),
            &ns.0,
        ))
        .unwrap();
    let engine =
        coexist::core::apply::Applier::new(store, book(coexist::core::engine::Rules::default()));
    rt.block_on(async {
        // Luis was answered an hour after Ana: Ana's pause ends first.
        feed(&engine, &echo_text(LUIS, "wamid.LS2", t, "Hola Luis"), t).await;
        feed(
            &engine,
            &echo_text(ANA, "wamid.LS1", t - 3600, "Hola Ana"),
            t,
        )
        .await;
        feed(
            &engine,
            &customer_text("5215551230003", "wamid.LS3", t, "just the bot"),
            t,
        )
        .await;
    });
    let paused = list();
    assert_eq!(paused.len(), 2, "{paused:?}");
    assert_eq!(paused[0]["customer"], json!(ANA));
    assert_eq!(paused[0]["trigger_message_id"], json!("wamid.LS1"));
    assert_eq!(paused[0]["phone_number_id"], json!(PNID));
    assert_eq!(
        paused[0]["paused_until"],
        json!(coexist::core::time::Millis::from_secs(t - 3600 + 7 * 86_400).rfc3339())
    );
    assert_eq!(paused[1]["customer"], json!(LUIS));
    assert_eq!(
        paused[0]["by"],
        json!({"kind": "business_app", "name": null})
    );
    // The table, for people.
    let out = coexist(&["conversation", "list"], &env, None);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table.lines().next().unwrap().starts_with("number"),
        "{table}"
    );
    assert!(
        table.lines().nth(1).unwrap().contains("wamid.LS1"),
        "{table}"
    );
    // After a reset, Ana is the AI agent's again.
    rt.block_on(feed(
        &engine,
        &echo_text(ANA, "wamid.LS4", t + 1, "/reset"),
        t + 1,
    ));
    let paused = list();
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0]["customer"], json!(LUIS));
}

#[test]
fn send_and_tail_refuse_bad_arguments_in_one_line() {
    let out = coexist(&["send", "examples/webhooks/customer-text.json"], &[], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim_end(),
        "coexist: config: app_secret: send signs with Meta's app secret (COEXIST_APP_SECRET)"
    );
    let out = coexist(
        &[
            "send",
            "--url",
            "https://example.invalid/webhook",
            "examples/webhooks/customer-text.json",
        ],
        &[("COEXIST_APP_SECRET", "s")],
        None,
    );
    assert_refused(&out, "not an http:// URL");
    let out = coexist(&["tail", "--conversation", "no-colon"], &[], None);
    assert_refused(&out, "");
}

#[test]
fn no_forgeable_defaults_in_compose_and_placeholders_refused() {
    let compose = include_str!("../../docker-compose.yml");
    let example = include_str!("../../.env.example");
    for var in [
        "COEXIST_APP_SECRET",
        "COEXIST_VERIFY_TOKEN",
        "COEXIST_GATE_TOKEN",
        "COEXIST_CONSOLE_TOKEN",
    ] {
        assert!(
            compose.contains(&format!("{var}: ${{{var}:?")),
            "compose refuses to start without {var}"
        );
    }
    // Every required variable is in .env.example, empty (no value anyone could copy).
    for var in [
        "COEXIST_APP_SECRET",
        "COEXIST_VERIFY_TOKEN",
        "COEXIST_GATE_TOKEN",
        "COEXIST_CONSOLE_TOKEN",
        "RABBITMQ_USER",
        "RABBITMQ_PASSWORD",
    ] {
        assert!(compose.contains(&format!("${{{var}:?")), "{var} required");
        assert!(
            example.lines().any(|l| l == format!("{var}=")),
            ".env.example names {var}, empty"
        );
    }
    assert!(!compose.contains("change-me"));
    assert!(
        !compose.contains("RABBITMQ_DEFAULT_PASS: coexist"),
        "no default broker password"
    );
    // The README's placeholders, copied as they are, stop the ingress in one line.
    let out = coexist(
        &["ingress"],
        &[("COEXIST_APP_SECRET", "your-meta-app-secret")],
        None,
    );
    assert_refused(&out, "is a placeholder");
    let out = coexist(
        &["gate"],
        &[("COEXIST_GATE_TOKEN", "your-gate-token")],
        None,
    );
    assert_refused(&out, "is a placeholder");
}

/// docker compose cannot run here: the compose file and every YAML file under config/ at least
/// parse, and the observability services come only with their profile.
#[test]
fn compose_and_config_yaml_parse() {
    use yaml_rust2::YamlLoader;
    let parse = |path: &str| {
        let text =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
                .unwrap_or_else(|e| panic!("{path}: {e}"));
        YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
            .remove(0)
    };
    let compose = parse("docker-compose.yml");
    let services = &compose["services"];
    // Published to every interface: the webhook only. The rest on loopback, metrics nowhere.
    for (name, ports) in [
        ("ingress", vec!["8080:8080"]),
        ("gate", vec!["127.0.0.1:8081:8081"]),
        ("console", vec!["127.0.0.1:8082:8082"]),
        ("rabbitmq", vec!["127.0.0.1:15672:15672"]),
    ] {
        let published: Vec<&str> = services[name]["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .filter_map(|p| p.as_str())
            .collect();
        assert_eq!(published, ports, "{name}'s published ports");
    }
    assert_eq!(
        services["ingress"]["environment"]["COEXIST_ADMIN_LISTEN"].as_str(),
        Some("0.0.0.0:9090"),
        "the ingress's metrics on its admin address, unpublished"
    );
    for name in ["rabbitmq", "redis", "ingress", "gate", "console", "worker"] {
        assert!(!services[name].is_badvalue(), "service {name}");
        assert!(
            services[name]["profiles"].is_badvalue(),
            "{name} runs by default"
        );
    }
    for name in ["prometheus", "grafana", "jaeger"] {
        assert_eq!(
            services[name]["profiles"][0].as_str(),
            Some("observability"),
            "{name} only with the observability profile"
        );
    }
    for path in [
        "config/prometheus/prometheus.yml",
        "config/prometheus/alerts.yml",
        "config/prometheus/alerts.test.yml",
        "config/grafana/provisioning/datasources/prometheus.yml",
        "config/grafana/provisioning/dashboards/coexist.yml",
    ] {
        assert!(!parse(path).is_badvalue(), "{path}");
    }
}

/// Nothing Meta sends is dropped in silence: a change of a field coexist does not handle is
/// reported on stderr (once per field), and the events of the rest are printed.
#[test]
fn process_says_what_it_does_not_handle() {
    let unknown = |field: &str| {
        envelope(
            field,
            json!({"messaging_product": "whatsapp", "metadata": metadata(), "anything": 1}),
        )
    };
    let input = [
        unknown("automatic_events"),
        unknown("calls"),
        unknown("calls"),
        customer_text(ANA, "wamid.UF1", 1764000000, "hola"),
    ]
    .join("\n");
    let out = coexist(&["process"], &[], Some(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines(&out).len(), 1, "the customer's message");
    let err = stderr(&out);
    let said = |field: &str| {
        err.lines()
            .filter(|l| l.contains("does not handle") && l.contains(field))
            .count()
    };
    assert_eq!(said("automatic_events"), 1, "{err}");
    assert_eq!(said("calls"), 1, "once per field: {err}");
}

/// An operator's typo is refused before anything is sent: `hello` is no one's id, `12345` no
/// one's number.
#[test]
fn conversation_commands_refuse_what_cannot_be_a_customer() {
    for customer in ["hello", "12345", "reset"] {
        let out = coexist(&["conversation", "pause", PNID, customer], &[], None);
        assert_refused(&out, "is not a customer: a phone number (6 to 15 digits)");
    }
    let out = coexist(&["conversation", "pause", "not-a-number", ANA], &[], None);
    assert_refused(&out, "is not a phone_number_id");
}
