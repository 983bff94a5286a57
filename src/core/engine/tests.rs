//! The pure rules, typed: inputs built by hand, decisions read field by field (no JSON, no
//! store). The rules tests in `tests/it/rules.rs` run the same rules through bodies and stores.

use std::time::Duration;

use serde_json::value::RawValue;

use super::event::{By, Exchange, Payload, ReleaseReason, Source};
use super::input::{Change, Content, Direction, Echo, Item, ItemKind};
use super::state::{Handler, Pause, Session, State};
use super::{decide, Deadline, Decision, Input, OperatorAction, Rule, Rules};
use crate::core::domain::{Customer, CustomerKey, Scope};
use crate::core::time::Millis;

const PNID: &str = "410";
const ANA: &str = "5215551230001";
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const T: i64 = 1_764_000_000_000;

fn rules() -> Rules {
    Rules::new(
        "/reset",
        Duration::from_secs(7 * 86_400),
        Duration::from_secs(86_400),
    )
}

fn scope() -> Scope {
    Scope::conversation(PNID, CustomerKey::WaId(ANA.into()))
}

fn ana() -> Customer {
    Customer {
        wa_id: Some(ANA.into()),
        user_id: None,
        name: Some("Ana".into()),
    }
}

fn text(id: &str, body: &str) -> Content {
    Content {
        id: Some(id.into()),
        kind: "text".into(),
        text: body.into(),
        media: None,
        reply_to: None,
    }
}

