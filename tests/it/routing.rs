//! Meta's 2026 surface (docs/contract.md, R18, R19): Conversation Routing's `standby` copies and
//! `messaging_handovers`, groups kept apart, `by` on every change of hands, `user_preferences`,
//! change-level errors. Each scenario runs on memory, Redis and Redis Cluster.

use coexist::core::apply::Applier;
use coexist::core::domain::{CustomerKey, Scope};
use coexist::core::engine::{Input, OperatorAction};
use coexist::core::meta::parse_body;
use coexist::core::store::StateStore;
use coexist::core::time::Millis;
use serde_json::{json, Value};

use crate::support::*;

const HOUR: i64 = 3600;
const BSUID: &str = "US.13491208655302741918";
pub(crate) const GROUP: &str = "Y2FwaV9ncm91cDoxNzA1";

/// A `standby` change: a customer's message copied from a thread another responder owns.
fn standby_text(from: &str, wamid: &str, ts: i64, body: &str) -> String {
    envelope(
        "standby",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
               "contacts": [{"profile": {"name": "Ana Ruiz"}, "wa_id": from}],
               "messages": [{"from": from, "id": wamid, "timestamp": ts.to_string(),
                             "type": "text", "text": {"body": body}}]}),
    )
}

/// The other responder's own message, as `standby` copies it.
fn standby_other_app(to: &str, wamid: &str, ts: i64, body: &str) -> String {
    envelope(
        "standby",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
               "message_echoes": [{"from": BUSINESS, "to": to, "id": wamid,
                                   "timestamp": ts.to_string(), "type": "text", "text": {"body": body}}]}),
    )
}

/// A `messaging_handovers` notification in the shape BSPs document.
fn handover(kind: &str, sender: Value, ts: i64) -> String {
    let mut value = json!({"messaging_product": "whatsapp",
        "recipient": {"display_phone_number": BUSINESS, "phone_number_id": PNID},
        "sender": sender, "timestamp": ts.to_string(), "type": kind});
    value[kind] = json!({"metadata": "escalated by the support bot"});
    envelope("messaging_handovers", value)
}

fn phone(p: &str) -> Value {
    json!({"phone_number": p})
}

pub(crate) fn group_text(from: &str, wamid: &str, ts: i64, body: &str) -> String {
    envelope(
        "messages",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
               "contacts": [{"profile": {"name": "Ana Ruiz"}, "wa_id": from}],
               "messages": [{"from": from, "group_id": GROUP, "id": wamid,
                             "timestamp": ts.to_string(), "type": "text", "text": {"body": body}}]}),
    )
}

pub(crate) fn group_echo(wamid: &str, ts: i64, body: &str) -> String {
    envelope(
        "smb_message_echoes",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
               "message_echoes": [{"from": BUSINESS, "group_id": GROUP, "id": wamid,
                                   "timestamp": ts.to_string(), "type": "text", "text": {"body": body}}]}),
    )
}

async fn paused_until<S: StateStore>(e: &Applier<S>, customer: &str, now: i64) -> Option<i64> {
    let key = CustomerKey::parse(customer).unwrap();
    let scope = Scope::conversation(PNID, key);
    let state = e
        .store()
        .load(&scope, "-", Millis::from_secs(now))
        .await
        .unwrap()
        .state;
    state
        .paused(Millis::from_secs(now))
        .map(|p| p.until.0 / 1000)
}

both!(standby_copies_are_observed_and_never_reach_the_bot);
async fn standby_copies_are_observed_and_never_reach_the_bot<S: StateStore>(
    e: &Applier<S>,
    t: i64,
) {
    let a = feed(e, &standby_text(ANA, "wamid.SB1", t, "¿hay envío?"), t).await;
    assert_eq!(kinds(&a), pairs(&[("human_chat", "message.observed")]));
    assert_eq!(a[0].body["message"]["source"], json!("customer"));
    assert_eq!(a[0].body["message"]["text"], json!("¿hay envío?"));
    assert_eq!(a[0].body["session_id"], Value::Null, "no session opened");
    let b = feed(
        e,
        &standby_other_app(ANA, "wamid.SB2", t + 1, "Sí, mañana"),
        t + 1,
    )
    .await;
    assert_eq!(kinds(&b), pairs(&[("human_chat", "message.observed")]));
    assert_eq!(b[0].body["message"]["source"], json!("other_app"));
    assert_eq!(b[0].body["customer"]["wa_id"], json!(ANA));
    assert_eq!(paused_until(e, ANA, t + 1).await, None, "no pause change");
    // The next message on `messages` is the AI agent's as ever: a session starts then.
    let c = feed(e, &customer_text(ANA, "wamid.SB3", t + 2, "gracias"), t + 2).await;
    assert_eq!(kinds(&c), pairs(&[("bot", "message.received")]));
    assert_eq!(c[0].body["session_started"], json!(true));
    // While a human holds the conversation, standby copies change nothing either.
    feed(
        e,
        &echo_text(ANA, "wamid.SB4", t + 3, "te atiendo yo"),
        t + 3,
    )
    .await;
    let until = paused_until(e, ANA, t + 3).await;
    let d = feed(e, &standby_text(ANA, "wamid.SB5", t + 4, "ok"), t + 4).await;
    assert_eq!(kinds(&d), pairs(&[("human_chat", "message.observed")]));
    assert_eq!(
        paused_until(e, ANA, t + 4).await,
        until,
        "the human's pause unchanged"
    );
}

