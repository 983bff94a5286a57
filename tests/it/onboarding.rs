//! Onboarding (docs/contract.md, "Onboarding") against a Graph stand-in that records every call
//! and refuses a second sync as Meta does, with the registry in real Redis and events on real
//! RabbitMQ: every call made once however often `number onboard` runs, a lost answer kept as
//! `unknown` and never asked again, the 24 h rule, refusals that record nothing, the token never
//! stored, and the history sync's progress followed from `history` webhooks.
//!
//! Multi-threaded: the command runs (and blocks) on the test thread while the stand-in answers.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const SECS: Duration = Duration::from_secs(1);
const TOKEN: &str = "EAAG-business-token-never-stored-42";

struct Onboarding {
    ns: String,
    graph: GraphStandIn,
    _guard: NsGuard,
    /// The commands declare the namespace's queues (to publish number.state_changed).
    _queues: AmqpNsGuard,
}

impl Onboarding {
    async fn start(name: &str) -> Onboarding {
        let ns = unique_ns(name);
        Onboarding {
            graph: GraphStandIn::start().await,
            _guard: NsGuard(ns.clone()),
            _queues: AmqpNsGuard(ns.clone()),
            ns,
        }
    }

    /// `coexist` against this namespace and the stand-in, the token in the environment (or,
    /// with `stdin`, only there).
    fn run(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let (amqp, redis) = (amqp_url(), redis_url());
        let mut env = vec![
            ("COEXIST_NAMESPACE", self.ns.as_str()),
            ("COEXIST_AMQP_URL", amqp.as_str()),
            ("COEXIST_REDIS_URL", redis.as_str()),
            ("COEXIST_GRAPH_URL", self.graph.url.as_str()),
        ];
        if stdin.is_none() {
            env.push(("COEXIST_GRAPH_TOKEN", TOKEN));
        }
        coexist(args, &env, stdin)
    }

    fn onboard(&self, extra: &[&str]) -> (std::process::Output, Value) {
        let mut args = vec!["number", "onboard", PNID, "--waba-id", WABA, "--json"];
        args.extend(extra);
        let out = self.run(&args, None);
        let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, report)
    }

    fn show(&self) -> Value {
        let out = self.run(&["number", "show", PNID, "--json"], None);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// How many requests reached the stand-in, by kind.
    fn calls(&self) -> Value {
        let r = self.graph.received();
        let count = |f: &dyn Fn(&Received) -> bool| r.iter().filter(|x| f(x)).count();
        let sync = |t: &str| {
            let t = t.to_owned();
            move |x: &Received| {
                x.path.ends_with("/smb_app_data")
                    && serde_json::from_slice::<Value>(&x.body).unwrap()["sync_type"] == t
            }
        };
        json!({
            "check": count(&|x| x.method == "GET" && x.path == format!("/v24.0/{PNID}")),
            "subscribe": count(&|x| x.path == format!("/v24.0/{WABA}/subscribed_apps")),
            "contacts": count(&sync("smb_app_state_sync")),
            "history": count(&sync("history")),
            "all": r.len(),
        })
    }

    /// Every key and value of the namespace, as text.
    async fn everything_stored(&self) -> String {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.ns))
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut all = String::new();
        for k in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&k)
                .query_async(&mut conn)
                .await
                .unwrap();
            let dump: Vec<u8> = redis::cmd("DUMP")
                .arg(&k)
                .query_async(&mut conn)
                .await
                .unwrap();
            all.push_str(&format!("{k} {kind} {}\n", String::from_utf8_lossy(&dump)));
        }
        all
    }
}

