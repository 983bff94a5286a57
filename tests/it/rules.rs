//! One scenario per rule (docs/contract.md, "Rules"), each run against the in-memory store and against the
//! Redis store on the real local Redis (own namespace per test).

use coexist::core::apply::Applier;
use coexist::core::domain::{CustomerKey, Scope};
use coexist::core::engine::{Input, OperatorAction, Rules};
use coexist::core::store::StateStore;
use coexist::core::time::Millis;
use serde_json::json;
use std::time::Duration;

use crate::support::*;

const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;

fn rfc(secs: i64) -> String {
    Millis::from_secs(secs).rfc3339()
}

both!(r1_active_session_continues);
async fn r1_active_session_continues<S: StateStore>(e: &Applier<S>, t: i64) {
    let a = feed(e, &customer_text(ANA, "wamid.A1", t, "Hola"), t).await;
    let b = feed(
        e,
        &customer_text(ANA, "wamid.A2", t + 60, "¿Tienen envío?"),
        t + 60,
    )
    .await;
    assert_eq!(kinds(&b), pairs(&[("bot", "message.received")]));
    assert_eq!(b[0].body["session_started"], json!(false));
    assert_eq!(a[0].session(), b[0].session());
    // The inactivity clock restarted at t+60: 23 h later is still the same session, though
    // more than 24 h after the first message.
    let later = t + 60 + 23 * 3600;
    let c = feed(
        e,
        &customer_text(ANA, "wamid.A3", later, "sigo aquí"),
        later,
    )
    .await;
    assert_eq!(c[0].body["session_started"], json!(false));
    assert_eq!(c[0].session(), a[0].session());
}

both!(r2_no_session_starts_one);
async fn r2_no_session_starts_one<S: StateStore>(e: &Applier<S>, t: i64) {
    let a = feed(e, &customer_text(ANA, "wamid.B1", t, "Hola"), t).await;
    assert_eq!(kinds(&a), pairs(&[("bot", "message.received")]));
    assert_eq!(a[0].body["session_started"], json!(true));
    assert!(a[0].session().is_some());
    assert_eq!(
        a[0].body["customer"],
        json!({"wa_id": ANA, "user_id": null, "name": "Ana Ruiz"})
    );
    assert_eq!(a[0].body["message"]["source"], json!("customer"));
    assert_eq!(a[0].body["message"]["icon"], json!(null));
    assert_eq!(a[0].body["occurred_at"], json!(rfc(t)));
    assert_eq!(a[0].conversation, format!("{PNID}:{ANA}"));
    // Another customer has a session of their own.
    let l = feed(e, &customer_text(LUIS, "wamid.B2", t + 1, "Hola"), t + 1).await;
    assert_eq!(l[0].body["session_started"], json!(true));
    assert_ne!(l[0].session(), a[0].session());
    // After 24 h without activity the session is over: a new one starts.
    let late = t + DAY + 1;
    let b = feed(
        e,
        &customer_text(ANA, "wamid.B3", late, "¿Siguen ahí?"),
        late,
    )
    .await;
    assert_eq!(b[0].body["session_started"], json!(true));
    assert_ne!(b[0].session(), a[0].session());
}

both!(r3_paused_customer_goes_to_the_inbox);
async fn r3_paused_customer_goes_to_the_inbox<S: StateStore>(e: &Applier<S>, t: i64) {
    let h = feed(e, &echo_text(ANA, "wamid.C1", t, "Te atiendo yo"), t).await;
    let m = feed(
        e,
        &customer_text(ANA, "wamid.C2", t + 30, "Gracias"),
        t + 30,
    )
    .await;
    assert_eq!(
        kinds(&m),
        pairs(&[("human_chat", "message.received")]),
        "nothing to the bot"
    );
    assert_eq!(m[0].session(), h[0].session());
    assert_eq!(m[0].text(), Some("Gracias"));
    assert!(m[0].body.get("session_started").is_none());
}

