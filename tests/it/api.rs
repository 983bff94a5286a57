//! The admin API (`/api/v1` on the console process) and docs/openapi.yaml, on real RabbitMQ and
//! Redis: the document validated by a real OpenAPI validator, every route served in it and the
//! other way round, answers checked against the document's own schemas, and a caller limited to
//! one number seeing nothing of another.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::support::*;

const SECS: Duration = Duration::from_secs(1);
const PLATFORM: &str = "platform-api-token";
const SHOP: &str = "shop-api-token-1";
/// A second business number, that the shop's token may not see.
const OTHER: &str = "420000000000099";

struct ApiStack {
    stack: Stack,
    console: coexist::services::console::Running,
    _shutdown: CancellationToken,
}

impl ApiStack {
    async fn start(name: &str) -> ApiStack {
        ApiStack::start_with(name, &[]).await
    }

    async fn start_with(name: &str, extra: &[(&str, &str)]) -> ApiStack {
        let tokens = format!("platform:{PLATFORM},shop@{PNID}:{SHOP}");
        let mut env = vec![
            ("COEXIST_CONSOLE_LISTEN", "127.0.0.1:0"),
            ("COEXIST_CONSOLE_TOKEN", "ana:ana-console-token"),
            ("COEXIST_API_TOKEN", &tokens),
        ];
        env.extend_from_slice(extra);
        let stack = Stack::start(name, 1, &env).await;
        let shutdown = CancellationToken::new();
        let console = coexist::services::console::start(&stack.config, &shutdown)
            .await
            .unwrap();
        ApiStack {
            stack,
            console,
            _shutdown: shutdown,
        }
    }

    /// A request with `token`: (status, JSON answer or null).
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        let headers = [
            ("Authorization", auth),
            ("Content-Type", "application/json".to_owned()),
        ];
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, text) = http(self.console.addr, method, path, &headers, body.as_bytes()).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn stop(self) {
        self.console.stop().await;
        self.stack.stop().await;
    }
}

fn document() -> Value {
    coexist::tools::openapi::document()
}

/// Fails unless `answer` is valid against the document's schema `component`.
fn conforms(answer: &Value, component: &str) {
    let mut schema = json!({"$ref": format!("#/components/schemas/{component}")});
    schema["components"] = document()["components"].clone();
    let validator = jsonschema::draft202012::new(&schema).expect("the document's schemas compile");
    if let Err(e) = validator.validate(answer) {
        panic!("an answer docs/openapi.yaml's {component} refuses ({e}): {answer}");
    }
}

#[test]
fn the_openapi_document_is_current_and_a_real_validator_accepts_it() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let written = std::fs::read_to_string(root.join("docs/openapi.yaml")).unwrap();
    assert_eq!(
        written,
        coexist::tools::asyncapi::yaml(&document()),
        "docs/openapi.yaml is `coexist openapi`'s output: regenerate it"
    );
    let cli =
        std::env::var("COEXIST_TEST_OPENAPI").unwrap_or_else(|_| "openapi-spec-validator".into());
    let out = std::process::Command::new(&cli)
        .arg(root.join("docs/openapi.yaml"))
        .output()
        .unwrap_or_else(|e| {
            panic!("{cli} ({e}): scripts/test installs openapi-spec-validator from PyPI")
        });
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("OK"), "{said}");
}