both!(control_taken_pauses_and_control_passed_releases_by_routing);
async fn control_taken_pauses_and_control_passed_releases_by_routing<S: StateStore>(
    e: &Applier<S>,
    t: i64,
) {
    feed(e, &customer_text(ANA, "wamid.CT0", t, "hola"), t).await;
    let taken = feed(e, &handover("control_taken", phone(ANA), t + 60), t + 60).await;
    assert_eq!(
        kinds(&taken),
        pairs(&[
            ("bot", "session.paused"),
            ("human_chat", "conversation.handover")
        ])
    );
    let h = &taken[1].body;
    assert_eq!(h["by"], json!({"kind": "routing", "name": null}));
    assert_eq!(h["trigger_message_id"], Value::Null);
    // Idle 24 h after the customer's latest message (t), not after the notification.
    assert_eq!(
        h["paused_until"],
        json!(Millis::from_secs(t + 24 * HOUR).rfc3339())
    );
    let m = feed(
        e,
        &customer_text(ANA, "wamid.CT1", t + 120, "¿sigues?"),
        t + 120,
    )
    .await;
    assert_eq!(
        kinds(&m),
        pairs(&[("human_chat", "message.received")]),
        "not the bot's"
    );
    let passed = feed(e, &handover("control_passed", phone(ANA), t + 180), t + 180).await;
    assert_eq!(
        kinds(&passed),
        pairs(&[("human_chat", "conversation.released")])
    );
    assert_eq!(passed[0].body["reason"], json!("routing"));
    assert_eq!(
        passed[0].body["by"],
        json!({"kind": "routing", "name": null})
    );
    let back = feed(
        e,
        &customer_text(ANA, "wamid.CT2", t + 240, "hola otra vez"),
        t + 240,
    )
    .await;
    assert_eq!(kinds(&back), pairs(&[("bot", "message.received")]));
    assert_eq!(back[0].body["handback"]["reason"], json!("routing"));
}

both!(a_thread_taken_and_left_idle_for_a_day_comes_back);
async fn a_thread_taken_and_left_idle_for_a_day_comes_back<S: StateStore>(e: &Applier<S>, t: i64) {
    feed(e, &handover("control_taken", phone(ANA), t), t).await;
    // Standby copies of the customer's messages keep the thread alive: 24 h after the latest.
    feed(
        e,
        &standby_text(ANA, "wamid.ID1", t + 10 * HOUR, "una pregunta"),
        t + 10 * HOUR,
    )
    .await;
    assert_eq!(
        paused_until(e, ANA, t + 10 * HOUR).await,
        Some(t + 34 * HOUR)
    );
    let early = sweep(e, t + 25 * HOUR).await;
    assert!(early.is_empty(), "extended: nothing due at 25 h");
    let due = sweep(e, t + 34 * HOUR + 1).await;
    assert_eq!(
        kinds(&due),
        pairs(&[("human_chat", "conversation.released")])
    );
    assert_eq!(due[0].body["reason"], json!("timeout"));
    assert_eq!(due[0].body["by"], json!({"kind": "system", "name": null}));
}