both!(r4_echo_pauses_an_active_bot_session);
async fn r4_echo_pauses_an_active_bot_session<S: StateStore>(e: &Applier<S>, t: i64) {
    let a = feed(e, &customer_text(ANA, "wamid.D1", t, "Hola"), t).await;
    let session = a[0].session().unwrap().to_owned();
    // `to` is not normalised by Meta: it may carry + and spaces.
    let h = feed(
        e,
        &echo_text(
            "+52 1 555 123 0001",
            "wamid.D2",
            t + 10,
            "Hola Ana, soy Carla",
        ),
        t + 20,
    )
    .await;
    assert_eq!(
        kinds(&h),
        pairs(&[
            ("bot", "session.paused"),
            ("human_chat", "conversation.handover"),
            ("human_chat", "message.sent_from_app")
        ])
    );
    let until = rfc(t + 10 + WEEK);
    assert_eq!(
        h[0].body["paused_until"],
        json!(until),
        "echo timestamp + timeout, not the clock"
    );
    assert_eq!(h[1].body["paused_until"], json!(until));
    assert_eq!(h[1].body["trigger_message_id"], json!("wamid.D2"));
    for ev in &h {
        assert_eq!(
            ev.session(),
            Some(session.as_str()),
            "the session continues with the human"
        );
        assert_eq!(ev.body["customer"]["wa_id"], json!(ANA));
        assert_eq!(ev.conversation, format!("{PNID}:{ANA}"));
    }
    let msg = &h[2].body["message"];
    assert_eq!(msg["source"], json!("business_app"));
    assert_eq!(msg["icon"], json!("📱"));
    assert_eq!(msg["text"], json!("Hola Ana, soy Carla"));
    assert_eq!(
        msg["raw"]["to"],
        json!("+52 1 555 123 0001"),
        "raw is the item as Meta sent it"
    );
    // A further echo extends the pause and announces nothing new.
    let more = feed(
        e,
        &echo_text(ANA, "wamid.D3", t + 100, "¿Algo más?"),
        t + 100,
    )
    .await;
    assert_eq!(
        kinds(&more),
        pairs(&[("human_chat", "message.sent_from_app")])
    );
    // A late echo with an older timestamp never shortens the pause.
    feed(e, &echo_text(ANA, "wamid.D4", t + 50, "tarde"), t + 110).await;
    let probe = t + 10 + WEEK + 5; // past the first deadline, before the extended one
    let m = feed(e, &customer_text(ANA, "wamid.D5", probe, "¿Hola?"), probe).await;
    assert_eq!(kinds(&m), pairs(&[("human_chat", "message.received")]));
}

both!(r4_echo_without_a_session_opens_a_human_one);
async fn r4_echo_without_a_session_opens_a_human_one<S: StateStore>(e: &Applier<S>, t: i64) {
    let h = feed(
        e,
        &echo_msg(
            ANA,
            "wamid.E1",
            t,
            "location",
            json!({"latitude": 19.43, "longitude": -99.13, "name": "Tienda Centro"}),
        ),
        t,
    )
    .await;
    assert_eq!(
        kinds(&h),
        pairs(&[
            ("human_chat", "conversation.handover"),
            ("human_chat", "message.sent_from_app")
        ])
    );
    assert!(
        h[0].session().is_some(),
        "a human session tracks the message"
    );
    assert_eq!(h[0].session(), h[1].session());
    assert_eq!(h[1].text(), Some("Shared location: Tienda Centro"));
}

