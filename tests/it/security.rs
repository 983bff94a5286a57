//! What a red team got through (#28), each closed: group sends past the gate, a send naming two
//! conversations, numbers Meta writes two ways, path tricks, the mandatory reply token, bodies
//! that hold the console open, and terminal injection in human-readable output.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::gate::{text_reply, GateStack};
use crate::routing::{group_echo, group_text, GROUP};
use crate::support::*;

const SECS: Duration = Duration::from_secs(1);

/// A customer writes, then a person answers from the App: the conversation is held.
async fn held(g: &GateStack, wa_id: &str, n: u32) {
    let t = t0();
    g.stack
        .post_until_ok(
            &customer_text(wa_id, &format!("wamid.S{n}a"), t, "hola"),
            10 * SECS,
        )
        .await;
    g.stack
        .post_until_ok(
            &echo_text(wa_id, &format!("wamid.S{n}b"), t + 1, "te atiendo"),
            10 * SECS,
        )
        .await;
    first_event(&g.stack.ns, "human_chat", 10 * SECS, |e| {
        e.kind == "conversation.handover" && e.body["customer"]["wa_id"] == json!(wa_id)
    })
    .await
    .expect("the handover");
}

#[tokio::test]
async fn a_reply_to_a_held_group_is_judged_as_the_groups_and_refused() {
    let g = GateStack::start("sec-group", &[]).await;
    let t = t0();
    g.stack
        .post_until_ok(&group_text(ANA, "wamid.GR1", t, "¿abren hoy?"), 10 * SECS)
        .await;
    g.stack
        .post_until_ok(
            &group_echo("wamid.GR2", t + 1, "sí, hasta las 8"),
            10 * SECS,
        )
        .await;
    first_event(&g.stack.ns, "human_chat", 10 * SECS, |e| {
        e.kind == "conversation.handover"
            && e.header("conversation") == Some(format!("{PNID}:group:{GROUP}"))
    })
    .await
    .expect("the group's handover");
    let send = json!({"messaging_product": "whatsapp", "recipient_type": "group", "to": GROUP,
                      "type": "text", "text": {"body": "Soy el bot"}});
    let (status, answer) = g.reply(&send, None).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer["error"]["error_data"]["reason"],
        json!("conversation_held")
    );
    // Without recipient_type too: an id that is no phone number is judged as the group.
    let mut untyped = send.clone();
    untyped.as_object_mut().unwrap().remove("recipient_type");
    assert_eq!(g.reply(&untyped, None).await.0, 409);
    assert!(g.graph.received().is_empty(), "nothing reached Meta");
    g.stop().await;
}

#[tokio::test]
async fn a_send_naming_two_conversations_is_refused_and_every_recipient_field_is_judged() {
    let g = GateStack::start("sec-two", &[]).await;
    held(&g, ANA, 1).await;
    g.stack
        .post_until_ok(
            &customer_text(LUIS, "wamid.S2a", t0(), "soy Luis"),
            10 * SECS,
        )
        .await;
    eventually(10 * SECS, "Luis's conversation", || async {
        let view = http(
            g.gate.addr,
            "GET",
            &format!("/v1/conversations/{PNID}/{LUIS}"),
            &[],
            b"",
        )
        .await;
        (view.0 == 200 && view.1.contains("\"bot\""))
            .then_some(())
            .ok_or(view.1)
    })
    .await;
    let mut two = text_reply(LUIS, "hola");
    two["recipient"] = json!(ANA);
    let (status, answer) = g.reply(&two, None).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("two conversations"));
    // `to` naming nobody known and `recipient` the held customer: judged as the held one.
    let mut other = text_reply("5215559999999", "hola");
    other["recipient"] = json!(ANA);
    let (status, answer) = g.reply(&other, None).await;
    assert_eq!(status, 409);
    assert_eq!(
        answer["error"]["error_data"]["reason"],
        json!("conversation_held")
    );
    assert!(g.graph.received().is_empty(), "nothing reached Meta");
    g.stop().await;
}

#[tokio::test]
async fn numbers_meta_writes_two_ways_are_one_conversation_at_the_gate() {
    let g = GateStack::start("sec-forms", &[]).await;
    // (Meta's wa_id, the number as the business writes it)
    let cases = [
        ("5215551230007", "+52 55 5123 0007"),
        ("5491158749895", "541158749895"),
        ("559281723241", "5592981723241"),
        ("5511987654321", "551187654321"),
    ];
    for (n, (wa_id, written)) in cases.iter().enumerate() {
        held(&g, wa_id, 10 + n as u32).await;
        let (status, answer) = g.reply(&text_reply(written, "soy el bot"), None).await;
        assert_eq!(status, 409, "{wa_id} written {written}: {answer}");
        // Held, not merely unknown (a stranger's reply is refused as outside the window).
        assert_eq!(
            answer["error"]["error_data"]["reason"],
            json!("conversation_held"),
            "{wa_id} written {written}"
        );
    }
    assert!(g.graph.received().is_empty(), "nothing reached Meta");
    // A Brazilian landline has no ninth digit: the number with one is someone else.
    held(&g, "551132345678", 20).await;
    g.stack
        .post_until_ok(
            &customer_text("5511932345678", "wamid.S21", t0(), "oi"),
            10 * SECS,
        )
        .await;
    // Decided (its window open) once the AI agent has its message: the gate's view says "bot"
    // for a conversation it does not know yet, so it cannot tell.
    let received = first_event(&g.stack.ns, "bot", 10 * SECS, |e| {
        e.kind == "message.received" && e.body["message"]["id"] == json!("wamid.S21")
    })
    .await;
    assert!(
        received.is_some(),
        "the other number's message reached the AI agent"
    );
    let (status, answer) = g.reply(&text_reply("5511932345678", "olá"), None).await;
    assert_eq!(status, 200, "another number, forwarded: {answer}");
    g.stop().await;
}

