//! One conversation however Meta names the customer (docs/contract.md, "Who the customer is",
//! R12a): by phone, by business-scoped user id (BSUID), or both, across changes of either.
//! Each sequence runs against memory and Redis.

use std::sync::Arc;

use coexist::core::apply::{Applier, Delivery};
use coexist::core::engine::Rules;
use coexist::core::store::StateStore;
use serde_json::{json, Value};

use crate::support::*;

const ANA_ID: &str = "US.13491208655302741918";
const ANA_NEW: &str = "5215559990001";
const ANA_NEW_ID: &str = "US.88820000000000000001";

/// A customer message naming the customer as given: phone (`from`), BSUID (`from_user_id`), or
/// both; `contacts[]` names them the same way, as Meta's 2026 payloads do.
fn message(phone: Option<&str>, user_id: Option<&str>, wamid: &str, ts: i64, body: &str) -> String {
    let mut m =
        json!({"id": wamid, "timestamp": ts.to_string(), "type": "text", "text": {"body": body}});
    let mut contact = json!({"profile": {"name": "Ana Ruiz"}});
    if let Some(p) = phone {
        m["from"] = json!(p);
        contact["wa_id"] = json!(p);
    }
    if let Some(u) = user_id {
        m["from_user_id"] = json!(u);
        contact["user_id"] = json!(u);
    }
    envelope(
        "messages",
        json!({"messaging_product": "whatsapp", "metadata": metadata(), "contacts": [contact], "messages": [m]}),
    )
}

/// An echo to the customer named as given (`to: ""` when only the BSUID is known).
fn echo(phone: Option<&str>, user_id: Option<&str>, wamid: &str, ts: i64, body: &str) -> String {
    let mut m = json!({"from": BUSINESS, "to": phone.unwrap_or(""), "id": wamid, "timestamp": ts.to_string(), "type": "text", "text": {"body": body}});
    if let Some(u) = user_id {
        m["to_user_id"] = json!(u);
    }
    envelope(
        "smb_message_echoes",
        json!({"messaging_product": "whatsapp", "metadata": metadata(), "message_echoes": [m]}),
    )
}

/// A `system` message: `from` is the old number, `system` what changed.
fn system(from: Option<&str>, from_user: Option<&str>, wamid: &str, ts: i64, sys: Value) -> String {
    let mut m = json!({"id": wamid, "timestamp": ts.to_string(), "type": "system", "system": sys});
    if let Some(f) = from {
        m["from"] = json!(f);
    }
    if let Some(u) = from_user {
        m["from_user_id"] = json!(u);
    }
    envelope(
        "messages",
        json!({"messaging_product": "whatsapp", "metadata": metadata(), "messages": [m]}),
    )
}

both!(a_bsuid_only_echo_then_a_message_with_both_names_stays_with_the_human);
async fn a_bsuid_only_echo_then_a_message_with_both_names_stays_with_the_human<S: StateStore>(
    e: &Applier<S>,
    t: i64,
) {
    let ev = feed(
        e,
        &echo(None, Some(ANA_ID), "wamid.I1", t, "Hola, soy Carla"),
        t,
    )
    .await;
    assert!(ev
        .iter()
        .any(|e| e.is("human_chat", "conversation.handover")));
    let ev = feed(
        e,
        &message(Some(ANA), Some(ANA_ID), "wamid.I2", t + 10, "¿Y el envío?"),
        t + 10,
    )
    .await;
    assert_eq!(
        kinds(&ev),
        pairs(&[("human_chat", "message.received")]),
        "not the AI agent, no new session"
    );
    assert_eq!(ev[0].body["customer"]["wa_id"], json!(ANA));
    assert_eq!(ev[0].body["customer"]["user_id"], json!(ANA_ID));
    // Linked: the phone alone now names the same conversation.
    let ev = feed(
        e,
        &message(Some(ANA), None, "wamid.I3", t + 20, "¿Hola?"),
        t + 20,
    )
    .await;
    assert_eq!(kinds(&ev), pairs(&[("human_chat", "message.received")]));
    assert_eq!(ev[0].conversation, format!("{PNID}:{ANA_ID}"));
}