both!(r5_reset_hands_back_with_a_fresh_session);
async fn r5_reset_hands_back_with_a_fresh_session<S: StateStore>(e: &Applier<S>, t: i64) {
    let a = feed(e, &customer_text(ANA, "wamid.F1", t, "Hola"), t).await;
    let mut all = a.clone();
    all.extend(feed(e, &echo_text(ANA, "wamid.F2", t + 10, "Te ayudo"), t + 10).await);
    let r = feed(e, &echo_text(ANA, "wamid.F3", t + 20, "  /RESET "), t + 20).await;
    assert_eq!(kinds(&r), pairs(&[("human_chat", "conversation.released")]));
    assert_eq!(r[0].body["reason"], json!("reset_command"));
    assert_eq!(r[0].body["occurred_at"], json!(rfc(t + 20)));
    all.extend(r.clone());
    let n = feed(
        e,
        &customer_text(ANA, "wamid.F4", t + 30, "Otra pregunta"),
        t + 30,
    )
    .await;
    assert_eq!(kinds(&n), pairs(&[("bot", "message.received")]));
    assert_eq!(n[0].body["session_started"], json!(true));
    assert_ne!(n[0].session(), a[0].session(), "a fresh AI session");
    all.extend(n);
    for ev in &all {
        assert!(
            !ev.body.to_string().to_lowercase().contains("/reset"),
            "the reset text appears in no event: {}",
            ev.body
        );
    }
}

both!(r5_reset_when_not_paused_only_ends_the_session);
async fn r5_reset_when_not_paused_only_ends_the_session<S: StateStore>(e: &Applier<S>, t: i64) {
    let a = feed(e, &customer_text(ANA, "wamid.G1", t, "Hola"), t).await;
    let r = feed(e, &echo_text(ANA, "wamid.G2", t + 5, "/reset"), t + 5).await;
    assert!(r.is_empty(), "not paused: no event, got {r:?}");
    let n = feed(e, &customer_text(ANA, "wamid.G3", t + 10, "¿Y?"), t + 10).await;
    assert_eq!(
        n[0].body["session_started"],
        json!(true),
        "the next message follows R2"
    );
    assert_ne!(n[0].session(), a[0].session());
}

both!(
    r6_empty_reset_text_turns_reset_off,
    Rules::new(
        "",
        Duration::from_secs(7 * 86_400),
        Duration::from_secs(86_400)
    )
);
async fn r6_empty_reset_text_turns_reset_off<S: StateStore>(e: &Applier<S>, t: i64) {
    let r = feed(e, &echo_text(ANA, "wamid.H1", t, "/reset"), t).await;
    assert_eq!(
        kinds(&r),
        pairs(&[
            ("human_chat", "conversation.handover"),
            ("human_chat", "message.sent_from_app")
        ])
    );
    assert_eq!(r[1].text(), Some("/reset"));
    let m = feed(e, &customer_text(ANA, "wamid.H2", t + 1, "hola"), t + 1).await;
    assert_eq!(kinds(&m), pairs(&[("human_chat", "message.received")]));
}

both!(r7_timeout_is_released_once_by_the_sweep);
async fn r7_timeout_is_released_once_by_the_sweep<S: StateStore>(e: &Applier<S>, t: i64) {
    feed(e, &customer_text(ANA, "wamid.I1", t, "Hola"), t).await;
    feed(e, &echo_text(ANA, "wamid.I2", t + 10, "Te atiendo"), t + 10).await;
    assert!(sweep(e, t + 10 + WEEK - 1).await.is_empty(), "not due yet");
    let r = sweep(e, t + 10 + WEEK).await;
    assert_eq!(kinds(&r), pairs(&[("human_chat", "conversation.released")]));
    assert_eq!(r[0].body["reason"], json!("timeout"));
    assert_eq!(r[0].body["occurred_at"], json!(rfc(t + 10 + WEEK)));
    assert_eq!(r[0].body["customer"]["wa_id"], json!(ANA));
    assert!(
        sweep(e, t + 10 + WEEK + 60).await.is_empty(),
        "exactly once"
    );
    let m = feed(
        e,
        &customer_text(ANA, "wamid.I3", t + 20 + WEEK, "¿Hola?"),
        t + 20 + WEEK,
    )
    .await;
    assert_eq!(kinds(&m), pairs(&[("bot", "message.received")]));
    assert_eq!(m[0].body["session_started"], json!(true));
}