#[tokio::test]
async fn the_graph_path_takes_only_metas_forms_and_the_token_can_be_required() {
    let g = GateStack::start("sec-path", &[("COEXIST_GATE_REQUIRE_TOKEN", "true")]).await;
    let body = text_reply(ANA, "hola").to_string();
    let headers = [("Content-Type", "application/json".to_owned())];
    for path in [
        "/v21.0/../messages".to_owned(),
        format!("/../{PNID}/messages"),
        format!("/%2e%2e/{PNID}/messages"),
        "/v21.0/%2e%2e/messages".to_owned(),
        format!("/./{PNID}/messages"),
        format!("/21.0/{PNID}/messages"),
        "/v21.0/pn-1/messages".to_owned(),
        format!("/v21.0.1/{PNID}/messages"),
    ] {
        let (status, _) = http(g.gate.addr, "POST", &path, &headers, body.as_bytes()).await;
        assert!(status == 400 || status == 404, "{path}: {status}");
    }
    assert!(g.graph.received().is_empty(), "no dot segment reached Meta");
    // The token is mandatory: without it 400, with it forwarded.
    let token = g
        .bot_token(&customer_text(ANA, "wamid.P1", t0(), "hola"))
        .await;
    let (status, answer) = g.reply(&text_reply(ANA, "hola"), None).await;
    assert_eq!(status, 400, "{answer}");
    assert!(g.graph.received().is_empty());
    let (status, _) = g.reply(&text_reply(ANA, "hola"), Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        g.graph.received()[0].path,
        format!("/v21.0/{PNID}/messages")
    );
    g.stop().await;
}

/// Sends a request head declaring `declared` bytes and `sent` of them, then waits: the status
/// the server answers with within `within` (0: none, the connection still open or closed).
async fn slow_post(
    addr: std::net::SocketAddr,
    path: &str,
    declared: usize,
    sent: usize,
    within: Duration,
) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nOrigin: http://test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b'a'; sent]).await.unwrap();
    let mut buf = vec![0u8; 512];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&buf[..n])
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_and_the_gate_cannot_be_held_open() {
    let operators = "ana:ana-console-token";
    let g = GateStack::start(
        "sec-hold",
        &[
            ("COEXIST_CONSOLE_LISTEN", "127.0.0.1:0"),
            ("COEXIST_CONSOLE_TOKEN", operators),
            ("COEXIST_HTTP_BODY_TIMEOUT", "1s"),
        ],
    )
    .await;
    let shutdown = CancellationToken::new();
    let console = coexist::services::console::start(&g.stack.config, &shutdown)
        .await
        .unwrap();
    // A declared 100 MB is refused at once, on both.
    assert_eq!(
        slow_post(console.addr, "/login", 100 << 20, 0, 5 * SECS).await,
        413
    );
    let gate_path = format!("/v21.0/{PNID}/messages");
    assert_eq!(
        slow_post(g.gate.addr, &gate_path, 100 << 20, 0, 5 * SECS).await,
        413
    );
    // Twenty sign-ins that never finish are cut at the body timeout...
    let hanging: Vec<_> = (0..20)
        .map(|_| tokio::spawn(slow_post(console.addr, "/login", 100, 10, 10 * SECS)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...and meanwhile a real operator signs in.
    let form = b"token=ana-console-token";
    let (status, _) = http(
        console.addr,
        "POST",
        "/login",
        &[
            ("Origin", "http://test".to_owned()),
            (
                "Content-Type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
        ],
        form,
    )
    .await;
    assert_eq!(status, 303, "the operator got in");
    for h in hanging {
        assert_eq!(h.await.unwrap(), 408, "cut by the body timeout");
    }
    assert_eq!(
        slow_post(g.gate.addr, &gate_path, 100, 10, 10 * SECS).await,
        408
    );
    console.stop().await;
    g.stop().await;
}

#[test]
fn hostile_names_and_texts_reach_a_terminal_escaped() {
    let forged = "x\r\n2026-12-05T10:00:00Z  human_chat conversation.released 5215551230001 operator  by ana";
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": metadata(),
        "contacts": [{"profile": {"name": "Ana\u{1b}[2J\u{1b}]0;pwned\u{7}\u{1b}]52;c;ZWNobyBoaQ==\u{7}"}, "wa_id": ANA}],
        "messages": [{"from": ANA, "id": "wamid.T1", "timestamp": t0().to_string(), "type": "text", "text": {"body": forged}}]}}]}]});
    let input = format!("{body}\n");
    let summary = coexist(&["process", "--format", "summary"], &[], Some(&input));
    assert!(summary.status.success(), "{}", stderr(&summary));
    let shown = String::from_utf8(summary.stdout).unwrap();
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "{shown:?}"
    );
    let json = coexist(&["process"], &[], Some(&input));
    let events = lines(&json);
    assert_eq!(
        shown.lines().count(),
        events.len(),
        "one line per event: {shown}"
    );
    // JSON stays exact.
    let text: Vec<&Value> = events
        .iter()
        .map(|e| &e["event"]["message"]["text"])
        .collect();
    assert!(text.contains(&&json!(forged)), "{events:?}");
}

#[test]
fn a_secret_written_as_a_toml_number_is_refused_without_being_shown() {
    let dir = std::env::temp_dir().join(format!("coexist-sec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret.toml");
    std::fs::write(&file, "app_secret = 918273645546372819\n").unwrap();
    let out = coexist(&["--config", file.to_str().unwrap(), "ingress"], &[], None);
    assert_refused(&out, "app_secret");
    assert!(
        !stderr(&out).contains("918273645546372819"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("write it in quotes"));
}