both!(a_phone_echo_then_a_bsuid_only_message_after_a_link);
async fn a_phone_echo_then_a_bsuid_only_message_after_a_link<S: StateStore>(
    e: &Applier<S>,
    t: i64,
) {
    feed(e, &echo(Some(ANA), None, "wamid.J1", t, "Te atiendo"), t).await;
    // A status naming both links them (statuses carry the recipient's names too).
    let status = envelope(
        "messages",
        json!({"metadata": metadata(),
               "contacts": [{"profile": {"name": "Ana Ruiz"}, "wa_id": ANA, "user_id": ANA_ID}],
               "statuses": [{"id": "wamid.OUT1", "status": "read", "timestamp": (t + 5).to_string(), "recipient_id": ANA, "recipient_user_id": ANA_ID}]}),
    );
    let ev = feed(e, &status, t + 5).await;
    assert_eq!(kinds(&ev), pairs(&[("bot", "message.status")]));
    assert_eq!(
        ev[0].body["customer"]["name"],
        json!("Ana Ruiz"),
        "completed from contacts"
    );
    let ev = feed(
        e,
        &message(None, Some(ANA_ID), "wamid.J2", t + 10, "hola"),
        t + 10,
    )
    .await;
    assert_eq!(kinds(&ev), pairs(&[("human_chat", "message.received")]));
}

both!(two_conversations_of_one_customer_merge_and_the_pause_holds_under_both_names);
async fn two_conversations_of_one_customer_merge_and_the_pause_holds_under_both_names<
    S: StateStore,
>(
    e: &Applier<S>,
    t: i64,
) {
    // Known by phone to the AI agent, by BSUID to the human: two conversations, for now.
    let ev = feed(e, &message(Some(ANA), None, "wamid.K1", t, "Hola"), t).await;
    assert_eq!(ev[0].body["session_started"], json!(true));
    feed(
        e,
        &echo(None, Some(ANA_ID), "wamid.K2", t + 5, "Soy Carla"),
        t + 5,
    )
    .await;
    // The message that names both: one conversation, paused (fail-closed).
    let ev = feed(
        e,
        &message(Some(ANA), Some(ANA_ID), "wamid.K3", t + 10, "¿Carla?"),
        t + 10,
    )
    .await;
    assert_eq!(kinds(&ev), pairs(&[("human_chat", "message.received")]));
    for (phone, id, wamid) in [
        (Some(ANA), None, "wamid.K4"),
        (None, Some(ANA_ID), "wamid.K5"),
    ] {
        let ev = feed(e, &message(phone, id, wamid, t + 20, "¿sigues?"), t + 20).await;
        assert_eq!(
            kinds(&ev),
            pairs(&[("human_chat", "message.received")]),
            "{phone:?} {id:?}"
        );
    }
    // One pause: it times out once, and the AI agent then has the customer back under both names.
    let released = sweep(e, t + 5 + 7 * 86_400).await;
    assert_eq!(
        kinds(&released),
        pairs(&[("human_chat", "conversation.released")])
    );
    let later = t + 8 * 86_400;
    let ev = feed(
        e,
        &message(None, Some(ANA_ID), "wamid.K6", later, "Hola de nuevo"),
        later,
    )
    .await;
    assert_eq!(kinds(&ev), pairs(&[("bot", "message.received")]));
    assert_eq!(ev[0].body["session_started"], json!(true));
    let ev = feed(
        e,
        &message(Some(ANA), None, "wamid.K7", later + 1, "¿?"),
        later + 1,
    )
    .await;
    assert_eq!(
        ev[0].body["session_started"],
        json!(false),
        "the same session"
    );
}

both!(a_number_change_in_a_human_stretch_keeps_it_with_the_human);
async fn a_number_change_in_a_human_stretch_keeps_it_with_the_human<S: StateStore>(
    e: &Applier<S>,
    t: i64,
) {
    feed(e, &echo(Some(ANA), None, "wamid.L1", t, "Te atiendo"), t).await;
    let change = system(
        Some(ANA),
        None,
        "wamid.L2",
        t + 10,
        json!({"body": "User Ana changed from +52 1 555 123 0001 to +52 1 555 999 0001", "type": "user_changed_number", "wa_id": ANA_NEW, "user_id": ANA_NEW_ID}),
    );
    let ev = feed(e, &change, t + 10).await;
    assert_eq!(
        kinds(&ev),
        pairs(&[
            ("human_chat", "customer.changed"),
            ("bot", "customer.changed")
        ]),
        "never a message.received"
    );
    assert_ne!(ev[0].body["event_id"], ev[1].body["event_id"]);
    assert_eq!(ev[0].body["change"], json!("number"));
    assert_eq!(ev[0].body["customer"]["wa_id"], json!(ANA_NEW));
    assert_eq!(ev[0].body["customer"]["user_id"], json!(ANA_NEW_ID));
    assert_eq!(
        ev[0].body["previous"],
        json!({"wa_id": ANA, "user_id": null})
    );
    assert!(ev[1].body.get("session_started").is_none(), "no session");
    let ev = feed(
        e,
        &message(
            Some(ANA_NEW),
            None,
            "wamid.L3",
            t + 20,
            "Soy Ana, nuevo número",
        ),
        t + 20,
    )
    .await;
    assert_eq!(kinds(&ev), pairs(&[("human_chat", "message.received")]));
    // The reset, sent to the new number, releases the one conversation.
    let ev = feed(
        e,
        &echo(Some(ANA_NEW), None, "wamid.L4", t + 30, "/reset"),
        t + 30,
    )
    .await;
    assert_eq!(
        kinds(&ev),
        pairs(&[("human_chat", "conversation.released")])
    );
    let ev = feed(
        e,
        &message(Some(ANA), None, "wamid.L5", t + 40, "¿?"),
        t + 40,
    )
    .await;
    assert_eq!(
        kinds(&ev),
        pairs(&[("bot", "message.received")]),
        "the old number too"
    );
}