both!(r7_timeout_before_the_sweep_routes_to_the_bot);
async fn r7_timeout_before_the_sweep_routes_to_the_bot<S: StateStore>(e: &Applier<S>, t: i64) {
    feed(e, &echo_text(ANA, "wamid.J1", t, "Te atiendo"), t).await;
    let at = t + WEEK + 5;
    let m = feed(e, &customer_text(ANA, "wamid.J2", at, "¿Hola?"), at).await;
    assert_eq!(
        kinds(&m),
        pairs(&[
            ("human_chat", "conversation.released"),
            ("bot", "message.received")
        ])
    );
    assert_eq!(m[0].body["reason"], json!("timeout"));
    assert_eq!(m[1].body["session_started"], json!(true));
    assert!(
        sweep(e, at + 1).await.is_empty(),
        "the sweep finds it released"
    );
}

#[tokio::test]
async fn r7_release_has_the_same_id_inline_or_swept() {
    let t = t0();
    let (a, b) = (
        memory_engine(Rules::default()),
        memory_engine(Rules::default()),
    );
    for e in [&a, &b] {
        feed(e, &echo_text(ANA, "wamid.K1", t, "Te atiendo"), t).await;
    }
    let inline = feed(
        &a,
        &customer_text(ANA, "wamid.K2", t + WEEK + 1, "?"),
        t + WEEK + 1,
    )
    .await;
    let swept = sweep(&b, t + WEEK + 1).await;
    assert_eq!(inline[0].body["event_id"], swept[0].body["event_id"]);
    assert_eq!(inline[0].body, swept[0].body);
}

both!(r8_stale_echoes_are_recorded_without_pausing);
async fn r8_stale_echoes_are_recorded_without_pausing<S: StateStore>(e: &Applier<S>, t: i64) {
    feed(e, &echo_text(ANA, "wamid.L1", t, "Te atiendo"), t).await;
    feed(e, &echo_text(ANA, "wamid.L2", t + 100, "/reset"), t + 100).await;
    // Sent before the reset, delivered after it.
    let late = feed(
        e,
        &echo_text(ANA, "wamid.L3", t + 50, "una cosa más"),
        t + 110,
    )
    .await;
    assert_eq!(
        kinds(&late),
        pairs(&[("human_chat", "message.sent_from_app")])
    );
    let m = feed(e, &customer_text(ANA, "wamid.L4", t + 120, "hola"), t + 120).await;
    assert_eq!(kinds(&m), pairs(&[("bot", "message.received")]));
    // Older than now minus the timeout: recorded, no pause.
    let old = feed(e, &echo_text(LUIS, "wamid.L5", t - WEEK - 1, "antiguo"), t).await;
    assert_eq!(
        kinds(&old),
        pairs(&[("human_chat", "message.sent_from_app")])
    );
    let m = feed(e, &customer_text(LUIS, "wamid.L6", t + 1, "hola"), t + 1).await;
    assert_eq!(kinds(&m), pairs(&[("bot", "message.received")]));
}

both!(r9_duplicates_yield_no_second_event);
async fn r9_duplicates_yield_no_second_event<S: StateStore>(e: &Applier<S>, t: i64) {
    let body = customer_text(ANA, "wamid.M1", t, "Hola");
    assert_eq!(feed(e, &body, t).await.len(), 1);
    assert!(feed(e, &body, t + 5).await.is_empty(), "Meta's retry");
    let echo = echo_text(ANA, "wamid.M2", t + 10, "Te atiendo");
    assert_eq!(feed(e, &echo, t + 10).await.len(), 3);
    assert!(
        feed(e, &echo, t + 3 * DAY).await.is_empty(),
        "a redelivered echo days late does not pause anew"
    );
    let st = status(ANA, "wamid.OUT1", t, "delivered");
    assert_eq!(feed(e, &st, t).await.len(), 1);
    assert!(feed(e, &st, t).await.is_empty());
    assert_eq!(
        feed(e, &status(ANA, "wamid.OUT1", t + 1, "read"), t + 1)
            .await
            .len(),
        1,
        "another status of the same message"
    );
}

