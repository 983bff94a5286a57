//! Real coexistence traffic (R14, R15, R16): the customer's edits and deletes, the App's own
//! automated messages, and the handback of a human-handled stretch. Each scenario runs against
//! the in-memory store and against Redis (own namespace per test).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use coexist::core::apply::{Applier, Delivery};
use coexist::core::engine::RuleBook;
use coexist::core::engine::{Input, OperatorAction, Rules};
use coexist::core::store::StateStore;
use coexist::core::time::Millis;
use serde_json::{json, Value};

use crate::support::*;

const HOUR: i64 = 3600;

fn rfc(secs: i64) -> String {
    Millis::from_secs(secs).rfc3339()
}

/// The customer edits a message: Meta's `messages` item of type `edit`.
fn customer_edit(wamid: &str, ts: i64, original: Option<&str>, new: Value) -> String {
    let mut edit = json!({"message": new});
    if let Some(o) = original {
        edit["original_message_id"] = json!(o);
    }
    customer_msg(ANA, wamid, ts, "edit", edit)
}

fn customer_revoke(wamid: &str, ts: i64, original: &str) -> String {
    customer_msg(
        ANA,
        wamid,
        ts,
        "revoke",
        json!({"original_message_id": original}),
    )
}

fn text(body: &str) -> Value {
    json!({"type": "text", "text": {"body": body}})
}

const GREETING: &str = "¡Hola! Gracias por escribirnos. Te respondemos en breve.";
const AWAY: &str = "Estamos fuera de horario";

fn automated() -> Rules {
    Rules::default().with_automated_texts(&[GREETING, AWAY])
}

both!(r14_edits_and_deletes_go_to_the_ai_agent_while_it_handles);
async fn r14_edits_and_deletes_go_to_the_ai_agent_while_it_handles<S: StateStore>(
    e: &Applier<S>,
    t: i64,
) {
    // No session yet: the edit goes to the bot and opens none.
    let ev = feed(
        e,
        &customer_edit("wamid.ED1", t, Some("wamid.M0"), text("quise decir azul")),
        t,
    )
    .await;
    assert_eq!(kinds(&ev), pairs(&[("bot", "message.edited")]));
    assert_eq!(ev[0].body["original_message_id"], json!("wamid.M0"));
    assert_eq!(ev[0].text(), Some("quise decir azul"));
    assert_eq!(ev[0].body["message"]["source"], json!("customer"));
    assert_eq!(ev[0].body["message"]["id"], json!("wamid.ED1"));
    assert_eq!(ev[0].body["session_id"], json!(null));
    assert!(ev[0].body.get("session_started").is_none());
    let first = feed(e, &customer_text(ANA, "wamid.M1", t + 1, "Hola"), t + 1).await;
    assert_eq!(
        first[0].body["session_started"],
        json!(true),
        "the edit opened no session"
    );
    // In a session: the deletion carries it and does not end it.
    let ev = feed(e, &customer_revoke("wamid.RV1", t + 2, "wamid.M1"), t + 2).await;
    assert_eq!(kinds(&ev), pairs(&[("bot", "message.revoked")]));
    assert_eq!(ev[0].body["original_message_id"], json!("wamid.M1"));
    assert_eq!(ev[0].session(), first[0].session());
    assert!(ev[0].body.get("message").is_none());
    let next = feed(e, &customer_text(ANA, "wamid.M2", t + 3, "¿y?"), t + 3).await;
    assert_eq!(next[0].body["session_started"], json!(false));
}

both!(r14_while_paused_they_go_to_the_human_and_change_nothing);
async fn r14_while_paused_they_go_to_the_human_and_change_nothing<S: StateStore>(
    e: &Applier<S>,
    t: i64,
) {
    feed(e, &echo_text(ANA, "wamid.E1", t, "Te atiendo yo"), t).await;
    let ev = feed(
        e,
        &customer_edit("wamid.ED2", t + 10, Some("wamid.X"), text("perdón")),
        t + 10,
    )
    .await;
    assert_eq!(kinds(&ev), pairs(&[("human_chat", "message.edited")]));
    let ev = feed(e, &customer_revoke("wamid.RV2", t + 11, "wamid.X"), t + 11).await;
    assert_eq!(kinds(&ev), pairs(&[("human_chat", "message.revoked")]));
    // The pause holds as it was: the next message is the human's, and the deadline is the echo's.
    let ev = feed(
        e,
        &customer_text(ANA, "wamid.M3", t + 12, "¿sigues?"),
        t + 12,
    )
    .await;
    assert_eq!(kinds(&ev), pairs(&[("human_chat", "message.received")]));
    let released = sweep(e, t + 7 * 86_400).await;
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].body["occurred_at"], json!(rfc(t + 7 * 86_400)));
}

