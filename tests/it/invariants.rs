//! Properties that hold over any interleaving (proptest): random sequences of customer
//! messages, echoes (human, automated, reset, stale), edits, revokes, timeouts, operator
//! actions, redeliveries and the AI agent's replies through the reply gate's judgement (R17),
//! applied through the engine's loop over the memory store.

use std::time::Duration;

use coexist::core::apply::Delivery;
use coexist::core::domain::{CustomerKey, Scope};
use coexist::core::engine::reply::{judge, Reply};
use coexist::core::engine::{Input, OperatorAction, Rules};
use coexist::core::meta::parse_body;
use coexist::core::store::StateStore;
use coexist::core::time::Millis;
use proptest::prelude::*;
use serde_json::json;

use crate::support::*;

const GREETING: &str = "¡Hola! Te respondemos pronto";
const HOUR: i64 = 3600;

/// One thing that happens to the conversation.
#[derive(Debug, Clone)]
enum Step {
    Message,
    HumanEcho,
    AutomatedEcho,
    Reset,
    /// An echo sent `hours` before now, delivered late.
    StaleEcho {
        hours: i64,
    },
    Edit,
    Revoke,
    OperatorPause,
    OperatorRelease,
    /// The clock moves on, and due pauses are released.
    Wait {
        hours: i64,
    },
    /// The step `back` steps ago is delivered again.
    Redeliver {
        back: usize,
    },
    /// The AI agent replies with the token of one of the bot events so far (`pick`, modulo
    /// their number), with none, or with a made-up one.
    Reply {
        pick: usize,
        token: TokenKind,
    },
}

#[derive(Debug, Clone, Copy)]
enum TokenKind {
    Issued,
    None,
    Forged,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Message),
        2 => Just(Step::HumanEcho),
        1 => Just(Step::AutomatedEcho),
        1 => Just(Step::Reset),
        1 => (1i64..300).prop_map(|hours| Step::StaleEcho { hours }),
        1 => Just(Step::Edit),
        1 => Just(Step::Revoke),
        1 => Just(Step::OperatorPause),
        1 => Just(Step::OperatorRelease),
        2 => (0i64..200).prop_map(|hours| Step::Wait { hours }),
        1 => (1usize..6).prop_map(|back| Step::Redeliver { back }),
        3 => (0usize..50, prop_oneof![4 => Just(TokenKind::Issued), 1 => Just(TokenKind::None), 1 => Just(TokenKind::Forged)])
            .prop_map(|(pick, token)| Step::Reply { pick, token }),
    ]
}

fn rules() -> Rules {
    Rules::default().with_automated_texts(&[GREETING])
}

/// What a run saw: every event's (exchange, type, id), in order.
type Seen = Vec<(String, String, String)>;

/// An event as a step saw it: (exchange, type, id, reply token).
type Saw = Vec<(String, String, String, Option<String>)>;