both!(r9_unacknowledged_events_are_given_again_with_the_same_ids);
async fn r9_unacknowledged_events_are_given_again_with_the_same_ids<S: StateStore>(
    e: &Applier<S>,
    t: i64,
) {
    feed(e, &customer_text(ANA, "wamid.N0", t, "Hola"), t).await;
    let body = echo_text(ANA, "wamid.N1", t + 1, "Te atiendo");
    // Decided and stored, then the process dies before publishing.
    let first = apply_body(e, &body, t + 1).await;
    let again = apply_body(e, &body, t + 2).await;
    let (a, b) = (events(&first[0]), events(&again[0]));
    assert_eq!(a.len(), 3);
    assert_eq!(kinds(&a), kinds(&b));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.body, y.body, "the same events, the same ids");
    }
    e.acknowledge(&again[0]).await.unwrap();
    assert!(
        feed(e, &body, t + 3).await.is_empty(),
        "once published, a duplicate yields nothing"
    );
}

both!(r10_edits_and_revokes_leave_the_pause_alone);
async fn r10_edits_and_revokes_leave_the_pause_alone<S: StateStore>(e: &Applier<S>, t: i64) {
    let h = feed(e, &echo_text(ANA, "wamid.P1", t, "Precio: 10"), t).await;
    let edit = echo_msg(
        ANA,
        "wamid.P2",
        t + 5,
        "edit",
        json!({"original_message_id": "wamid.P1", "message": {"type": "text", "text": {"body": "Precio: 12"}}}),
    );
    let ed = feed(e, &edit, t + 5).await;
    assert_eq!(kinds(&ed), pairs(&[("human_chat", "message.edited")]));
    assert_eq!(ed[0].body["original_message_id"], json!("wamid.P1"));
    assert_eq!(ed[0].text(), Some("Precio: 12"));
    assert_eq!(ed[0].body["message"]["icon"], json!("📱"));
    assert_eq!(ed[0].session(), h[0].session());
    let rv = feed(
        e,
        &echo_msg(
            ANA,
            "wamid.P3",
            t + 6,
            "revoke",
            json!({"original_message_id": "wamid.P1"}),
        ),
        t + 6,
    )
    .await;
    assert_eq!(kinds(&rv), pairs(&[("human_chat", "message.revoked")]));
    assert_eq!(rv[0].body["original_message_id"], json!("wamid.P1"));
    assert!(rv[0].body.get("message").is_none());
    let m = feed(e, &customer_text(ANA, "wamid.P4", t + 7, "ok"), t + 7).await;
    assert_eq!(
        kinds(&m),
        pairs(&[("human_chat", "message.received")]),
        "still paused"
    );
    // Deleting the /reset message does not undo the reset.
    feed(e, &echo_text(ANA, "wamid.P5", t + 8, "/reset"), t + 8).await;
    let rv = feed(
        e,
        &echo_msg(
            ANA,
            "wamid.P6",
            t + 9,
            "revoke",
            json!({"original_message_id": "wamid.P5"}),
        ),
        t + 9,
    )
    .await;
    assert_eq!(kinds(&rv), pairs(&[("human_chat", "message.revoked")]));
    let m = feed(e, &customer_text(ANA, "wamid.P7", t + 10, "hola"), t + 10).await;
    assert_eq!(kinds(&m), pairs(&[("bot", "message.received")]));
}

