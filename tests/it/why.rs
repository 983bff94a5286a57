//! Why (docs/contract.md, "Why"): each of the seed's troubleshooting cases driven on a real
//! ingress, worker and gate over RabbitMQ and Redis, and the sentence `coexist conversation
//! explain` gives for it (the console's conversation page shows the same trail, tested in
//! `console`); `coexist number check` on the same number.

use std::time::Duration;

use serde_json::{json, Value};

use crate::gate::{text_reply, GateStack};
use crate::support::*;

const SECS: Duration = Duration::from_secs(1);
const OMAR: &str = "5215551230003";
const EVA: &str = "5215551230004";
const GREETING: &str = "¡Gracias por escribir! Te respondemos pronto.";

fn cli(ns: &str, args: &[&str]) -> std::process::Output {
    coexist_in(ns, &[("COEXIST_AUTOMATED_TEXTS", GREETING)], args)
}

/// `conversation explain --json` of a customer.
fn explain(ns: &str, customer: &str) -> Value {
    let out = cli(ns, &["conversation", "explain", PNID, customer, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until the customer's trail has `n` entries; answers the explanation.
async fn explained(ns: &str, customer: &str, n: usize) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = explain(ns, customer);
        if last["trail"].as_array().map_or(0, Vec::len) >= n {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the trail never had {n} entries: {last:#}");
}

fn why(e: &Value, i: usize) -> String {
    e["trail"][i]["why"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reset_command_not_working_is_explained_case_by_case() {
    let g = GateStack::start("why-reset", &[("COEXIST_AUTOMATED_TEXTS", GREETING)]).await;
    let ns = g.stack.ns.clone();
    let t = t0() - 60;
    // `reset` typed for `/reset`: it paused the AI agent.
    g.stack
        .post_until_ok(&customer_text(ANA, "wamid.W1", t, "hola"), 10 * SECS)
        .await;
    g.stack
        .post_until_ok(&echo_text(ANA, "wamid.W2", t + 1, " Reset "), 10 * SECS)
        .await;
    let e = explained(&ns, ANA, 2).await;
    assert_eq!(e["trail"][1]["rule"], json!("R4"));
    assert!(
        why(&e, 1).starts_with(
            "the App message 'Reset' is not the reset command '/reset' (compared trimmed, ignoring case): recorded, and it paused the AI agent (paused until"
        ),
        "{e:#}"
    );
    assert!(e["next_message"].as_str().unwrap().starts_with("it goes to the inbox, not the AI agent: a person replying from the Business App paused the conversation"), "{e:#}");
    let out = cli(&ns, &["conversation", "explain", PNID, ANA]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("is not the reset command '/reset'"), "{text}");
    assert!(
        text.contains("the customer's next message: it goes to the inbox"),
        "{text}"
    );
    // The reset worked, but the customer has not written since: the next message shows it.
    g.stack
        .post_until_ok(
            &customer_text(LUIS, "wamid.W3", t, "¿abren hoy?"),
            10 * SECS,
        )
        .await;
    g.stack
        .post_until_ok(
            &echo_text(LUIS, "wamid.W4", t + 1, "Sí, hasta las 8"),
            10 * SECS,
        )
        .await;
    g.stack
        .post_until_ok(&echo_text(LUIS, "wamid.W5", t + 2, "/reset"), 10 * SECS)
        .await;
    let e = explained(&ns, LUIS, 3).await;
    assert_eq!(e["trail"][2]["rule"], json!("R5"));
    assert_eq!(
        why(&e, 2),
        "released by the reset command '/reset' from the Business App; the AI agent answers the customer's next message, in a new session"
    );
    assert_eq!(
        e["next_message"],
        json!("it goes to the AI agent in a new session (R2), with the handback of the 1 message(s) a person handled (R16).")
    );
    // /reset where nothing is paused: said, not silent.
    g.stack
        .post_until_ok(&echo_text(OMAR, "wamid.W6", t, "/reset"), 10 * SECS)
        .await;
    let e = explained(&ns, OMAR, 1).await;
    assert_eq!(e["trail"][0]["outcome"], json!("nothing to release"));
    assert!(
        why(&e, 0).starts_with("the reset command '/reset' arrived while nothing was paused"),
        "{e:#}"
    );
    // number check: the near miss (ANA's) came before a reset matched (LUIS's): passed; a new
    // near miss after it fails the line and names it. Activity is written every 5 s.
    let reset_line = |ns: &str| {
        let out = cli(ns, &["number", "check", PNID, "--json"]);
        let checked: Value = serde_json::from_slice(&out.stdout).unwrap();
        let line = checked["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["check"] == json!("reset_command"))
            .unwrap()
            .clone();
        (out.status.code(), line)
    };
    let until = |want: &'static str| {
        let ns = ns.clone();
        async move {
            let mut last = (None, Value::Null);
            for _ in 0..100 {
                last = reset_line(&ns);
                if last.1["status"] == json!(want) {
                    return last;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            panic!("the reset line never {want}: {last:?}");
        }
    };
    let (code, reset) = until("passed").await;
    assert_eq!(code, Some(0), "{reset:#}");
    g.stack
        .post_until_ok(&echo_text(EVA, "wamid.W7", t + 5, "reset"), 10 * SECS)
        .await;
    let (code, reset) = until("failed").await;
    assert_eq!(code, Some(1), "exit 1 when a line failed");
    assert!(
        reset["saw"]
            .as_str()
            .unwrap()
            .contains("the App sent 'reset'")
            && reset["saw"]
                .as_str()
                .unwrap()
                .contains("not the reset command '/reset'"),
        "{reset:#}"
    );
    let out = cli(&ns, &["number", "check", PNID]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAILED   reset_command"), "{text}");
    assert!(text.contains("passed   webhooks"), "{text}");
    assert!(text.contains("passed   handover"), "{text}");
    // Reset turned off for the number: /reset is an ordinary App message.
    let out = cli(&ns, &["number", "set", PNID, "reset_text=", "--by", "ana"]);
    assert!(out.status.success(), "{}", stderr(&out));
    tokio::time::sleep(2 * SECS).await;
    g.stack
        .post_until_ok(&customer_text(OMAR, "wamid.W8", t + 10, "hola"), 10 * SECS)
        .await;
    g.stack
        .post_until_ok(&echo_text(OMAR, "wamid.W9", t + 11, "/reset"), 10 * SECS)
        .await;
    let e = explained(&ns, OMAR, 3).await;
    assert_eq!(e["trail"][2]["rule"], json!("R6"));
    assert!(
        why(&e, 2).starts_with("reset is turned off for this number: '/reset' is an ordinary App message, and it paused the AI agent"),
        "{e:#}"
    );
    assert!(
        e["next_message"]
            .as_str()
            .unwrap()
            .contains("an operator releases it (reset is turned off for this number)"),
        "{e:#}"
    );
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_app_icon_and_the_bot_answering_after_a_human_are_explained() {
    let g = GateStack::start("why-icon", &[("COEXIST_AUTOMATED_TEXTS", GREETING)]).await;
    let ns = g.stack.ns.clone();
    let t = t0() - 60;
    // The App's own greeting: recorded (📱), no pause.
    g.stack
        .post_until_ok(&customer_text(ANA, "wamid.I1", t, "hola"), 10 * SECS)
        .await;
    g.stack
        .post_until_ok(&echo_text(ANA, "wamid.I2", t + 1, GREETING), 10 * SECS)
        .await;
    let e = explained(&ns, ANA, 2).await;
    assert_eq!(e["trail"][1]["rule"], json!("R15"));
    assert!(
        why(&e, 1).starts_with("the number's automated text"),
        "{e:#}"
    );
    assert_eq!(e["handler"], json!("bot"));
    // An App message older than the timeout (delivered eight days late): recorded, no pause.
    let old = t - 8 * 86_400;
    g.stack
        .post_until_ok(
            &echo_text(LUIS, "wamid.I3", old, "te escribo luego"),
            10 * SECS,
        )
        .await;
    let e = explained(&ns, LUIS, 1).await;
    assert_eq!(e["trail"][0]["rule"], json!("R8"));
    assert_eq!(
        why(&e, 0),
        "an App message older than the timeout (7d): recorded, no pause (R8)"
    );
    // The AI agent kept answering after a person replied: the gate refused it, and says why.
    let token = g
        .bot_token(&customer_text(OMAR, "wamid.I4", t, "¿precio?"))
        .await;
    g.stack
        .post_until_ok(
            &echo_text(OMAR, "wamid.I5", t + 1, "Te paso precios"),
            10 * SECS,
        )
        .await;
    explained(&ns, OMAR, 2).await;
    let (status, _) = g
        .reply(&text_reply(OMAR, "Cuesta 20 €"), Some(&token))
        .await;
    assert_eq!(status, 409);
    let e = explained(&ns, OMAR, 3).await;
    let refused = &e["trail"][2];
    assert_eq!(refused["rule"], json!("R17"));
    assert_eq!(
        refused["outcome"],
        json!("reply refused (conversation_held)")
    );
    assert!(
        why(&e, 2).starts_with("the gate refused the AI agent's reply: a person replying from the Business App took the conversation at"),
        "{e:#}"
    );
    assert_eq!(refused["message"]["text"], json!("Cuesta 20 €"));
    // Coexistence off for the number: App messages are recorded and pause nothing.
    let out = cli(&ns, &["number", "set", PNID, "coexistence=false"]);
    assert!(out.status.success(), "{}", stderr(&out));
    tokio::time::sleep(2 * SECS).await;
    g.stack
        .post_until_ok(&echo_text(EVA, "wamid.I6", t + 2, "Hola Eva"), 10 * SECS)
        .await;
    let e = explained(&ns, EVA, 1).await;
    assert_eq!(
        why(&e, 0),
        "coexistence is off for this number: the App message is recorded for the inbox and pauses nothing"
    );
    assert!(
        e["next_message"]
            .as_str()
            .unwrap()
            .contains("Coexistence is off for this number"),
        "{e:#}"
    );
    // The offline processor says the same sentences.
    let body = echo_text(EVA, "wamid.I7", t + 3, "reset");
    let out = coexist(
        &["process", "--format", "summary", "--explain"],
        &[],
        Some(&body),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("why: the App message 'reset' is not the reset command '/reset'"),
        "{text}"
    );
    g.stop().await;
}
