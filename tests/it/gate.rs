//! The reply gate (R17) on real RabbitMQ and Redis, with a local stand-in for Meta's Graph API
//! that records what reaches it.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::support::*;

const SECS: Duration = Duration::from_secs(1);
const AGENT_AUTH: &str = "Bearer agent-own-meta-token";

/// An ingress, a worker and a gate in their own namespace, the gate forwarding to a stand-in.
pub(crate) struct GateStack {
    pub(crate) stack: Stack,
    pub(crate) graph: GraphStandIn,
    pub(crate) gate: coexist::services::gate::Running,
    _shutdown: CancellationToken,
}

impl GateStack {
    pub(crate) async fn start(name: &str, extra: &[(&str, &str)]) -> GateStack {
        let graph = GraphStandIn::start().await;
        let mut vars = vec![
            ("COEXIST_GRAPH_URL", graph.url.as_str()),
            ("COEXIST_GATE_LISTEN", "127.0.0.1:0"),
        ];
        vars.extend_from_slice(extra);
        let stack = Stack::start(name, 1, &vars).await;
        let shutdown = CancellationToken::new();
        let gate = coexist::services::gate::start(&stack.config, &shutdown)
            .await
            .unwrap();
        GateStack {
            stack,
            graph,
            gate,
            _shutdown: shutdown,
        }
    }

    /// Posts a reply through the gate as an agent does: (status, JSON answer).
    pub(crate) async fn reply(&self, body: &Value, token: Option<&str>) -> (u16, Value) {
        self.reply_raw(body.to_string().as_bytes(), token, &[])
            .await
    }

    pub(crate) async fn reply_raw(
        &self,
        body: &[u8],
        token: Option<&str>,
        extra: &[(&str, String)],
    ) -> (u16, Value) {
        let mut headers = vec![
            ("Authorization", AGENT_AUTH.to_owned()),
            ("Content-Type", "application/json".to_owned()),
        ];
        if let Some(t) = token {
            headers.push(("X-Coexist-Reply-Token", t.to_owned()));
        }
        headers.extend(extra.iter().cloned());
        let path = format!("/v21.0/{PNID}/messages");
        let (status, text) = http(self.gate.addr, "POST", &path, &headers, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Posts a customer's message and takes its bot `message.received`: its `reply_token`.
    pub(crate) async fn bot_token(&self, body: &str) -> String {
        self.stack.post_until_ok(body, 10 * SECS).await;
        let sent: Value = serde_json::from_str(body).unwrap();
        let wamid = &sent["entry"][0]["changes"][0]["value"]["messages"][0]["id"];
        let received = first_event(&self.stack.ns, "bot", 10 * SECS, |e| {
            e.kind == "message.received" && e.body["message"]["id"] == *wamid
        })
        .await
        .expect("the bot's message.received");
        received.1.body["reply_token"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn stop(self) {
        self.gate.stop().await;
        self.stack.stop().await;
    }
}

pub(crate) fn text_reply(to: &str, text: &str) -> Value {
    json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
           "type": "text", "text": {"preview_url": false, "body": text}})
}

#[tokio::test]
async fn a_reply_with_its_token_is_forwarded_byte_for_byte_and_recorded() {
    let g = GateStack::start("gate-ok", &[]).await;
    let t = t0();
    let token = g
        .bot_token(&customer_text(ANA, "wamid.G1", t, "¿Tienen talla M?"))
        .await;
    assert!(token.starts_with("rt1."), "{token}");
    // Pretty-printed on purpose: forwarded as it came, whitespace and all.
    let body = serde_json::to_vec_pretty(&text_reply(ANA, "Sí, la tenemos")).unwrap();
    let (status, answer) = g.reply_raw(&body, Some(&token), &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["messages"][0]["id"],
        json!("wamid.STANDIN1"),
        "Meta's answer as it is"
    );
    let got = g.graph.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, format!("/v21.0/{PNID}/messages"));
    assert_eq!(
        got[0].authorization.as_deref(),
        Some(AGENT_AUTH),
        "the agent's own credentials"
    );
    assert_eq!(&got[0].body[..], &body[..], "byte for byte");
    let human = take_events(&g.stack.ns, "human_chat", 1, 10 * SECS).await;
    assert_eq!(human.len(), 1);
    assert_eq!(human[0].kind, "message.sent_by_bot");
    let m = &human[0].body["message"];
    assert_eq!(m["id"], json!("wamid.STANDIN1"));
    assert_eq!(m["source"], json!("bot"));
    assert_eq!(m["text"], json!("Sí, la tenemos"));
    assert_eq!(human[0].body["customer"]["wa_id"], json!(ANA));
    // Meta refusing is answered as Meta said, and nothing is recorded as sent.
    g.graph.answer_with(
        400,
        r#"{"error":{"message":"(#131047) Re-engagement message","code":131047}}"#,
    );
    let (status, answer) = g.reply(&text_reply(ANA, "¿Algo más?"), Some(&token)).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], json!(131047));
    stays_empty(&g.stack.ns, "human_chat", "nothing sent, nothing recorded").await;
    g.stop().await;
}