both!(r11_history_and_state_sync_never_pause);
async fn r11_history_and_state_sync_never_pause<S: StateStore>(e: &Applier<S>, t: i64) {
    let chunk = envelope(
        "history",
        json!({"messaging_product": "whatsapp", "metadata": metadata(), "history": [{
            "metadata": {"phase": 0, "chunk_order": 2, "progress": 40},
            "threads": [{"id": ANA, "messages": [
                {"from": BUSINESS, "to": ANA, "id": "wamid.Q1", "timestamp": (t - 900).to_string(), "type": "text", "text": {"body": "Su pedido salió"}, "history_context": {"status": "READ"}},
                {"from": ANA, "id": "wamid.Q2", "timestamp": (t - 800).to_string(), "type": "media_placeholder"}
            ]}]
        }]}),
    );
    let h = feed(e, &chunk, t).await;
    assert_eq!(
        kinds(&h),
        pairs(&[
            ("human_chat", "message.history"),
            ("human_chat", "message.history"),
            ("human_chat", "history.status")
        ])
    );
    assert_eq!(h[0].body["direction"], json!("outbound"));
    assert_eq!(h[0].body["message"]["source"], json!("history"));
    assert_eq!(h[0].body["message"]["icon"], json!(null));
    assert_eq!(h[0].body["session_id"], json!(null));
    assert_eq!(h[1].body["direction"], json!("inbound"));
    assert_eq!(h[1].text(), Some("[media_placeholder message]"));
    assert_eq!(h[2].body["phase"], json!(0));
    assert_eq!(h[2].body["chunk_order"], json!(2));
    assert_eq!(h[2].body["progress"], json!(40));
    assert_eq!(h[2].body["declined"], json!(false));
    // The placeholder's media arrives later under the same wamid: not a duplicate.
    let media = envelope(
        "history",
        json!({"messaging_product": "whatsapp", "metadata": metadata(), "messages": [
            {"from": ANA, "id": "wamid.Q2", "timestamp": (t - 800).to_string(), "type": "image", "image": {"id": "MEDIA1", "mime_type": "image/jpeg"}}
        ]}),
    );
    let m = feed(e, &media, t + 1).await;
    assert_eq!(kinds(&m), pairs(&[("human_chat", "message.history")]));
    assert_eq!(m[0].body["message"]["media"]["id"], json!("MEDIA1"));
    let declined = envelope(
        "history",
        json!({"messaging_product": "whatsapp", "metadata": metadata(), "history": [{"errors": [{"code": 2593109, "title": "off"}]}]}),
    );
    let d = feed(e, &declined, t + 2).await;
    assert_eq!(kinds(&d), pairs(&[("human_chat", "history.status")]));
    assert_eq!(d[0].body["declined"], json!(true));
    let sync = envelope(
        "smb_app_state_sync",
        json!({"messaging_product": "whatsapp", "metadata": metadata(), "state_sync": [
            {"type": "contact", "contact": {"full_name": "Luis Pérez", "first_name": "Luis", "phone_number": LUIS}, "action": "add", "metadata": {"timestamp": t.to_string()}},
            {"type": "contact", "contact": {"phone_number": "5215559990000"}, "action": "remove", "metadata": {"timestamp": t.to_string()}}
        ]}),
    );
    let s = feed(e, &sync, t + 3).await;
    assert_eq!(
        kinds(&s),
        pairs(&[
            ("human_chat", "contact.synced"),
            ("human_chat", "contact.synced")
        ])
    );
    assert_eq!(s[0].body["action"], json!("add"));
    assert_eq!(s[0].body["customer"]["name"], json!("Luis Pérez"));
    assert_eq!(s[0].body["contact"]["full_name"], json!("Luis Pérez"));
    assert_eq!(s[1].body["action"], json!("remove"));
    // None of that paused anyone or opened a session.
    let m = feed(e, &customer_text(ANA, "wamid.Q3", t + 10, "hola"), t + 10).await;
    assert_eq!(kinds(&m), pairs(&[("bot", "message.received")]));
    assert_eq!(m[0].body["session_started"], json!(true));
}