/// Runs the steps, checking the invariants as it goes; returns the events.
async fn run(steps: &[Step]) -> Seen {
    let e = memory_engine(rules());
    let scope = Scope::conversation(PNID, CustomerKey::WaId(ANA.into()));
    let timeout = rules().timeout.as_secs() as i64;
    let mut now = 1_764_000_000i64;
    let mut bodies: Vec<String> = Vec::new();
    let mut out: Seen = Vec::new();
    let mut last_reset = i64::MIN;
    // R17's model: every token a bot event carried, with how many changes of hands (handovers
    // and releases) had been published when it was.
    let mut tokens: Vec<(String, usize)> = Vec::new();
    let mut changes = 0usize;
    for (i, s) in steps.iter().enumerate() {
        now += 60;
        let wamid = format!("wamid.P{i}");
        let body = match s {
            Step::Message => Some(customer_text(ANA, &wamid, now, "hola")),
            Step::HumanEcho => Some(echo_text(ANA, &wamid, now, "te atiendo")),
            Step::AutomatedEcho => Some(echo_text(ANA, &wamid, now, GREETING)),
            Step::Reset => Some(echo_text(ANA, &wamid, now, "/reset")),
            Step::StaleEcho { hours } => Some(echo_text(ANA, &wamid, now - hours * HOUR, "antes")),
            Step::Edit => Some(customer_msg(
                ANA,
                &wamid,
                now,
                "edit",
                json!({"original_message_id": "wamid.P0", "message": {"type": "text", "text": {"body": "editado"}}}),
            )),
            Step::Revoke => Some(customer_msg(
                ANA,
                &wamid,
                now,
                "revoke",
                json!({"original_message_id": "wamid.P0"}),
            )),
            Step::Redeliver { back } => bodies.len().checked_sub(*back).map(|j| bodies[j].clone()),
            Step::OperatorPause
            | Step::OperatorRelease
            | Step::Wait { .. }
            | Step::Reply { .. } => None,
        };
        let before = e
            .store()
            .load(&scope, "-", Millis::from_secs(now))
            .await
            .unwrap()
            .state;
        let paused_before = before.paused(Millis::from_secs(now)).is_some();
        let mut events: Saw = Vec::new();
        match (s, &body) {
            (Step::Reply { pick, token }, _) => {
                let (token, issued_at) = match (token, tokens.is_empty()) {
                    (TokenKind::Issued, false) => {
                        let (t, at) = &tokens[pick % tokens.len()];
                        (Some(t.clone()), Some(*at))
                    }
                    (TokenKind::Forged, _) | (TokenKind::Issued, true) => {
                        (Some(format!("rt1.forged{pick}")), None)
                    }
                    (TokenKind::None, _) => (None, None),
                };
                // A template, so the service window does not decide: holding and hands do.
                let reply = Reply {
                    token: token.as_deref(),
                    free_form: false,
                };
                let clock = Millis::from_secs(now);
                let verdict = judge(&before, &scope, reply, clock, &rules());
                let held = before.paused(clock).is_some();
                let current = match (&token, issued_at) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(_), Some(at)) => at == changes,
                };
                assert_eq!(
                    verdict.is_ok(),
                    !held && current,
                    "{s:?}: held {held}, token from {issued_at:?} of {changes} changes: {verdict:?}"
                );
            }
            (Step::Wait { hours }, _) => {
                now += hours * HOUR;
                events.extend(sweep(&e, now).await.into_iter().map(triple));
            }
            (Step::OperatorPause | Step::OperatorRelease, _) => {
                let action = match s {
                    Step::OperatorPause => OperatorAction::Pause,
                    _ => OperatorAction::Release,
                };
                let input = Input::Operator {
                    scope: scope.clone(),
                    id: format!("{now}"),
                    action,
                    at: Millis::from_secs(now),
                    duration: None,
                    by: Some("ana".into()),
                };
                let a = e.apply(&input, Millis::from_secs(now)).await.unwrap();
                e.acknowledge(&a).await.unwrap();
                events.extend(events_of(&a));
                if action == OperatorAction::Release {
                    last_reset = last_reset.max(now);
                }
            }
            (_, Some(body)) => {
                let applied = apply_body(&e, body, now).await;
                for a in &applied {
                    e.acknowledge(a).await.unwrap();
                    events.extend(events_of(a));
                }
                // Applying anything a second time changes nothing.
                for a in apply_body(&e, body, now).await {
                    assert_eq!(a.delivery, Delivery::Duplicate, "{s:?}");
                    assert!(a.events.is_empty());
                }
                if !matches!(s, Step::Redeliver { .. }) {
                    bodies.push(body.clone());
                }
            }
            (_, None) => {}
        }
        // Never a message to the AI agent while a pause is in force (a due pause is released
        // first, in the same decision).
        if paused_before
            && !events
                .iter()
                .any(|(_, t, _, _)| t == "conversation.released")
        {
            assert!(
                !events
                    .iter()
                    .any(|(x, t, _, _)| x == "bot" && t == "message.received"),
                "{s:?} reached the AI agent while paused"
            );
        }
        // A human's echo newer than the last reset (and than the timeout) pauses at least until
        // its timestamp plus the timeout.
        if let (Step::HumanEcho, Some(body)) = (s, &body) {
            let ts = parse_body(body.as_bytes()).unwrap().items[0]
                .timestamp
                .unwrap()
                .0
                / 1000;
            if ts > last_reset && ts + timeout > now {
                let state = e
                    .store()
                    .load(&scope, "-", Millis::from_secs(now))
                    .await
                    .unwrap()
                    .state;
                let until = state.pause.map(|p| p.until.0 / 1000).unwrap_or(0);
                assert!(
                    until >= ts + timeout,
                    "{s:?}: paused until {until}, echo at {ts}"
                );
            }
        }
        if matches!(s, Step::Reset) {
            last_reset = last_reset.max(now);
        }
        for (exchange, kind, _, token) in &events {
            match (exchange.as_str(), kind.as_str(), token) {
                (_, "conversation.handover" | "conversation.released", _) => changes += 1,
                ("bot", _, Some(token)) => tokens.push((token.clone(), changes)),
                _ => {}
            }
        }
        out.extend(events.into_iter().map(|(x, k, id, _)| (x, k, id)));
    }
    // Every handover ends: once all deadlines are due, each has its one release.
    now += timeout + 30 * 86_400;
    out.extend(sweep(&e, now).await.into_iter().map(|ev| {
        let (x, k, id, _) = triple(ev);
        (x, k, id)
    }));
    let count = |t: &str| out.iter().filter(|(_, k, _)| k == t).count();
    assert_eq!(
        count("conversation.handover"),
        count("conversation.released"),
        "{out:?}"
    );
    out
}

fn triple(ev: Ev) -> (String, String, String, Option<String>) {
    let id = ev.body["event_id"].as_str().unwrap().to_owned();
    let token = ev.body["reply_token"].as_str().map(str::to_owned);
    (ev.exchange, ev.kind, id, token)
}

fn events_of(a: &coexist::core::apply::Applied) -> Saw {
    events(a).into_iter().map(triple).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_keeps_the_invariants(steps in prop::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let first = rt.block_on(run(&steps));
        // Event ids are stable across runs.
        let again = rt.block_on(run(&steps));
        prop_assert_eq!(first, again);
    }
}

/// Failures found by the property above, kept as regression cases.
#[tokio::test]
async fn regressions() {
    for steps in [
        vec![Step::HumanEcho, Step::Wait { hours: 200 }, Step::Message],
        vec![Step::OperatorPause, Step::Reset, Step::Message],
        vec![
            Step::Message,
            Step::StaleEcho { hours: 1 },
            Step::Redeliver { back: 1 },
        ],
    ] {
        let _ = tokio::time::timeout(Duration::from_secs(30), run(&steps))
            .await
            .unwrap();
    }
}