both!(r14_odd_edits_are_still_edits);
async fn r14_odd_edits_are_still_edits<S: StateStore>(e: &Applier<S>, t: i64) {
    // Without the original's id, and with new content of a type no one knows yet.
    let ev = feed(
        e,
        &customer_edit(
            "wamid.ED3",
            t,
            None,
            json!({"type": "hologram", "hologram": {}}),
        ),
        t,
    )
    .await;
    assert_eq!(kinds(&ev), pairs(&[("bot", "message.edited")]));
    assert_eq!(ev[0].body["original_message_id"], json!(null));
    assert_eq!(ev[0].text(), Some("[hologram message]"));
    // An edit object that is not an object at all: an edit with nothing known about it.
    let ev = feed(e, &customer_msg(ANA, "wamid.ED4", t, "edit", json!("?")), t).await;
    assert_eq!(kinds(&ev), pairs(&[("bot", "message.edited")]));
    assert_eq!(ev[0].body["original_message_id"], json!(null));
}

both!(
    r15_automated_texts_are_recorded_and_pause_nothing,
    automated()
);
async fn r15_automated_texts_are_recorded_and_pause_nothing<S: StateStore>(e: &Applier<S>, t: i64) {
    let first = feed(e, &customer_text(ANA, "wamid.N1", t, "Hola"), t).await;
    // Odd case and spacing still match.
    let sloppy = "  ¡HOLA!   gracias por escribirnos.\tTe respondemos   EN BREVE. ";
    let ev = feed(e, &echo_text(ANA, "wamid.G1", t + 1, sloppy), t + 1).await;
    assert_eq!(
        kinds(&ev),
        pairs(&[("human_chat", "message.sent_from_app")])
    );
    assert_eq!(
        ev[0].body["message"]["source"],
        json!("business_app_automation")
    );
    assert_eq!(ev[0].body["message"]["icon"], json!("📱"));
    assert_eq!(ev[0].session(), first[0].session());
    // Still the AI agent's, in the same session.
    let ev = feed(e, &customer_text(ANA, "wamid.N2", t + 2, "¿Precio?"), t + 2).await;
    assert_eq!(kinds(&ev), pairs(&[("bot", "message.received")]));
    assert_eq!(ev[0].body["session_started"], json!(false));
    // A text that merely contains an automated one is a human's.
    let ev = feed(
        e,
        &echo_text(ANA, "wamid.H1", t + 3, &format!("{AWAY}, pero te ayudo")),
        t + 3,
    )
    .await;
    assert_eq!(
        kinds(&ev),
        pairs(&[
            ("bot", "session.paused"),
            ("human_chat", "conversation.handover"),
            ("human_chat", "message.sent_from_app")
        ]),
        "a human's echo right after an automated one still pauses"
    );
    assert_eq!(ev[2].body["message"]["source"], json!("business_app"));
}

fn per_number() -> RuleBook {
    let mut book = RuleBook::from(Rules::default().with_automated_texts(&[AWAY]));
    book.numbers.insert(
        PNID.into(),
        Rules::default().with_automated_texts(&[GREETING]),
    );
    book
}

both!(r15_a_numbers_own_list_replaces_the_global_one, per_number());
async fn r15_a_numbers_own_list_replaces_the_global_one<S: StateStore>(e: &Applier<S>, t: i64) {
    let ev = feed(e, &echo_text(ANA, "wamid.G2", t, GREETING), t).await;
    assert_eq!(
        kinds(&ev),
        pairs(&[("human_chat", "message.sent_from_app")])
    );
    let ev = feed(e, &echo_text(ANA, "wamid.G3", t + 1, AWAY), t + 1).await;
    assert_eq!(
        kinds(&ev),
        pairs(&[
            ("human_chat", "conversation.handover"),
            ("human_chat", "message.sent_from_app")
        ]),
        "the global text is not this number's"
    );
}