both!(a_handover_for_a_customer_known_by_two_names_holds_under_both);
async fn a_handover_for_a_customer_known_by_two_names_holds_under_both<S: StateStore>(
    e: &Applier<S>,
    t: i64,
) {
    let taken = feed(
        e,
        &handover(
            "control_taken",
            json!({"phone_number": ANA, "user_id": BSUID}),
            t,
        ),
        t,
    )
    .await;
    assert_eq!(
        kinds(&taken),
        pairs(&[("human_chat", "conversation.handover")])
    );
    // The customer writes by id only: held all the same.
    let by_id = envelope(
        "messages",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
               "contacts": [{"profile": {"name": "Ana"}, "user_id": BSUID}],
               "messages": [{"from_user_id": BSUID, "id": "wamid.TN1", "timestamp": (t + 5).to_string(),
                             "type": "text", "text": {"body": "hola"}}]}),
    );
    let m = feed(e, &by_id, t + 5).await;
    assert_eq!(kinds(&m), pairs(&[("human_chat", "message.received")]));
    // Redelivered handovers change nothing.
    assert!(feed(e, &handover("control_taken", phone(ANA), t), t + 6)
        .await
        .is_empty());
    let passed = handover("control_passed", json!({"user_id": BSUID}), t + 7);
    assert_eq!(feed(e, &passed, t + 7).await.len(), 1);
    assert!(
        feed(e, &passed, t + 8).await.is_empty(),
        "redelivered: nothing more"
    );
}

#[test]
fn an_unreadable_handover_is_parked_not_dropped() {
    let nobody = envelope(
        "messaging_handovers",
        json!({"recipient": {"phone_number_id": PNID}, "type": "control_taken", "control_taken": {}}),
    );
    let parsed = parse_body(nobody.as_bytes()).unwrap();
    assert!(parsed.items.is_empty());
    assert_eq!(parsed.unreadable.len(), 1);
    assert!(
        parsed.unreadable[0].reason.contains("names no customer"),
        "{}",
        parsed.unreadable[0].reason
    );
    let no_move = envelope(
        "messaging_handovers",
        json!({"recipient": {"phone_number_id": PNID}, "sender": {"phone_number": ANA}, "type": "control_lent"}),
    );
    let parsed = parse_body(no_move.as_bytes()).unwrap();
    assert_eq!(parsed.unreadable.len(), 1);
    assert!(parsed.unreadable[0]
        .reason
        .contains("neither control_taken nor control_passed"));
    // A list of notifications is read too, each on its own.
    let list = envelope(
        "messaging_handovers",
        json!({"metadata": metadata(), "messaging_handovers": [
            {"sender": {"phone_number": ANA}, "type": "control_taken", "timestamp": "1764000000"},
            {"sender": {"phone_number": LUIS}, "control_passed": {"metadata": "x"}, "timestamp": "1764000001"}]}),
    );
    let parsed = parse_body(list.as_bytes()).unwrap();
    assert_eq!(parsed.items.len(), 2);
    assert!(parsed.unreadable.is_empty());
}

both!(a_group_keeps_its_own_state_beside_the_senders_chat);
async fn a_group_keeps_its_own_state_beside_the_senders_chat<S: StateStore>(
    e: &Applier<S>,
    t: i64,
) {
    // Ana's own chat is with a human.
    feed(e, &customer_text(ANA, "wamid.GR0", t, "hola"), t).await;
    feed(
        e,
        &echo_text(ANA, "wamid.GR1", t + 1, "te atiendo yo"),
        t + 1,
    )
    .await;
    // Her message in a group is the group's: the AI agent handles the group.
    let g = feed(e, &group_text(ANA, "wamid.GR2", t + 2, "hola grupo"), t + 2).await;
    assert_eq!(kinds(&g), pairs(&[("bot", "message.received")]));
    assert_eq!(g[0].body["group_id"], json!(GROUP));
    assert_eq!(g[0].body["customer"]["wa_id"], json!(ANA), "who wrote it");
    assert_eq!(g[0].body["session_started"], json!(true));
    assert_eq!(g[0].conversation, format!("{PNID}:group:{GROUP}"));
    // Her own chat is still with the human.
    let own = feed(
        e,
        &customer_text(ANA, "wamid.GR3", t + 3, "¿y lo mío?"),
        t + 3,
    )
    .await;
    assert_eq!(kinds(&own), pairs(&[("human_chat", "message.received")]));
    assert!(
        own[0].body.get("group_id").is_none(),
        "a one-to-one event has no group_id"
    );
    // A human answering in the group pauses the group only.
    let echo = feed(e, &group_echo("wamid.GR4", t + 4, "hola a todos"), t + 4).await;
    assert!(kinds(&echo).contains(&("human_chat".into(), "conversation.handover".into())));
    assert!(echo.iter().all(|ev| ev.body["group_id"] == json!(GROUP)));
    let after = feed(e, &group_text(LUIS, "wamid.GR5", t + 5, "gracias"), t + 5).await;
    assert_eq!(kinds(&after), pairs(&[("human_chat", "message.received")]));
    // A reset in Ana's chat releases her chat, not the group.
    let reset = feed(e, &echo_text(ANA, "wamid.GR6", t + 6, "/reset"), t + 6).await;
    assert_eq!(
        kinds(&reset),
        pairs(&[("human_chat", "conversation.released")])
    );
    assert!(reset[0].body.get("group_id").is_none());
    let still = feed(e, &group_text(ANA, "wamid.GR7", t + 7, "¿alguien?"), t + 7).await;
    assert_eq!(
        kinds(&still),
        pairs(&[("human_chat", "message.received")]),
        "the group is still held"
    );
}