fn steps(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn onboarding_makes_each_call_once_however_often_it_is_run_and_never_stores_the_token() {
    let o = Onboarding::start("onboard-once").await;
    let (out, report) = o.onboard(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        steps(&report),
        pairs(&[
            ("check", "done"),
            ("subscribe", "done"),
            ("contacts", "done"),
            ("history", "done")
        ])
    );
    assert_eq!(report["state"], json!("active"));
    assert_eq!(report["finished"], json!(true));
    assert_eq!(
        report["onboarding"]["contacts"]["request_id"],
        json!(format!("REQ-smb_app_state_sync-{PNID}"))
    );
    // Again, from the environment and from stdin: nothing more reaches Meta.
    for _ in 0..2 {
        let (out, report) = o.onboard(&[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            steps(&report),
            pairs(&[
                ("check", "already_done"),
                ("subscribe", "already_done"),
                ("contacts", "already_done"),
                ("history", "already_done")
            ])
        );
    }
    let out = o.run(
        &["number", "onboard", PNID, "--waba-id", WABA],
        Some(&format!("{TOKEN}\n")),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("active, onboarding finished"), "{text}");
    assert_eq!(
        o.calls(),
        json!({"check": 1, "subscribe": 1, "contacts": 1, "history": 1, "all": 4})
    );
    let received = o.graph.received();
    for r in &received {
        assert_eq!(
            r.authorization.as_deref(),
            Some(&*format!("Bearer {TOKEN}"))
        );
    }
    assert_eq!(
        received[0].query.as_deref(),
        Some("fields=is_on_biz_app,platform_type,display_phone_number,verified_name")
    );
    let shown = o.show();
    assert_eq!(shown["state"], json!("active"));
    assert_eq!(shown["waba_id"], json!(WABA));
    assert_eq!(shown["display_phone_number"], json!("15550009999"));
    assert_eq!(shown["onboarding"]["platform_type"], json!("CLOUD_API"));
    assert_eq!(shown["onboarding"]["history"]["result"], json!("requested"));
    let stored = o.everything_stored().await;
    assert!(stored.contains(":number:onboarding"), "{stored}");
    assert!(!stored.contains("business-token"), "the token was stored");
    // The state changes were published: onboarding, then active.
    let events = take_events(&o.ns, "human_chat", 2, 10 * SECS).await;
    let moves: Vec<(Value, Value)> = events
        .iter()
        .map(|e| (e.body["from"].clone(), e.body["to"].clone()))
        .collect();
    assert_eq!(
        moves,
        [
            (json!("unregistered"), json!("onboarding")),
            (json!("onboarding"), json!("active"))
        ]
    );
    assert!(events
        .iter()
        .all(|e| e.body["by"]["kind"] == json!("operator")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_whose_answer_was_lost_is_unknown_and_never_asked_again() {
    let o = Onboarding::start("onboard-lost").await;
    o.graph.lose_answers_to("history");
    let (out, report) = o.onboard(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        steps(&report),
        pairs(&[
            ("check", "done"),
            ("subscribe", "done"),
            ("contacts", "done"),
            ("history", "unknown")
        ])
    );
    let (out, report) = o.onboard(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let history = &report["steps"][3];
    assert_eq!(history["outcome"], json!("unknown"));
    assert!(
        history["detail"]
            .as_str()
            .unwrap()
            .contains("coexist never asks twice"),
        "{history}"
    );
    assert_eq!(o.calls()["history"], json!(1), "asked once only");
    assert_eq!(
        o.show()["onboarding"]["history"]["result"],
        json!("unknown")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_past_24_hours_is_refused_with_metas_rule_until_the_business_signs_up_again() {
    let o = Onboarding::start("onboard-late").await;
    // The onboarding began 25 hours ago.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let started = coexist::core::time::Millis::now().0 - 25 * 3_600_000;
    let _: () = redis::cmd("HSET")
        .arg(format!("{}:{{{PNID}}}:number:onboarding", o.ns))
        .arg("started_at")
        .arg(started)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (out, report) = o.onboard(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        steps(&report),
        pairs(&[
            ("check", "done"),
            ("subscribe", "done"),
            ("contacts", "refused"),
            ("history", "refused")
        ])
    );
    let why = report["steps"][2]["detail"].as_str().unwrap();
    assert!(why.contains("more than 24 hours ago"), "{why}");
    assert!(
        why.contains("once each, within 24 hours of onboarding"),
        "{why}"
    );
    assert_eq!(o.calls()["contacts"], json!(0));
    assert_eq!(report["finished"], json!(false));
    assert_eq!(report["state"], json!("onboarding"));
    // The business signed up again: a new window, and each sync is asked once.
    let (out, report) = o.onboard(&["--again"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        steps(&report),
        pairs(&[
            ("check", "done"),
            ("subscribe", "done"),
            ("contacts", "done"),
            ("history", "done")
        ])
    );
    assert_eq!(
        o.calls(),
        json!({"check": 2, "subscribe": 2, "contacts": 1, "history": 1, "all": 6})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_number_meta_rules_out_is_refused_with_the_reason_and_nothing_is_recorded() {
    let o = Onboarding::start("onboard-refused").await;
    for (fields, says) in [
        (
            json!({"is_on_biz_app": false, "platform_type": "CLOUD_API", "display_phone_number": "+1 555-000-9999"}),
            "not on the WhatsApp Business App (is_on_biz_app: false)",
        ),
        (
            json!({"is_on_biz_app": true, "platform_type": "NOT_APPLICABLE", "display_phone_number": "+1 555-000-9999"}),
            "platform_type is NOT_APPLICABLE, not CLOUD_API",
        ),
        (
            json!({"is_on_biz_app": true, "platform_type": "CLOUD_API", "display_phone_number": "+234 803 555 0101"}),
            "in Nigeria (+234)",
        ),
        (
            json!({"is_on_biz_app": true, "platform_type": "CLOUD_API", "display_phone_number": "+27 82 555 0101"}),
            "in South Africa (+27)",
        ),
    ] {
        o.graph.number_is(fields);
        let (out, _) = o.onboard(&[]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{err}");
    }
    assert_eq!(
        o.calls(),
        json!({"check": 4, "subscribe": 0, "contacts": 0, "history": 0, "all": 4})
    );
    let shown = o.show();
    assert_eq!(shown["state"], json!("unregistered"));
    assert_eq!(shown["onboarding"], Value::Null);
    // Without a token anywhere, the command says so and calls nothing.
    let out = o.run(&["number", "onboard", PNID, "--waba-id", WABA], Some(""));
    assert_refused(&out, "no business token");
    assert_eq!(o.calls()["all"], json!(4));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_history_syncs_progress_is_followed_from_history_webhooks() {
    let s = Stack::start("onboard-history", 1, &[]).await;
    let chunk = |phase: i64, order: i64, progress: i64, wamid: &str| {
        envelope(
            "history",
            json!({"messaging_product": "whatsapp", "metadata": metadata(),
                "history": [{"metadata": {"phase": phase, "chunk_order": order, "progress": progress},
                    "threads": [{"id": ANA, "messages": [{"from": ANA, "id": wamid,
                        "timestamp": "1760000300", "type": "text", "text": {"body": "hola"}}]}]}]}),
        )
    };
    s.post_until_ok(&chunk(0, 1, 100, "wamid.H1"), 10 * SECS)
        .await;
    s.post_until_ok(&chunk(1, 1, 20, "wamid.H2"), 10 * SECS)
        .await;
    s.post_until_ok(&chunk(1, 2, 40, "wamid.H3"), 10 * SECS)
        .await;
    // An older chunk arriving late moves nothing back.
    s.post_until_ok(&chunk(0, 2, 90, "wamid.H4"), 10 * SECS)
        .await;
    let show = || {
        let (amqp, redis) = (amqp_url(), redis_url());
        let env = [
            ("COEXIST_NAMESPACE", s.ns.as_str()),
            ("COEXIST_AMQP_URL", amqp.as_str()),
            ("COEXIST_REDIS_URL", redis.as_str()),
        ];
        let out = coexist(&["number", "show", PNID, "--json"], &env, None);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    eventually(20 * SECS, "the four chunks in the record", || {
        let progress = show()["onboarding"]["history_progress"].clone();
        async move {
            match progress == json!({"phase": 1, "progress": 40, "chunks": 4, "declined": false}) {
                true => Ok(()),
                false => Err(progress.to_string()),
            }
        }
    })
    .await;
    let declined = envelope(
        "history",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
            "history": [{"errors": [{"code": 2593109, "title": "History sync declined"}]}]}),
    );
    s.post_until_ok(&declined, 10 * SECS).await;
    eventually(20 * SECS, "the decline in the record", || {
        let progress = show()["onboarding"]["history_progress"].clone();
        async move {
            match progress["declined"] == json!(true) && progress["chunks"] == json!(4) {
                true => Ok(()),
                false => Err(progress.to_string()),
            }
        }
    })
    .await;
    s.stop().await;
}