both!(r12_statuses_and_account_updates_go_to_the_bot);
async fn r12_statuses_and_account_updates_go_to_the_bot<S: StateStore>(e: &Applier<S>, t: i64) {
    let s = feed(e, &status(ANA, "wamid.OUT2", t, "delivered"), t).await;
    assert_eq!(kinds(&s), pairs(&[("bot", "message.status")]));
    assert_eq!(s[0].body["status"], json!("delivered"));
    assert_eq!(s[0].body["message_id"], json!("wamid.OUT2"));
    assert_eq!(s[0].body["errors"], json!([]));
    assert_eq!(s[0].body["customer"]["wa_id"], json!(ANA));
    let failed = envelope(
        "messages",
        json!({"messaging_product": "whatsapp", "metadata": metadata(), "statuses": [
            {"id": "wamid.OUT3", "status": "failed", "timestamp": t.to_string(), "recipient_id": ANA, "errors": [{"code": 131047, "title": "Re-engagement message"}]}
        ]}),
    );
    let f = feed(e, &failed, t).await;
    assert_eq!(f[0].body["errors"][0]["code"], json!(131047));
    let acct = json!({"object": "whatsapp_business_account", "entry": [{"id": WABA, "time": t, "changes": [{"field": "account_update", "value": {
        "phone_number": BUSINESS, "event": "PARTNER_REMOVED", "disconnection_info": {"reason": "PRIMARY_INACTIVITY", "initiated_by": "SYSTEM"}}}]}]});
    let a = feed(e, &acct.to_string(), t).await;
    assert_eq!(kinds(&a), pairs(&[("bot", "account.updated")]));
    assert_eq!(a[0].body["event"], json!("PARTNER_REMOVED"));
    assert_eq!(a[0].body["reason"], json!("PRIMARY_INACTIVITY"));
    assert_eq!(a[0].body["phone_number_id"], json!(WABA));
    assert_eq!(a[0].body["occurred_at"], json!(rfc(t)));
    // Statuses change nothing: the customer's next message starts a session.
    let m = feed(e, &customer_text(ANA, "wamid.OUT4", t + 1, "hola"), t + 1).await;
    assert_eq!(m[0].body["session_started"], json!(true));
}

both!(r13_every_item_of_a_batch_in_order);
async fn r13_every_item_of_a_batch_in_order<S: StateStore>(e: &Applier<S>, t: i64) {
    let msg = |from: &str, id: &str, ts: i64, body: &str| json!({"from": from, "id": id, "timestamp": ts.to_string(), "type": "text", "text": {"body": body}});
    let body = json!({"object": "whatsapp_business_account", "entry": [
        {"id": WABA, "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": metadata(),
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": ANA}, {"profile": {"name": "Luis"}, "wa_id": LUIS}],
            "messages": [msg(ANA, "wamid.R1", t, "uno"), msg(LUIS, "wamid.R2", t, "hola"), msg(ANA, "wamid.R3", t + 1, "dos")]}}]},
        {"id": WABA, "changes": [
            {"field": "smb_message_echoes", "value": {"messaging_product": "whatsapp", "metadata": metadata(),
                "message_echoes": [{"from": BUSINESS, "to": LUIS, "id": "wamid.R4", "timestamp": (t + 2).to_string(), "type": "text", "text": {"body": "yo atiendo"}}]}},
            {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": metadata(),
                "contacts": [{"profile": {"name": "Ana"}, "wa_id": ANA}], "messages": [msg(ANA, "wamid.R5", t + 3, "tres")]}}
        ]}
    ]});
    let ev = feed(e, &body.to_string(), t + 3).await;
    let summary: Vec<(String, String, Option<String>)> = ev
        .iter()
        .map(|e| {
            (
                e.kind.clone(),
                e.body["customer"]["name"]
                    .as_str()
                    .unwrap_or("-")
                    .to_owned(),
                e.text().map(str::to_owned),
            )
        })
        .collect();
    let s = |k: &str, n: &str, t: Option<&str>| (k.to_owned(), n.to_owned(), t.map(str::to_owned));
    assert_eq!(
        summary,
        vec![
            s("message.received", "Ana", Some("uno")),
            s("message.received", "Luis", Some("hola")),
            s("message.received", "Ana", Some("dos")),
            s("session.paused", "-", None),
            s("conversation.handover", "-", None),
            s("message.sent_from_app", "-", Some("yo atiendo")),
            s("message.received", "Ana", Some("tres")),
        ]
    );
    assert_eq!(ev[0].body["session_started"], json!(true));
    assert_eq!(ev[2].body["session_started"], json!(false));
    assert_eq!(
        ev[6].exchange, "bot",
        "Ana is not paused by Luis's handover"
    );
}