/// The `handback` of the first bot `message.received` in `evs`.
fn handback(evs: &[Ev]) -> Value {
    evs.iter()
        .find(|e| e.is("bot", "message.received"))
        .expect("a message for the AI agent")
        .body["handback"]
        .clone()
}

both!(r16_handback_after_a_reset, automated());
async fn r16_handback_after_a_reset<S: StateStore>(e: &Applier<S>, t: i64) {
    feed(e, &customer_text(ANA, "wamid.P1", t, "Hola"), t).await;
    feed(
        e,
        &echo_text(ANA, "wamid.P2", t + 10, "Soy Carla, te ayudo"),
        t + 10,
    )
    .await;
    feed(
        e,
        &customer_text(ANA, "wamid.P3", t + 20, "Busco la chaqueta azul"),
        t + 20,
    )
    .await;
    feed(e, &echo_text(ANA, "wamid.P4", t + 30, AWAY), t + 30).await;
    feed(
        e,
        &echo_text(ANA, "wamid.P5", t + 40, "Te la aparto"),
        t + 40,
    )
    .await;
    feed(e, &echo_text(ANA, "wamid.P6", t + 50, " /Reset "), t + 50).await;
    let ev = feed(
        e,
        &customer_text(ANA, "wamid.P7", t + 60, "¿Y en rojo?"),
        t + 60,
    )
    .await;
    assert_eq!(kinds(&ev), pairs(&[("bot", "message.received")]));
    assert_eq!(ev[0].body["session_started"], json!(true));
    assert_eq!(
        handback(&ev),
        json!({
            "reason": "reset_command",
            "paused_at": rfc(t + 10),
            "released_at": rfc(t + 50),
            "messages": [
                {"at": rfc(t + 10), "source": "business_app", "message_id": "wamid.P2", "text": "Soy Carla, te ayudo"},
                {"at": rfc(t + 20), "source": "customer", "message_id": "wamid.P3", "text": "Busco la chaqueta azul"},
                {"at": rfc(t + 30), "source": "business_app_automation", "message_id": "wamid.P4", "text": AWAY},
                {"at": rfc(t + 40), "source": "business_app", "message_id": "wamid.P5", "text": "Te la aparto"},
            ]
        })
    );
    assert!(!ev[0].body.to_string().to_lowercase().contains("/reset"));
    let later = feed(
        e,
        &customer_text(ANA, "wamid.P8", t + 70, "¿Talla M?"),
        t + 70,
    )
    .await;
    assert_eq!(later[0].body["session_started"], json!(false));
    assert_eq!(later[0].body["handback"], json!(null), "handed back once");
}

both!(
    r16_handback_after_a_timeout,
    Rules::new(
        "/reset",
        Duration::from_secs(HOUR as u64),
        Duration::from_secs(86_400)
    )
);
async fn r16_handback_after_a_timeout<S: StateStore>(e: &Applier<S>, t: i64) {
    feed(e, &echo_text(ANA, "wamid.T1", t, "Hola, soy Luis"), t).await;
    feed(
        e,
        &customer_text(ANA, "wamid.T2", t + 60, "Gracias"),
        t + 60,
    )
    .await;
    // Released by the sweeper at the deadline, then the customer writes.
    let released = sweep(e, t + HOUR).await;
    assert_eq!(released[0].body["reason"], json!("timeout"));
    let ev = feed(
        e,
        &customer_text(ANA, "wamid.T3", t + 2 * HOUR, "Hola otra vez"),
        t + 2 * HOUR,
    )
    .await;
    let h = handback(&ev);
    assert_eq!(h["reason"], json!("timeout"));
    assert_eq!(h["paused_at"], json!(rfc(t)));
    assert_eq!(h["released_at"], json!(rfc(t + HOUR)));
    let ids: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["wamid.T1", "wamid.T2"]);
    // A timeout the customer's own message finds first (no sweep): the same handback.
    feed(
        e,
        &echo_text(ANA, "wamid.T4", t + 3 * HOUR, "¿Algo más?"),
        t + 3 * HOUR,
    )
    .await;
    let ev = feed(
        e,
        &customer_text(ANA, "wamid.T5", t + 5 * HOUR, "No, gracias"),
        t + 5 * HOUR,
    )
    .await;
    assert_eq!(
        kinds(&ev),
        pairs(&[
            ("human_chat", "conversation.released"),
            ("bot", "message.received")
        ])
    );
    assert_eq!(handback(&ev)["reason"], json!("timeout"));
    assert_eq!(
        handback(&ev)["messages"][0]["message_id"],
        json!("wamid.T4")
    );
}