#[tokio::test]
async fn a_human_reply_holds_the_conversation_and_the_agent_sees_why() {
    let g = GateStack::start("gate-held", &[]).await;
    let t = t0();
    let token = g
        .bot_token(&customer_text(ANA, "wamid.H1", t, "hola"))
        .await;
    g.stack
        .post_until_ok(
            &echo_text(ANA, "wamid.H2", t + 1, "Hola Ana, soy Sam"),
            10 * SECS,
        )
        .await;
    let human = take_events(&g.stack.ns, "human_chat", 2, 10 * SECS).await;
    assert!(human.iter().any(|e| e.kind == "conversation.handover"));
    let (status, answer) = g
        .reply(
            &text_reply(ANA, "Soy el bot: ¿en qué te ayudo?"),
            Some(&token),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    let error = &answer["error"];
    assert_eq!(error["type"], json!("coexist_reply_refused"));
    assert_eq!(error["code"], json!(409));
    assert_eq!(error["error_data"]["reason"], json!("conversation_held"));
    assert!(error["error_data"]["paused_until"].is_string());
    assert!(g.graph.received().is_empty(), "nothing reached Meta");
    let suppressed = take_events(&g.stack.ns, "human_chat", 1, 10 * SECS).await;
    assert_eq!(suppressed.len(), 1);
    assert_eq!(suppressed[0].kind, "reply.suppressed");
    assert_eq!(suppressed[0].body["reason"], json!("conversation_held"));
    assert_eq!(
        suppressed[0].body["message"]["text"],
        json!("Soy el bot: ¿en qué te ayudo?"),
        "the person sees what the AI agent would have said"
    );
    // Without a token too, and read receipts: held, but no reply.suppressed for a receipt.
    let (status, _) = g.reply(&text_reply(ANA, "otra"), None).await;
    assert_eq!(status, 409);
    let receipt = json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.H1", "to": ANA});
    assert_eq!(g.reply(&receipt, None).await.0, 409);
    let more = take_events(&g.stack.ns, "human_chat", 2, 5 * SECS).await;
    assert_eq!(
        kinds_of(&more),
        ["reply.suppressed"],
        "one for the text, none for the receipt"
    );
    assert!(g.graph.received().is_empty());
    // What an agent that sends by itself reads.
    let path = format!("/v1/conversations/{PNID}/{ANA}");
    let (status, body) = http(g.gate.addr, "GET", &path, &[], b"").await;
    assert_eq!(status, 200);
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["handler"], json!("human"));
    assert!(view["paused_until"].is_string());
    assert_ne!(view["reply_token"], json!(token), "the hand changed");
    g.stop().await;
}

fn kinds_of(events: &[Taken]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

#[tokio::test]
async fn after_a_reset_an_old_token_is_stale_and_the_next_messages_token_passes() {
    let g = GateStack::start("gate-stale", &[]).await;
    let t = t0();
    let old = g
        .bot_token(&customer_text(ANA, "wamid.S1", t, "hola"))
        .await;
    g.stack
        .post_until_ok(
            &echo_text(ANA, "wamid.S2", t + 1, "te atiendo yo"),
            10 * SECS,
        )
        .await;
    g.stack
        .post_until_ok(&echo_text(ANA, "wamid.S3", t + 2, "/reset"), 10 * SECS)
        .await;
    let human = take_events(&g.stack.ns, "human_chat", 3, 10 * SECS).await;
    assert!(
        human.iter().any(|e| e.kind == "conversation.released"),
        "{:?}",
        kinds_of(&human)
    );
    let _ = take_events(&g.stack.ns, "bot", 1, 2 * SECS).await; // session.paused
    let (status, answer) = g
        .reply(&text_reply(ANA, "respuesta tardía"), Some(&old))
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        answer["error"]["error_data"]["reason"],
        json!("stale_reply")
    );
    assert_eq!(answer["error"]["error_data"]["paused_until"], Value::Null);
    let fresh = g
        .bot_token(&customer_text(ANA, "wamid.S4", t + 3, "¿sigues?"))
        .await;
    assert_ne!(fresh, old);
    let (status, _) = g.reply(&text_reply(ANA, "aquí estoy"), Some(&fresh)).await;
    assert_eq!(status, 200);
    assert_eq!(
        g.graph.received().len(),
        1,
        "only the fresh reply reached Meta"
    );
    g.stop().await;
}