both!(operator_pause_and_release);
async fn operator_pause_and_release<S: StateStore>(e: &Applier<S>, t: i64) {
    let a = feed(e, &customer_text(ANA, "wamid.S1", t, "Hola"), t).await;
    let scope = Scope::conversation(PNID, CustomerKey::WaId(ANA.into()));
    let op = |action, at: i64| Input::Operator {
        scope: scope.clone(),
        id: format!("{at}"),
        action,
        at: Millis::from_secs(at),
        duration: None,
        by: Some("ana".into()),
    };
    let p = e
        .apply(&op(OperatorAction::Pause, t + 5), Millis::from_secs(t + 5))
        .await
        .unwrap();
    let pev = events(&p);
    assert_eq!(
        kinds(&pev),
        pairs(&[
            ("bot", "session.paused"),
            ("human_chat", "conversation.handover")
        ])
    );
    assert_eq!(pev[1].body["trigger_message_id"], json!(null));
    assert_eq!(pev[1].body["paused_until"], json!(rfc(t + 5 + WEEK)));
    assert_eq!(pev[0].session(), a[0].session());
    e.acknowledge(&p).await.unwrap();
    let m = feed(e, &customer_text(ANA, "wamid.S2", t + 6, "¿?"), t + 6).await;
    assert_eq!(kinds(&m), pairs(&[("human_chat", "message.received")]));
    let r = e
        .apply(
            &op(OperatorAction::Release, t + 7),
            Millis::from_secs(t + 7),
        )
        .await
        .unwrap();
    let rev = events(&r);
    assert_eq!(
        kinds(&rev),
        pairs(&[("human_chat", "conversation.released")])
    );
    assert_eq!(rev[0].body["reason"], json!("operator"));
    e.acknowledge(&r).await.unwrap();
    let m = feed(e, &customer_text(ANA, "wamid.S3", t + 8, "hola"), t + 8).await;
    assert_eq!(kinds(&m), pairs(&[("bot", "message.received")]));
    assert_eq!(m[0].body["session_started"], json!(true));
    assert!(
        sweep(e, t + 5 + WEEK + 1).await.is_empty(),
        "a released pause has no timeout"
    );
}

#[tokio::test]
async fn event_ids_are_deterministic_across_engines() {
    let t = 1_764_000_000;
    let story = [
        customer_text(ANA, "wamid.T1", t, "Hola"),
        echo_text(ANA, "wamid.T2", t + 60, "Hola Ana"),
        customer_text(ANA, "wamid.T3", t + 100, "Gracias"),
        echo_text(ANA, "wamid.T4", t + 160, "/reset"),
        customer_text(ANA, "wamid.T5", t + 200, "Otra"),
    ];
    let mut runs = Vec::new();
    for _ in 0..2 {
        let e = memory_engine(Rules::default());
        let mut bodies = Vec::new();
        for (i, b) in story.iter().enumerate() {
            bodies.extend(
                feed(&e, b, t + 200 + i as i64)
                    .await
                    .into_iter()
                    .map(|e| e.body),
            );
        }
        runs.push(bodies);
    }
    assert_eq!(runs[0], runs[1], "same input, same events, same ids");
    let ids: std::collections::HashSet<_> = runs[0].iter().map(|b| b["event_id"].clone()).collect();
    assert_eq!(
        ids.len(),
        runs[0].len(),
        "distinct events have distinct ids"
    );
}

#[tokio::test]
async fn per_number_rules_apply_to_their_number_only() {
    let t = t0();
    let mut book = coexist::core::engine::RuleBook::default();
    book.numbers.insert(
        PNID.into(),
        Rules::new("#bot", Duration::from_secs(3600), Duration::from_secs(600)),
    );
    let e = Applier::new(
        coexist::core::store::memory::MemoryStore::new(),
        std::sync::Arc::new(book),
    );
    let h = feed(&e, &echo_text(ANA, "wamid.U1", t, "te atiendo"), t).await;
    assert_eq!(h[0].body["paused_until"], json!(rfc(t + 3600)));
    let r = feed(&e, &echo_text(ANA, "wamid.U2", t + 1, " #BOT "), t + 1).await;
    assert_eq!(r[0].body["reason"], json!("reset_command"));
}