fn item(key: &str, at: i64, kind: ItemKind) -> Item {
    Item {
        scope: scope(),
        key: key.into(),
        timestamp: Some(Millis(at)),
        raw: RawValue::from_string(format!(r#"{{"id":"{key}"}}"#)).unwrap(),
        kind,
    }
}

fn customer(id: &str, at: i64, body: &str) -> Item {
    let message = text(id, body);
    item(
        &format!("m:{id}"),
        at,
        ItemKind::Customer {
            customer: ana(),
            message,
        },
    )
}

fn echo(id: &str, at: i64, body: &str) -> Item {
    let echo = Echo::Send(text(id, body));
    item(
        &format!("m:{id}"),
        at,
        ItemKind::Echo {
            customer: ana(),
            echo,
        },
    )
}

fn run(state: &State, input: &Item, now: i64) -> Decision {
    decide(state, &Input::Item(input), &scope(), Millis(now), &rules())
}

/// (exchange, type) of each event.
fn kinds(d: &Decision) -> Vec<(Exchange, &'static str)> {
    d.events
        .iter()
        .map(|o| (o.exchange, o.event.name()))
        .collect()
}

fn paused_state(since: i64, until: i64) -> State {
    State {
        pause: Some(Pause {
            until: Millis(until),
            since: Millis(since),
            trigger: "m:wamid.E".into(),
            by: By::business_app(),
        }),
        session: Some(Session {
            id: "s-human".into(),
            handler: Handler::Human,
            started: Millis(since),
            expires: Millis(since + DAY),
        }),
        last_reset: None,
        hand: 1,
        last_customer_at: None,
        handback: None,
        names: Vec::new(),
    }
}

#[test]
fn r2_then_r1_a_session_opens_once_and_is_touched() {
    let d = run(&State::default(), &customer("wamid.1", T, "hola"), T);
    assert_eq!(d.rule, Rule::R2);
    assert_eq!(kinds(&d), [(Exchange::Bot, "message.received")]);
    let Payload::MessageReceived(m) = &d.events[0].event.payload else {
        panic!("{:?}", d.events[0]);
    };
    assert!(m.agent.as_ref().unwrap().session_started);
    assert_eq!(m.message.source, Source::Customer);
    assert_eq!(m.message.icon, None);
    let session = d.state.session.clone().unwrap();
    assert_eq!(session.handler, Handler::Bot);
    assert_eq!(
        d.events[0].event.session_id.as_deref(),
        Some(session.id.as_str())
    );

    let later = T + HOUR;
    let d = run(&d.state, &customer("wamid.2", later, "¿y?"), later);
    assert_eq!(d.rule, Rule::R1);
    let Payload::MessageReceived(m) = &d.events[0].event.payload else {
        panic!()
    };
    assert!(!m.agent.as_ref().unwrap().session_started);
    let touched = d.state.session.unwrap();
    assert_eq!(touched.id, session.id, "the same session");
    assert_eq!(touched.expires, Millis(later + DAY), "its clock restarts");
}

#[test]
fn r4_pauses_with_a_handover_and_pauses_the_bot_session() {
    let d = run(&State::default(), &customer("wamid.1", T, "hola"), T);
    let at = T + 60_000;
    let d = run(&d.state, &echo("wamid.E", at, "Hola, soy Carla"), at);
    assert_eq!(d.rule, Rule::R4);
    assert_eq!(
        kinds(&d),
        [
            (Exchange::Bot, "session.paused"),
            (Exchange::HumanChat, "conversation.handover"),
            (Exchange::HumanChat, "message.sent_from_app"),
        ]
    );
    let until = Millis(at + 7 * DAY);
    let Payload::Handover(h) = &d.events[1].event.payload else {
        panic!()
    };
    assert_eq!(h.paused_until, until.rfc3339());
    assert_eq!(h.trigger_message_id.as_deref(), Some("wamid.E"));
    let Payload::SentFromApp(s) = &d.events[2].event.payload else {
        panic!()
    };
    assert_eq!(s.message.source, Source::BusinessApp);
    assert!(s.message.icon.is_some(), "the phone icon");
    let pause = d.state.pause.clone().unwrap();
    assert_eq!((pause.since, pause.until), (Millis(at), until));
    assert_eq!(d.state.session.unwrap().handler, Handler::Human);
    assert_eq!(d.schedule, Some((deadline("m:wamid.E"), until)));
}

#[test]
fn r4_without_a_session_opens_a_human_one_and_no_bot_event() {
    let d = run(&State::default(), &echo("wamid.E", T, "Hola"), T);
    assert_eq!(
        kinds(&d),
        [
            (Exchange::HumanChat, "conversation.handover"),
            (Exchange::HumanChat, "message.sent_from_app"),
        ]
    );
    assert_eq!(d.state.session.unwrap().handler, Handler::Human);
}

#[test]
fn r3_while_paused_goes_to_the_human_inbox_without_agent_fields() {
    let state = paused_state(T, T + 7 * DAY);
    let d = run(&state, &customer("wamid.2", T + HOUR, "gracias"), T + HOUR);
    assert_eq!(d.rule, Rule::R3);
    assert_eq!(kinds(&d), [(Exchange::HumanChat, "message.received")]);
    let Payload::MessageReceived(m) = &d.events[0].event.payload else {
        panic!()
    };
    assert!(m.agent.is_none());
}

#[test]
fn a_later_echo_extends_the_pause_and_never_shortens_it() {
    let state = paused_state(T, T + 7 * DAY);
    let at = T + DAY;
    let d = run(&state, &echo("wamid.E2", at, "sigo aquí"), at);
    assert_eq!(kinds(&d), [(Exchange::HumanChat, "message.sent_from_app")]);
    assert_eq!(d.state.pause.as_ref().unwrap().until, Millis(at + 7 * DAY));
    assert_eq!(
        d.schedule,
        Some((deadline("m:wamid.E"), Millis(at + 7 * DAY))),
        "the pause keeps its trigger; its deadline moves"
    );
    // An echo stamped before the pause's start (delivered late) does not shorten it.
    let d = run(&d.state, &echo("wamid.E0", T - HOUR, "antes"), at + 1);
    assert_eq!(d.state.pause.unwrap().until, Millis(at + 7 * DAY));
    assert_eq!(d.schedule, None);
}

#[test]
fn r5_releases_and_ends_the_session_and_the_reset_text_is_in_no_event() {
    let state = paused_state(T, T + 7 * DAY);
    let at = T + HOUR;
    let d = run(&state, &echo("wamid.R", at, "  /RESET "), at);
    assert_eq!(d.rule, Rule::R5);
    assert_eq!(kinds(&d), [(Exchange::HumanChat, "conversation.released")]);
    let Payload::Released(r) = &d.events[0].event.payload else {
        panic!()
    };
    assert_eq!(r.reason, ReleaseReason::ResetCommand);
    assert!(!d.events[0]
        .event
        .to_json()
        .to_lowercase()
        .contains("/reset"));
    assert_eq!(d.state.pause, None);
    assert_eq!(d.state.session, None);
    assert_eq!(d.state.last_reset, Some(Millis(at)));
    assert_eq!(d.unschedule, Some(deadline("m:wamid.E")));
    // Not paused: a reset says nothing.
    let d = run(&State::default(), &echo("wamid.R2", at, "/reset"), at);
    assert_eq!(d.rule, Rule::R5);
    assert!(d.events.is_empty());
}

#[test]
fn r6_an_empty_reset_text_makes_reset_an_ordinary_echo() {
    let off = Rules::new("", Duration::from_secs(3600), Duration::from_secs(3600));
    let d = decide(
        &State::default(),
        &Input::Item(&echo("wamid.R", T, "/reset")),
        &scope(),
        Millis(T),
        &off,
    );
    assert_eq!(d.rule, Rule::R4);
    assert!(d.state.pause.is_some());
}

#[test]
fn r7_a_pause_past_its_deadline_is_released_before_the_next_message() {
    let state = paused_state(T, T + 7 * DAY);
    let now = T + 8 * DAY;
    let d = run(&state, &customer("wamid.3", now, "¿hola?"), now);
    assert_eq!(
        kinds(&d),
        [
            (Exchange::HumanChat, "conversation.released"),
            (Exchange::Bot, "message.received"),
        ]
    );
    let Payload::Released(r) = &d.events[0].event.payload else {
        panic!()
    };
    assert_eq!(r.reason, ReleaseReason::Timeout);
    assert_eq!(
        d.events[0].event.occurred_at,
        Millis(T + 7 * DAY).rfc3339(),
        "released at the deadline"
    );
    assert_eq!(d.rule, Rule::R2, "then a fresh session");
}

#[test]
fn r7_a_due_timeout_releases_once_and_a_stale_one_does_nothing() {
    let state = paused_state(T, T + 7 * DAY);
    let timeout = |trigger: &str| Input::Timeout(deadline(trigger));
    let early = decide(
        &state,
        &timeout("m:wamid.E"),
        &scope(),
        Millis(T + DAY),
        &rules(),
    );
    assert_eq!(early.rule, Rule::Noop);
    assert!(early.events.is_empty());
    let due = decide(
        &state,
        &timeout("m:wamid.E"),
        &scope(),
        Millis(T + 7 * DAY),
        &rules(),
    );
    assert_eq!(due.rule, Rule::R7);
    assert_eq!(
        kinds(&due),
        [(Exchange::HumanChat, "conversation.released")]
    );
    assert_eq!(due.unschedule, None, "the claim finishes the deadline");
    let other = decide(
        &state,
        &timeout("m:wamid.X"),
        &scope(),
        Millis(T + 7 * DAY),
        &rules(),
    );
    assert!(other.events.is_empty(), "a deadline of another pause");
}

#[test]
fn r8_echoes_older_than_the_last_reset_or_the_timeout_do_not_pause() {
    let reset = State {
        last_reset: Some(Millis(T)),
        ..State::default()
    };
    let d = run(
        &reset,
        &echo("wamid.OLD", T - 1000, "antes del reset"),
        T + 1000,
    );
    assert_eq!(d.rule, Rule::R8);
    assert_eq!(kinds(&d), [(Exchange::HumanChat, "message.sent_from_app")]);
    assert_eq!(d.state.pause, None);
    let now = T + 8 * DAY;
    let d = run(&State::default(), &echo("wamid.LATE", T, "hace días"), now);
    assert_eq!(d.rule, Rule::R8);
    assert_eq!(d.state.pause, None);
}

#[test]
fn r10_edits_and_revokes_from_the_app_leave_the_pause_alone() {
    let state = paused_state(T, T + 7 * DAY);
    let edit = item(
        "m:wamid.ED",
        T + 1,
        ItemKind::Echo {
            customer: ana(),
            echo: Echo::Change(Change::Edit {
                original_message_id: Some("wamid.E".into()),
                message: text("wamid.ED", "corregido"),
            }),
        },
    );
    let d = run(&state, &edit, T + 1);
    assert_eq!(d.rule, Rule::R10);
    assert_eq!(kinds(&d), [(Exchange::HumanChat, "message.edited")]);
    let Payload::Edited(e) = &d.events[0].event.payload else {
        panic!()
    };
    assert_eq!(e.original_message_id.as_deref(), Some("wamid.E"));
    assert_eq!(e.message.text, "corregido");
    assert_eq!(d.state, state);
    let revoke = item(
        "m:wamid.RV",
        T + 2,
        ItemKind::Echo {
            customer: ana(),
            echo: Echo::Change(Change::Revoke {
                original_message_id: Some("wamid.R".into()),
            }),
        },
    );
    let d = run(&state, &revoke, T + 2);
    assert_eq!(kinds(&d), [(Exchange::HumanChat, "message.revoked")]);
    assert_eq!(d.state, state, "deleting the /reset message undoes nothing");
}

#[test]
fn r11_r12_read_no_state_and_never_pause() {
    let state = paused_state(T, T + 7 * DAY);
    let history = item(
        "h:m:wamid.H:text",
        T,
        ItemKind::History {
            customer: ana(),
            message: text("wamid.H", "viejo"),
            direction: Direction::Outbound,
        },
    );
    let status = item(
        "s:wamid.X:read",
        T,
        ItemKind::Status {
            customer: ana(),
            message_id: Some("wamid.X".into()),
            status: Some("read".into()),
            errors: RawValue::from_string("[]".into()).unwrap(),
        },
    );
    for (input, rule, kind) in [
        (
            &history,
            Rule::R11,
            (Exchange::HumanChat, "message.history"),
        ),
        (&status, Rule::R12, (Exchange::Bot, "message.status")),
    ] {
        for s in [&State::default(), &state] {
            let d = run(s, input, T + 1);
            assert_eq!(d.rule, rule);
            assert_eq!(kinds(&d), [kind]);
            assert!(!d.reads_state);
            assert_eq!(d.state, *s, "no pause, no session");
            assert_eq!(d.events[0].event.session_id, None);
        }
    }
}

#[test]
fn operator_pause_and_release() {
    let op = |action| Input::Operator {
        scope: scope(),
        id: format!("{action:?}"),
        action,
        at: Millis(T),
        duration: None,
        by: Some("ana".into()),
    };
    let d = decide(
        &State::default(),
        &op(OperatorAction::Pause),
        &scope(),
        Millis(T),
        &rules(),
    );
    assert_eq!(d.rule, Rule::OperatorPause);
    assert_eq!(kinds(&d), [(Exchange::HumanChat, "conversation.handover")]);
    let Payload::Handover(h) = &d.events[0].event.payload else {
        panic!()
    };
    assert_eq!(h.trigger_message_id, None);
    assert_eq!(d.events[0].event.customer.wa_id.as_deref(), Some(ANA));
    let d = decide(
        &d.state,
        &op(OperatorAction::Release),
        &scope(),
        Millis(T + 1),
        &rules(),
    );
    assert_eq!(d.rule, Rule::OperatorRelease);
    let Payload::Released(r) = &d.events[0].event.payload else {
        panic!()
    };
    assert_eq!(r.reason, ReleaseReason::Operator);
    assert_eq!(d.state.pause, None);
}

#[test]
fn an_extension_lengthens_the_pause_in_force_without_changing_hands() {
    let hour = Duration::from_secs(3600);
    let op = |id: &str, action, at: i64| Input::Operator {
        scope: scope(),
        id: id.into(),
        action,
        at: Millis(at),
        duration: Some(hour),
        by: Some("ana".into()),
    };
    let paused = decide(
        &State::default(),
        &op("p", OperatorAction::Pause, T),
        &scope(),
        Millis(T),
        &rules(),
    );
    let until = paused.state.pause.as_ref().unwrap().until;
    assert_eq!(until, Millis(T).plus(hour));
    let extended = decide(
        &paused.state,
        &op("e", OperatorAction::Extend, T + 10),
        &scope(),
        Millis(T + 10),
        &rules(),
    );
    assert_eq!(
        extended.state.pause.as_ref().unwrap().until,
        until.plus(hour),
        "from the deadline in force"
    );
    assert!(
        extended.events.is_empty(),
        "an extension is no change of hands"
    );
    assert_eq!(extended.state.hand, paused.state.hand);
    // With no pause in force, an extension pauses from now.
    let fresh = decide(
        &State::default(),
        &op("f", OperatorAction::Extend, T),
        &scope(),
        Millis(T),
        &rules(),
    );
    assert_eq!(
        fresh.state.pause.as_ref().unwrap().until,
        Millis(T).plus(hour)
    );
    assert_eq!(
        kinds(&fresh),
        [(Exchange::HumanChat, "conversation.handover")]
    );
}

#[test]
fn the_same_input_yields_the_same_event_ids_and_different_inputs_different_ones() {
    let a = run(&State::default(), &customer("wamid.1", T, "hola"), T);
    let b = run(&State::default(), &customer("wamid.1", T, "hola"), T + 5);
    assert_eq!(a.events[0].event.event_id, b.events[0].event.event_id);
    let c = run(&State::default(), &customer("wamid.2", T, "hola"), T);
    assert_ne!(a.events[0].event.event_id, c.events[0].event.event_id);
    assert_eq!(a.events[0].conversation, format!("{PNID}:{ANA}"));
}

fn deadline(trigger: &str) -> Deadline {
    Deadline {
        scope: scope(),
        trigger: trigger.into(),
    }
}