#[tokio::test]
async fn a_customer_known_by_phone_and_business_scoped_id_is_held_under_both() {
    let g = GateStack::start("gate-names", &[]).await;
    let t = t0();
    let bsuid = "US.13491208655302741918";
    // One message names both: the names are linked.
    let both = envelope(
        "messages",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
               "contacts": [{"profile": {"name": "Ana"}, "wa_id": ANA, "user_id": bsuid}],
               "messages": [{"from": ANA, "from_user_id": bsuid, "id": "wamid.N1",
                             "timestamp": t.to_string(), "type": "text", "text": {"body": "hola"}}]}),
    );
    let token = g.bot_token(&both).await;
    let by_id = json!({"messaging_product": "whatsapp", "recipient": bsuid, "type": "text", "text": {"body": "por id"}});
    assert_eq!(
        g.reply(&by_id, Some(&token)).await.0,
        200,
        "free: forwarded by id"
    );
    // The human answers by phone: held under both names.
    g.stack
        .post_until_ok(&echo_text(ANA, "wamid.N2", t + 1, "te atiendo"), 10 * SECS)
        .await;
    let _ = take_events(&g.stack.ns, "human_chat", 3, 10 * SECS).await;
    let (status, answer) = g.reply(&by_id, Some(&token)).await;
    assert_eq!(
        (status, &answer["error"]["error_data"]["reason"]),
        (409, &json!("conversation_held"))
    );
    let (status, _) = g
        .reply(&text_reply(ANA, "por teléfono"), Some(&token))
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        g.graph.received().len(),
        1,
        "only the reply before the human's"
    );
    g.stop().await;
}

#[tokio::test]
async fn outside_the_service_window_only_templates_pass() {
    let g = GateStack::start("gate-window", &[]).await;
    let long_ago = t0() - 25 * 3600;
    let token = g
        .bot_token(&customer_text(ANA, "wamid.W1", long_ago, "hola"))
        .await;
    let (status, answer) = g
        .reply(&text_reply(ANA, "¿sigues ahí?"), Some(&token))
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        answer["error"]["error_data"]["reason"],
        json!("outside_service_window")
    );
    let template = json!({"messaging_product": "whatsapp", "to": ANA, "type": "template",
                          "template": {"name": "follow_up", "language": {"code": "es"}}});
    assert_eq!(g.reply(&template, Some(&token)).await.0, 200);
    let got = g.graph.received();
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0].body).contains("follow_up"));
    g.stop().await;
}

#[tokio::test]
async fn bad_bodies_are_400_and_meta_away_is_502_within_the_bound() {
    let g = GateStack::start("gate-bad", &[]).await;
    for body in [
        &b"not json"[..],
        b"[1,2]",
        br#"{"type":"text","text":{"body":"to nobody"}}"#,
    ] {
        let (status, answer) = g.reply_raw(body, None, &[]).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(body));
        assert_eq!(answer["error"]["type"], json!("coexist_bad_request"));
    }
    assert!(g.graph.received().is_empty(), "nothing forwarded");
    // Meta silent: 502 once the gate's bound (10 s) has passed, nothing published.
    let t = t0();
    let token = g
        .bot_token(&customer_text(ANA, "wamid.B1", t, "hola"))
        .await;
    g.graph.delay(Duration::from_secs(30));
    let started = std::time::Instant::now();
    let (status, answer) = g.reply(&text_reply(ANA, "hola"), Some(&token)).await;
    let took = started.elapsed();
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"]["type"], json!("coexist_graph_unreachable"));
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(13),
        "{took:?}"
    );
    assert_eq!(g.graph.received().len(), 1, "tried once, never retried");
    stays_empty(
        &g.stack.ns,
        "human_chat",
        "nothing published for a reply Meta never answered",
    )
    .await;
    g.stop().await;
    // Meta unreachable (nothing listens): 502 at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let ns = unique_ns("gate-down");
    let (_r, _a) = (NsGuard(ns.clone()), AmqpNsGuard(ns.clone()));
    let config = stack_config(
        &ns,
        &[
            ("COEXIST_GRAPH_URL", &url),
            ("COEXIST_GATE_LISTEN", "127.0.0.1:0"),
        ],
    );
    let shutdown = CancellationToken::new();
    let gate = coexist::services::gate::start(&config, &shutdown)
        .await
        .unwrap();
    let body = text_reply(ANA, "hola").to_string();
    let path = format!("/v21.0/{PNID}/messages");
    // No state yet: no customer message, so no window either; a template is judged on holding only.
    let template = json!({"to": ANA, "type": "template", "template": {"name": "t"}}).to_string();
    let started = std::time::Instant::now();
    let (status, text) = http(gate.addr, "POST", &path, &[], template.as_bytes()).await;
    assert_eq!(status, 502, "{text}");
    assert!(started.elapsed() < Duration::from_secs(6));
    let (status, _) = http(gate.addr, "POST", &path, &[], body.as_bytes()).await;
    assert_eq!(
        status, 409,
        "free-form with no customer message: outside the window"
    );
    gate.stop().await;
}