both!(an_id_change_in_a_human_stretch_keeps_it_with_the_human);
async fn an_id_change_in_a_human_stretch_keeps_it_with_the_human<S: StateStore>(
    e: &Applier<S>,
    t: i64,
) {
    feed(e, &echo(None, Some(ANA_ID), "wamid.M1", t, "Te atiendo"), t).await;
    let change = system(
        None,
        Some(ANA_ID),
        "wamid.M2",
        t + 10,
        json!({"type": "user_changed_user_id", "previous_user_id": ANA_ID, "user_id": ANA_NEW_ID}),
    );
    let ev = feed(e, &change, t + 10).await;
    assert_eq!(ev[0].body["change"], json!("user_id"));
    assert_eq!(ev[0].body["previous"]["user_id"], json!(ANA_ID));
    let ev = feed(
        e,
        &message(None, Some(ANA_NEW_ID), "wamid.M3", t + 20, "hola"),
        t + 20,
    )
    .await;
    assert_eq!(kinds(&ev), pairs(&[("human_chat", "message.received")]));
    // The timeout releases it once.
    let released = sweep(e, t + 7 * 86_400).await;
    assert_eq!(released.len(), 1);
}

both!(redelivered_linking_items_change_nothing_the_second_time);
async fn redelivered_linking_items_change_nothing_the_second_time<S: StateStore>(
    e: &Applier<S>,
    t: i64,
) {
    feed(e, &echo(None, Some(ANA_ID), "wamid.N1", t, "Te atiendo"), t).await;
    let linking = message(Some(ANA), Some(ANA_ID), "wamid.N2", t + 1, "hola");
    let first = feed(e, &linking, t + 1).await;
    let again = apply_body(e, &linking, t + 2).await;
    assert_eq!(again[0].delivery, Delivery::Duplicate);
    assert!(again[0].events.is_empty());
    assert_eq!(first.len(), 1);
    let ev = feed(e, &message(Some(ANA), None, "wamid.N3", t + 3, "¿?"), t + 3).await;
    assert_eq!(kinds(&ev), pairs(&[("human_chat", "message.received")]));
}