both!(r16_handback_after_an_operator_release);
async fn r16_handback_after_an_operator_release<S: StateStore>(e: &Applier<S>, t: i64) {
    let scope = coexist::core::domain::Scope::conversation(
        PNID,
        coexist::core::domain::CustomerKey::WaId(ANA.into()),
    );
    let op = |action, at: i64| Input::Operator {
        scope: scope.clone(),
        id: format!("{at}"),
        action,
        at: Millis::from_secs(at),
        duration: None,
        by: Some("ana".into()),
    };
    let a = e
        .apply(&op(OperatorAction::Pause, t), Millis::from_secs(t))
        .await
        .unwrap();
    e.acknowledge(&a).await.unwrap();
    feed(e, &customer_text(ANA, "wamid.O1", t + 5, "¿Hola?"), t + 5).await;
    let a = e
        .apply(
            &op(OperatorAction::Release, t + 9),
            Millis::from_secs(t + 9),
        )
        .await
        .unwrap();
    e.acknowledge(&a).await.unwrap();
    let ev = feed(
        e,
        &customer_text(ANA, "wamid.O2", t + 10, "¿Hola??"),
        t + 10,
    )
    .await;
    let h = handback(&ev);
    assert_eq!(h["reason"], json!("operator"));
    assert_eq!(h["paused_at"], json!(rfc(t)));
    assert_eq!(h["released_at"], json!(rfc(t + 9)));
    assert_eq!(h["messages"][0]["text"], json!("¿Hola?"));
    assert_eq!(h["messages"].as_array().unwrap().len(), 1);
}

both!(
    r16_the_last_n_are_kept,
    Rules::default().with_handback_messages(3)
);
async fn r16_the_last_n_are_kept<S: StateStore>(e: &Applier<S>, t: i64) {
    feed(e, &echo_text(ANA, "wamid.C0", t, "0"), t).await;
    for i in 1..6 {
        feed(
            e,
            &customer_text(ANA, &format!("wamid.C{i}"), t + i, &i.to_string()),
            t + i,
        )
        .await;
    }
    feed(e, &echo_text(ANA, "wamid.CR", t + 9, "/reset"), t + 9).await;
    let ev = feed(e, &customer_text(ANA, "wamid.C9", t + 10, "hola"), t + 10).await;
    let h = handback(&ev);
    let texts: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["3", "4", "5"], "the last three, oldest first");
}

both!(
    r16_zero_turns_it_off,
    Rules::default().with_handback_messages(0)
);
async fn r16_zero_turns_it_off<S: StateStore>(e: &Applier<S>, t: i64) {
    feed(e, &echo_text(ANA, "wamid.Z0", t, "Hola"), t).await;
    feed(e, &customer_text(ANA, "wamid.Z1", t + 1, "Gracias"), t + 1).await;
    feed(e, &echo_text(ANA, "wamid.ZR", t + 2, "/reset"), t + 2).await;
    let ev = feed(e, &customer_text(ANA, "wamid.Z2", t + 3, "hola"), t + 3).await;
    assert_eq!(ev[0].body["session_started"], json!(true));
    assert_eq!(handback(&ev), json!(null));
}