#[tokio::test]
async fn every_route_served_is_in_the_document_and_every_documented_route_is_served() {
    let documented = coexist::tools::openapi::operations(&document());
    let mut listed: Vec<(String, String)> = coexist::services::console::api::ROUTES
        .iter()
        .chain(coexist::services::gate::ROUTES)
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .chain(["/healthz", "/readyz", "/metrics"].map(|p| ("GET".to_owned(), p.to_owned())))
        .collect();
    listed.sort();
    assert_eq!(documented, listed);
    // Each is served: the answer is the API's own (JSON), never the router's empty 404 or 405.
    let a = ApiStack::start("api-routes").await;
    let shutdown = CancellationToken::new();
    let gate_config = stack_config(&a.stack.ns, &[("COEXIST_GATE_LISTEN", "127.0.0.1:0")]);
    let gate = coexist::services::gate::start(&gate_config, &shutdown)
        .await
        .unwrap();
    for (method, path) in &listed {
        let concrete = path
            .replace("{id}", PNID)
            .replace("{phone_number_id}", PNID)
            .replace("{customer}", ANA)
            .replace("{version}", "v23.0");
        let addr = match coexist::services::gate::ROUTES
            .iter()
            .any(|(_, p)| p == path)
        {
            true => gate.addr,
            false => a.console.addr,
        };
        let auth = format!("Bearer {PLATFORM}");
        let body: &[u8] = if method == "GET" || method == "DELETE" {
            b""
        } else {
            b"{}"
        };
        let headers = [
            ("Authorization", auth),
            ("Content-Type", "application/json".to_owned()),
        ];
        let (status, text) = http(addr, method, &concrete, &headers, body).await;
        let routed = !text.is_empty() && status != 405;
        assert!(routed, "{method} {path} is not served: {status} {text:?}");
    }
    // And a method the document does not name is not served.
    let (status, _) = a
        .call("POST", "/api/v1/numbers", PLATFORM, Some(json!({})))
        .await;
    assert_eq!(status, 405);
    gate.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn the_api_adds_a_number_patches_its_settings_and_acts_on_its_conversations() {
    let a = ApiStack::start("api-flow").await;
    let (status, body) = a
        .call("GET", "/api/v1/numbers", "wrong-token-123", None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], json!("unauthorized"));
    let path = format!("/api/v1/numbers/{PNID}");
    let (status, record) = a
        .call(
            "PUT",
            &path,
            PLATFORM,
            Some(json!({"waba_id": WABA, "name": "Tienda Sol"})),
        )
        .await;
    assert_eq!(status, 200, "{record}");
    conforms(&record, "Record");
    assert_eq!(record["state"], json!("active"));
    let settings = format!("{path}/settings");
    let (status, patched) = a
        .call(
            "PATCH",
            &settings,
            PLATFORM,
            Some(json!({"reset_text": "/bot", "timeout": "48h"})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["settings"],
        json!({"reset_text": "/bot", "timeout": "2d"})
    );
    assert_eq!(patched["event"]["type"], json!("number.updated"));
    assert_eq!(
        patched["event"]["by"],
        json!({"kind": "operator", "name": "platform"})
    );
    let (status, patched) = a
        .call("PATCH", &settings, PLATFORM, Some(json!({"timeout": null})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        patched["settings"],
        json!({"reset_text": "/bot"}),
        "null unsets"
    );
    let (status, refused) = a
        .call(
            "PATCH",
            &settings,
            PLATFORM,
            Some(json!({"session_timeout": "never"})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("session_timeout: \"never\" is not a duration"),
        "{refused}"
    );
    let (status, shown) = a.call("GET", &path, PLATFORM, None).await;
    assert_eq!(status, 200);
    conforms(&shown, "Shown");
    let updated = take_events(&a.stack.ns, "human_chat", 2, 10 * SECS).await;
    assert_eq!(updated.len(), 2, "one number.updated per change");
    // A conversation paused through the API, listed, then released.
    let conversation = format!("/api/v1/conversations/{PNID}/{ANA}");
    let (status, done) = a
        .call(
            "POST",
            &format!("{conversation}/pause"),
            PLATFORM,
            Some(json!({"duration": "2h"})),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"]["handler"], json!("human"));
    assert!(done["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "conversation.handover"));
    let (status, page) = a
        .call(
            "GET",
            &format!("/api/v1/conversations?number={PNID}&limit=10"),
            PLATFORM,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let rows = page["conversations"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    conforms(&rows[0], "Paused");
    assert_eq!(
        rows[0]["by"],
        json!({"kind": "operator", "name": "platform"})
    );
    assert_eq!(page["next"], Value::Null);
    let (status, state) = a.call("GET", &conversation, PLATFORM, None).await;
    assert_eq!(status, 200);
    conforms(&state, "Explained");
    assert_eq!(state["handler"], json!("human"));
    let paused = state["trail"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(paused["kind"], json!("operator_pause"), "{paused}");
    assert!(
        paused["why"]
            .as_str()
            .unwrap()
            .starts_with("operator platform paused the AI agent"),
        "{paused}"
    );
    assert!(
        state["next_message"]
            .as_str()
            .unwrap()
            .starts_with("it goes to the inbox, not the AI agent: operator platform paused"),
        "{state}"
    );
    let (status, done) = a
        .call("POST", &format!("{conversation}/release"), PLATFORM, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(done["state"]["handler"], json!("bot"));
    let (status, _) = a.call("DELETE", &path, PLATFORM, None).await;
    assert_eq!(status, 204);
    let (status, _) = a.call("GET", &path, PLATFORM, None).await;
    assert_eq!(status, 404);
    a.stop().await;
}

#[tokio::test]
async fn a_caller_limited_to_one_number_sees_and_changes_nothing_of_another() {
    let a = ApiStack::start("api-scoped").await;
    for id in [PNID, OTHER] {
        let path = format!("/api/v1/numbers/{id}");
        assert_eq!(a.call("PUT", &path, PLATFORM, Some(json!({}))).await.0, 200);
        let pause = format!("/api/v1/conversations/{id}/{ANA}/pause");
        let (status, answer) = a.call("POST", &pause, PLATFORM, None).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (_, all) = a.call("GET", "/api/v1/numbers", PLATFORM, None).await;
    assert_eq!(all["numbers"].as_array().unwrap().len(), 2);
    let (status, mine) = a.call("GET", "/api/v1/numbers", SHOP, None).await;
    assert_eq!(status, 200);
    let ids: Vec<&Value> = mine["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["phone_number_id"])
        .collect();
    assert_eq!(ids, [&json!(PNID)]);
    let (_, page) = a.call("GET", "/api/v1/conversations", SHOP, None).await;
    let numbers: Vec<&Value> = page["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["phone_number_id"])
        .collect();
    assert_eq!(
        numbers,
        [&json!(PNID)],
        "only its own number's conversations"
    );
    let other = format!("/api/v1/numbers/{OTHER}");
    let other_conversation = format!("/api/v1/conversations/{OTHER}/{ANA}");
    for (method, path, body) in [
        ("GET", other.clone(), None),
        ("PUT", other.clone(), Some(json!({"name": "mine now"}))),
        ("DELETE", other.clone(), None),
        (
            "PATCH",
            format!("{other}/settings"),
            Some(json!({"reset_text": "/x"})),
        ),
        ("GET", other_conversation.clone(), None),
        ("POST", format!("{other_conversation}/release"), None),
        ("GET", format!("/api/v1/conversations?number={OTHER}"), None),
    ] {
        let (status, answer) = a.call(method, &path, SHOP, body).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], json!("not_found"));
    }
    // Nothing of the other number changed.
    let (_, still) = a.call("GET", &other_conversation, PLATFORM, None).await;
    assert_eq!(still["handler"], json!("human"));
    let (status, _) = a.call("GET", &other, PLATFORM, None).await;
    assert_eq!(status, 200);
    a.stop().await;
}

#[tokio::test]
async fn the_api_onboards_a_number_once_and_refuses_what_meta_rules_out() {
    let graph = GraphStandIn::start().await;
    let a = ApiStack::start_with("api-onboard", &[("COEXIST_GRAPH_URL", &graph.url)]).await;
    let path = format!("/api/v1/numbers/{PNID}/onboard");
    let (status, body) = a
        .call("POST", &path, PLATFORM, Some(json!({"waba_id": WABA})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("graph_token"));
    let asked = json!({"waba_id": WABA, "graph_token": "EAAG-api-business-token"});
    let (status, report) = a.call("POST", &path, PLATFORM, Some(asked.clone())).await;
    assert_eq!(status, 200, "{report}");
    conforms(&report, "Report");
    assert_eq!(report["finished"], json!(true));
    assert_eq!(report["state"], json!("active"));
    let (status, report) = a.call("POST", &path, SHOP, Some(asked.clone())).await;
    assert_eq!(status, 200, "{report}");
    let outcomes: Vec<&Value> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["outcome"])
        .collect();
    assert_eq!(outcomes, [&json!("already_done"); 4]);
    assert_eq!(graph.received().len(), 4, "each call made once");
    // A number the shop may not see does not exist for it; Meta's refusal is 422.
    let other = format!("/api/v1/numbers/{OTHER}/onboard");
    let (status, _) = a.call("POST", &other, SHOP, Some(asked.clone())).await;
    assert_eq!(status, 404);
    graph.number_is(json!({"is_on_biz_app": false, "platform_type": "CLOUD_API"}));
    let (status, body) = a.call("POST", &other, PLATFORM, Some(asked)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], json!("onboarding_refused"));
    assert_eq!(graph.received().len(), 5, "only the check was made");
    a.stop().await;
}