both!(history_contacts_and_statuses_name_bsuid_only_customers);
async fn history_contacts_and_statuses_name_bsuid_only_customers<S: StateStore>(
    e: &Applier<S>,
    t: i64,
) {
    // A history thread named by context.user_id; the customer's message is sent to the business.
    let history = envelope(
        "history",
        json!({"messaging_product": "whatsapp", "metadata": metadata(), "history": [{
        "metadata": {"phase": 0, "chunk_order": 1, "progress": 10},
        "threads": [{"id": "", "context": {"user_id": ANA_ID}, "messages": [
            {"from_user_id": ANA_ID, "to": BUSINESS, "id": "wamid.H1", "timestamp": t.to_string(), "type": "text", "text": {"body": "hola"}},
            {"from": BUSINESS, "to_user_id": ANA_ID, "id": "wamid.H2", "timestamp": (t + 1).to_string(), "type": "text", "text": {"body": "¡hola!"}}
        ]}]}]}),
    );
    let ev = feed(e, &history, t + 2).await;
    let msgs: Vec<&Ev> = ev.iter().filter(|e| e.kind == "message.history").collect();
    assert_eq!(msgs.len(), 2);
    for (m, direction) in msgs.iter().zip(["inbound", "outbound"]) {
        assert_eq!(m.body["customer"]["user_id"], json!(ANA_ID));
        assert_eq!(
            m.body["customer"]["wa_id"],
            json!(null),
            "never the business"
        );
        assert_eq!(m.body["direction"], json!(direction));
    }
    // The media form: `messages[]` inbound, `message_echoes[]` outbound.
    let media = envelope(
        "history",
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
               "messages": [{"from": ANA, "id": "wamid.H3", "timestamp": t.to_string(), "type": "image", "image": {"id": "m1"}}],
               "message_echoes": [{"from": BUSINESS, "to": ANA, "id": "wamid.H4", "timestamp": t.to_string(), "type": "image", "image": {"id": "m2", "caption": "foto"}}]}),
    );
    let ev = feed(e, &media, t + 3).await;
    let dirs: Vec<&Value> = ev.iter().map(|e| &e.body["direction"]).collect();
    assert_eq!(dirs, [&json!("inbound"), &json!("outbound")]);
    assert_eq!(ev[1].body["customer"]["wa_id"], json!(ANA));
    // A contact synced with its user id.
    let sync = envelope(
        "smb_app_state_sync",
        json!({"messaging_product": "whatsapp", "metadata": metadata(), "state_sync": [
            {"type": "contact", "contact": {"full_name": "Ana Ruiz", "user_id": ANA_ID}, "action": "add", "metadata": {"timestamp": t.to_string()}}]}),
    );
    let ev = feed(e, &sync, t + 4).await;
    assert_eq!(ev[0].body["customer"]["user_id"], json!(ANA_ID));
    // A status for a BSUID-only recipient.
    let status = envelope(
        "messages",
        json!({"metadata": metadata(), "statuses": [{"id": "wamid.OUT2", "status": "delivered", "timestamp": t.to_string(), "recipient_user_id": ANA_ID}]}),
    );
    let ev = feed(e, &status, t + 5).await;
    assert_eq!(ev[0].body["customer"]["user_id"], json!(ANA_ID));
}

#[tokio::test]
async fn items_without_a_timestamp_take_their_entrys_time() {
    let e = memory_engine(Rules::default());
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": WABA, "time": 1_764_000_000, "changes": [{"field": "history", "value": {
        "messaging_product": "whatsapp", "metadata": metadata(),
        "history": [{"errors": [{"code": 2593109, "title": "History sync declined"}]}]}}]}]})
    .to_string();
    let ev = feed(&e, &body, 1_764_000_100).await;
    assert_eq!(ev[0].kind, "history.status");
    assert_eq!(ev[0].body["declined"], json!(true));
    assert_eq!(ev[0].body["occurred_at"], json!("2025-11-24T16:00:00Z"));
}

#[tokio::test]
async fn concurrent_linking_items_never_lose_a_pause() {
    for round in 0..5 {
        let (e, _ns) = redis_engine(&format!("linkrace{round}"), Rules::default()).await;
        let e = Arc::new(e);
        let t = t0();
        // The human answered the BSUID; the phone is the AI agent's; then several items that
        // name both arrive at once.
        feed(&*e, &message(Some(ANA), None, "wamid.R0", t, "Hola"), t).await;
        feed(
            &*e,
            &echo(None, Some(ANA_ID), "wamid.R1", t + 1, "Soy Carla"),
            t + 1,
        )
        .await;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                let body = message(
                    Some(ANA),
                    Some(ANA_ID),
                    &format!("wamid.R{}", 10 + i),
                    t + 2,
                    "¿?",
                );
                let applied = apply_body(&*e, &body, t + 2).await;
                for a in &applied {
                    e.acknowledge(a).await.unwrap();
                }
                applied
                    .into_iter()
                    .flat_map(|a| events(&a))
                    .collect::<Vec<Ev>>()
            }));
        }
        for task in tasks {
            for ev in task.await.unwrap() {
                assert!(
                    !ev.is("bot", "message.received"),
                    "round {round}: a message reached the AI agent while paused: {:?}",
                    ev.body
                );
            }
        }
        for (n, (phone, id)) in [(Some(ANA), None), (None, Some(ANA_ID))]
            .into_iter()
            .enumerate()
        {
            let ev = feed(
                &*e,
                &message(phone, id, &format!("wamid.R9{round}{n}"), t + 3, "?"),
                t + 3,
            )
            .await;
            assert_eq!(
                kinds(&ev),
                pairs(&[("human_chat", "message.received")]),
                "round {round}"
            );
        }
    }
}