both!(r16_huge_texts_are_cut);
async fn r16_huge_texts_are_cut<S: StateStore>(e: &Applier<S>, t: i64) {
    let huge = "ñ".repeat(100_000);
    feed(e, &echo_text(ANA, "wamid.U0", t, &huge), t).await;
    feed(e, &echo_text(ANA, "wamid.UR", t + 1, "/reset"), t + 1).await;
    let ev = feed(e, &customer_text(ANA, "wamid.U1", t + 2, "hola"), t + 2).await;
    let kept = handback(&ev)["messages"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(kept.chars().count(), 2001);
    assert!(kept.ends_with("ñ…"));
}

both!(r16_redelivery_yields_the_same_handback);
async fn r16_redelivery_yields_the_same_handback<S: StateStore>(e: &Applier<S>, t: i64) {
    feed(e, &echo_text(ANA, "wamid.D0", t, "Hola"), t).await;
    feed(e, &echo_text(ANA, "wamid.DR", t + 1, "/reset"), t + 1).await;
    let body = customer_text(ANA, "wamid.D1", t + 2, "hola");
    // Decided, then killed before publishing: the redelivery publishes the very same event.
    let first = apply_body(e, &body, t + 2).await.remove(0);
    let again = apply_body(e, &body, t + 3).await.remove(0);
    assert_eq!(again.delivery, Delivery::Redelivered);
    assert_eq!(events(&first)[0].body, events(&again)[0].body);
    assert_eq!(
        events(&again)[0].body["handback"]["messages"][0]["message_id"],
        json!("wamid.D0")
    );
    e.acknowledge(&again).await.unwrap();
    // Published: a replay is a duplicate, and a later message has no handback.
    let replay = apply_body(e, &body, t + 4).await.remove(0);
    assert_eq!(replay.delivery, Delivery::Duplicate);
    assert!(replay.events.is_empty());
    let next = feed(e, &customer_text(ANA, "wamid.D2", t + 5, "¿y?"), t + 5).await;
    assert_eq!(next[0].body["handback"], json!(null));
}

#[tokio::test]
async fn r16_concurrent_messages_and_echoes_lose_and_repeat_no_entry() {
    let (e, _ns) = redis_engine("handbackrace", Rules::default().with_handback_messages(200)).await;
    let e = Arc::new(e);
    let t = t0();
    feed(&e, &echo_text(ANA, "wamid.R0", t, "Te atiendo"), t).await;
    let mut tasks = Vec::new();
    for i in 1..=40 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            let body = if i % 2 == 0 {
                customer_text(ANA, &format!("wamid.R{i}"), t + i, &i.to_string())
            } else {
                echo_text(ANA, &format!("wamid.R{i}"), t + i, &i.to_string())
            };
            // Each item applied twice at once, as a redelivery racing the first delivery.
            let (a, b) = tokio::join!(
                apply_body(&*e, &body, t + 50),
                apply_body(&*e, &body, t + 50)
            );
            for applied in a.into_iter().chain(b) {
                e.acknowledge(&applied).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    feed(&e, &echo_text(ANA, "wamid.RR", t + 60, "/reset"), t + 60).await;
    let ev = feed(&*e, &customer_text(ANA, "wamid.RX", t + 61, "hola"), t + 61).await;
    let ids: Vec<String> = handback(&ev)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 41, "every entry once: {ids:?}");
    assert_eq!(unique.len(), 41);
}

both!(r16_edits_and_deletes_amend_the_kept_messages);
async fn r16_edits_and_deletes_amend_the_kept_messages<S: StateStore>(e: &Applier<S>, t: i64) {
    feed(e, &echo_text(ANA, "wamid.A0", t, "Hola, soy Carla"), t).await;
    feed(e, &customer_text(ANA, "wamid.A1", t + 1, "talla S"), t + 1).await;
    feed(e, &echo_text(ANA, "wamid.A2", t + 2, "precio: 10"), t + 2).await;
    feed(
        e,
        &customer_edit("wamid.A3", t + 3, Some("wamid.A1"), text("talla M")),
        t + 3,
    )
    .await;
    let app_revoke = echo_msg(
        ANA,
        "wamid.A4",
        t + 4,
        "revoke",
        json!({"original_message_id": "wamid.A2"}),
    );
    feed(e, &app_revoke, t + 4).await;
    feed(e, &echo_text(ANA, "wamid.AR", t + 5, "/reset"), t + 5).await;
    let ev = feed(e, &customer_text(ANA, "wamid.A5", t + 6, "¿listo?"), t + 6).await;
    let h = handback(&ev);
    let kept: Vec<(&str, &str)> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["message_id"].as_str().unwrap(),
                m["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kept,
        [("wamid.A0", "Hola, soy Carla"), ("wamid.A1", "talla M")],
        "the edit applied, the deleted message gone"
    );
}