#[tokio::test]
async fn the_gate_token_is_required_when_set() {
    let g = GateStack::start("gate-token", &[("COEXIST_GATE_TOKEN", "s3cret-gate-token")]).await;
    let t = t0();
    let token = g
        .bot_token(&customer_text(ANA, "wamid.T1", t, "hola"))
        .await;
    let reply = text_reply(ANA, "hola").to_string();
    for wrong in [None, Some("nope".to_owned())] {
        let extra: Vec<(&str, String)> = wrong
            .into_iter()
            .map(|w| ("X-Coexist-Gate-Token", w))
            .collect();
        let (status, answer) = g.reply_raw(reply.as_bytes(), Some(&token), &extra).await;
        assert_eq!(status, 401, "{answer}");
        let path = format!("/v1/conversations/{PNID}/{ANA}");
        assert_eq!(http(g.gate.addr, "GET", &path, &extra, b"").await.0, 401);
    }
    assert!(g.graph.received().is_empty());
    let extra = [("X-Coexist-Gate-Token", "s3cret-gate-token".to_owned())];
    assert_eq!(
        g.reply_raw(reply.as_bytes(), Some(&token), &extra).await.0,
        200
    );
    // Health and metrics stay open.
    assert_eq!(http(g.gate.addr, "GET", "/healthz", &[], b"").await.0, 200);
    let (status, metrics) = http(g.gate.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("coexist_replies_total"), "{metrics}");
    g.stop().await;
}

/// The gate refuses to start open on an address others can reach.
#[test]
fn the_gate_refuses_to_start_open_on_a_non_loopback_address() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coexist"))
        .arg("gate")
        .env_clear()
        .env("COEXIST_GATE_LISTEN", "0.0.0.0:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("COEXIST_GATE_TOKEN"), "{err}");
}

/// The race the gate exists for: agents replying in a tight loop while a human's echo arrives.
/// Once the handover event is published (here: received), nothing more reaches Meta. Run many
/// times over; it holds by construction (the worker waits for replies in flight before it
/// publishes the handover), not by timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn once_the_handover_is_published_nothing_more_reaches_meta() {
    let g = std::sync::Arc::new(GateStack::start("gate-race", &[]).await);
    let t = t0();
    // Handovers only, on a queue of this test's own (the default queue fills with the agents'
    // sent and suppressed replies).
    let mut handovers = Watch::start(&g.stack.ns, "human_chat", "conversation.handover").await;
    for round in 0..20 {
        let customer = format!("52155577{round:05}");
        let token = g
            .bot_token(&customer_text(
                &customer,
                &format!("wamid.R{round}a"),
                t,
                "hola",
            ))
            .await;
        let stop = CancellationToken::new();
        let agents: Vec<_> = (0..4)
            .map(|_| {
                let (g, stop, token, customer) =
                    (g.clone(), stop.clone(), token.clone(), customer.clone());
                tokio::spawn(async move {
                    let body = text_reply(&customer, "respuesta del bot");
                    let mut forwarded = 0;
                    while !stop.is_cancelled() {
                        match g.reply(&body, Some(&token)).await.0 {
                            200 => forwarded += 1,
                            409 => {}
                            other => panic!("unexpected {other}"),
                        }
                    }
                    forwarded
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        g.stack
            .post_until_ok(
                &echo_text(
                    &customer,
                    &format!("wamid.R{round}b"),
                    t + 1,
                    "te atiendo yo",
                ),
                10 * SECS,
            )
            .await;
        // The instant the handover is received here (it was published before).
        let (handover_at, _) = handovers
            .next_matching(10 * SECS, |e| {
                e.body["customer"]["wa_id"] == json!(customer)
            })
            .await
            .expect("the handover was published");
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
        let mut forwarded = 0;
        for a in agents {
            forwarded += a.await.unwrap();
        }
        let to_customer: Vec<Received> = g
            .graph
            .received()
            .into_iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains(&customer))
            .collect();
        assert_eq!(to_customer.len(), forwarded, "round {round}");
        let late: Vec<&Received> = to_customer.iter().filter(|r| r.at > handover_at).collect();
        assert!(
            late.is_empty(),
            "round {round}: {} replies reached Meta after the handover was published",
            late.len()
        );
    }
    match std::sync::Arc::try_unwrap(g) {
        Ok(g) => g.stop().await,
        Err(_) => panic!("agents still hold the stack"),
    }
}