both!(preferences_and_change_level_errors_are_events);
async fn preferences_and_change_level_errors_are_events<S: StateStore>(e: &Applier<S>, t: i64) {
    let prefs = envelope(
        "user_preferences",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
               "contacts": [{"profile": {"name": "Ana Ruiz"}, "wa_id": ANA}],
               "user_preferences": [{"wa_id": ANA, "detail": "User requested to stop marketing messages",
                                     "category": "marketing_messages", "value": "stop", "timestamp": t}]}),
    );
    let p = feed(e, &prefs, t).await;
    assert_eq!(kinds(&p), pairs(&[("bot", "customer.preferences")]));
    assert_eq!(p[0].body["category"], json!("marketing_messages"));
    assert_eq!(p[0].body["value"], json!("stop"));
    assert_eq!(p[0].body["customer"]["name"], json!("Ana Ruiz"));
    let errors = envelope(
        "messages",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
               "errors": [{"code": 130429, "title": "Rate limit hit", "message": "Rate limit hit",
                           "error_data": {"details": "Cloud API message throughput has been reached."}}]}),
    );
    let m = feed(e, &errors, t + 1).await;
    assert_eq!(kinds(&m), pairs(&[("bot", "meta.error")]));
    assert_eq!(m[0].body["errors"][0]["code"], json!(130429));
    assert_eq!(m[0].body["errors"][0]["title"], json!("Rate limit hit"));
    assert!(
        feed(e, &errors, t + 2).await.is_empty(),
        "redelivered: once"
    );
}

both!(by_names_who_changed_hands);
async fn by_names_who_changed_hands<S: StateStore>(e: &Applier<S>, t: i64) {
    let scope = Scope::conversation(PNID, CustomerKey::WaId(ANA.into()));
    let handover = |evs: &[Ev]| {
        evs.iter()
            .find(|ev| ev.kind == "conversation.handover" || ev.kind == "conversation.released")
            .map(|ev| ev.body["by"].clone())
    };
    let echo = feed(e, &echo_text(ANA, "wamid.BY1", t, "te atiendo"), t).await;
    assert_eq!(
        handover(&echo),
        Some(json!({"kind": "business_app", "name": null}))
    );
    let reset = feed(e, &echo_text(ANA, "wamid.BY2", t + 1, "/reset"), t + 1).await;
    assert_eq!(
        handover(&reset),
        Some(json!({"kind": "business_app", "name": null}))
    );
    let op = |action, at: i64, by: Option<&str>, duration: Option<u64>| Input::Operator {
        scope: scope.clone(),
        id: format!("{at}"),
        action,
        at: Millis::from_secs(at),
        duration: duration.map(std::time::Duration::from_secs),
        by: by.map(str::to_owned),
    };
    let apply = |input: Input<'static>, at: i64| async move {
        let a = e.apply(&input, Millis::from_secs(at)).await.unwrap();
        e.acknowledge(&a).await.unwrap();
        events(&a)
    };
    let paused = apply(
        op(OperatorAction::Pause, t + 2, Some("sam"), Some(2 * 3600)),
        t + 2,
    )
    .await;
    assert_eq!(
        handover(&paused),
        Some(json!({"kind": "operator", "name": "sam"}))
    );
    assert_eq!(
        paused
            .iter()
            .find(|ev| ev.kind == "conversation.handover")
            .unwrap()
            .body["paused_until"],
        json!(Millis::from_secs(t + 2 + 2 * 3600).rfc3339()),
        "--for"
    );
    let released = apply(op(OperatorAction::Release, t + 3, None, None), t + 3).await;
    assert_eq!(
        handover(&released),
        Some(json!({"kind": "operator", "name": null}))
    );
    apply(
        op(OperatorAction::Pause, t + 4, Some("lee"), Some(60)),
        t + 4,
    )
    .await;
    let timed_out = sweep(e, t + 4 + 61).await;
    assert_eq!(
        handover(&timed_out),
        Some(json!({"kind": "system", "name": null}))
    );
}
