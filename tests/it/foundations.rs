//! The failures a review found that no test caught (#27), each driven on real servers: operator
//! commands of one number at once, the order of every source's events, webhooks dated past any
//! sensible time.

use std::collections::HashMap;
use std::time::Duration;

use coexist::core::domain::{CustomerKey, Scope};
use coexist::core::engine::OperatorAction;
use coexist::tools::operator;

use crate::support::*;

const SECS: Duration = Duration::from_secs(1);

/// The `i`th customer of these tests.
fn customer(i: usize) -> String {
    format!("52155598{i:05}")
}

/// Fifty customers of one number paused in the same instant are fifty pauses: each command is
/// its own (the dedup key names the command, not the millisecond), and so is each timeout.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_customers_of_one_number_paused_at_once_are_all_paused_and_all_released() {
    let stack = Stack::start("op50", 1, &[]).await;
    let store = coexist::adapters::redis::RedisStore::connect(&redis_url(), &stack.ns)
        .await
        .unwrap();
    let conn = coexist::adapters::broker::connect(&amqp_url(), "coexist-test-op50")
        .await
        .unwrap();
    let topology = coexist::adapters::broker::Topology::new(&stack.ns, stack.config.partitions);
    let commands = (0..50).map(|i| {
        let command = operator::Command {
            scope: Scope::conversation(PNID, CustomerKey::WaId(customer(i))),
            action: OperatorAction::Pause,
            duration: Some(5 * SECS),
            by: Some("ana".into()),
        };
        operator::send(&conn, &topology, &store, command, 30 * SECS)
    });
    let done = futures_util::future::join_all(commands).await;
    for (i, d) in done.iter().enumerate() {
        let d = d.as_ref().unwrap_or_else(|e| panic!("customer {i}: {e}"));
        assert!(d.view.paused, "customer {i} is paused: {:?}", d.view);
        assert_eq!(d.events.len(), 1, "customer {i}: its own handover");
    }
    // A handover for each, and each pause's own release when it times out.
    let (events, _) = take_distinct(&stack.ns, "human_chat", 100, 40 * SECS).await;
    let of = |kind: &str, reason: Option<&str>| -> std::collections::HashSet<String> {
        events
            .iter()
            .filter(|e| e.kind == kind && reason.is_none_or(|r| e.body["reason"] == r))
            .map(|e| e.body["customer"]["wa_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        of("conversation.handover", None).len(),
        50,
        "a handover for every customer"
    );
    assert_eq!(
        of("conversation.released", Some("timeout")).len(),
        50,
        "every pause timed out with its own release"
    );
    let _ = conn.close(200, "done".into()).await;
    stack.stop().await;
}

/// Per-conversation order holds for the events of every source, not only Meta's: a timeout's
/// `conversation.released` never reaches consumers after the next `conversation.handover` of the
/// same conversation, however the sweeper and the next echo meet. Hands alternate in what a
/// consumer reads: handover, released, handover, ...
#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_and_the_next_echo_reach_consumers_in_the_order_they_were_decided() {
    let stack = Stack::start("order", 2, &[("COEXIST_TIMEOUT", "3s")]).await;
    let n = 120;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let t = now.as_secs() as i64;
    for i in 0..n {
        let body = echo_text(&customer(i), &format!("wamid.OR{i}.a"), t, "Un momento");
        stack.post_until_ok(&body, 10 * SECS).await;
    }
    // The pauses come due at t + 3 s; the second echoes arrive around then, spread over two
    // seconds: some before the sweeper claims the deadline, some while it releases them, some
    // after.
    let due = std::time::UNIX_EPOCH + Duration::from_secs((t + 3) as u64);
    let wait = due
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    let step = Duration::from_millis(2000 / n as u64);
    for i in 0..n {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let body = echo_text(&customer(i), &format!("wamid.OR{i}.b"), ts, "Ya estoy");
        stack.post_until_ok(&body, 10 * SECS).await;
        tokio::time::sleep(step).await;
    }
    // Each conversation: handover, released (timeout), handover, and, 3 s later, released again.
    let events = take_events(&stack.ns, "human_chat", n * 6, 60 * SECS).await;
    let mut hands: HashMap<String, Vec<&str>> = HashMap::new();
    for e in &events {
        if matches!(
            e.kind.as_str(),
            "conversation.handover" | "conversation.released"
        ) {
            let c = e.body["customer"]["wa_id"].as_str().unwrap().to_owned();
            hands.entry(c).or_default().push(&e.kind);
        }
    }
    assert_eq!(hands.len(), n, "every conversation changed hands");
    for (c, seq) in &hands {
        let alternating = seq.iter().enumerate().all(|(k, kind)| {
            *kind
                == if k % 2 == 0 {
                    "conversation.handover"
                } else {
                    "conversation.released"
                }
        });
        assert!(alternating, "{c}: hands alternate as published: {seq:?}");
        assert_eq!(seq.len(), 4, "{c}: two pauses, two releases: {seq:?}");
    }
    stack.stop().await;
}

/// A correctly signed webhook dated in year 9999 is accepted and parked with its reason; the
/// partition goes on with the next item, and instants near the end of time still format.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_dated_in_year_9999_is_parked_and_its_partition_goes_on() {
    let stack = Stack::start("y9999", 1, &[]).await;
    let late = customer_text(ANA, "wamid.Y9999", 253_402_300_799, "¿sigue abierto?");
    assert_eq!(
        stack.post(&late).await,
        200,
        "accepted: nothing Meta sent is refused"
    );
    // 8999-12-31T23:59:59Z is readable: its pause ends in year 9000, written as such.
    let edge = echo_text(LUIS, "wamid.Y8999", 221_845_391_999, "Hola");
    assert_eq!(stack.post(&edge).await, 200);
    let next = customer_text(ANA, "wamid.Y2026", t0(), "hola");
    assert_eq!(stack.post(&next).await, 200);
    let bot = take_events(&stack.ns, "bot", 1, 20 * SECS).await;
    assert_eq!(bot.len(), 1, "the next item was decided");
    assert_eq!(bot[0].body["message"]["id"], "wamid.Y2026");
    let inbox = take_events(&stack.ns, "human_chat", 2, 20 * SECS).await;
    let handover = inbox
        .iter()
        .find(|e| e.kind == "conversation.handover")
        .expect("the echo of 8999 paused");
    assert_eq!(handover.body["paused_until"], "9000-01-07T23:59:59Z");
    let topology = coexist::adapters::broker::Topology::new(&stack.ns, stack.config.partitions);
    let dead = coexist::tools::dlq::list(&amqp_url(), &topology, 1000)
        .await
        .unwrap()
        .entries;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].reason.contains("not a time Meta sends"),
        "{:?}",
        dead[0]
    );
    // Offline, the same body: a line on stderr, no crash, the others still processed.
    let bodies = format!("{late}\n{next}\n");
    let out = coexist(&["process"], &[], Some(&bodies));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines(&out).len(), 1, "the good body's event");
    assert!(
        stderr(&out).contains("not a time Meta sends"),
        "{}",
        stderr(&out)
    );
    stack.stop().await;
}

/// The gate's count of replies in flight never goes below zero nor loses its expiry: a reply
/// that finishes after its mark expired leaves no mark behind, so the next reply in flight still
/// holds a handover back (R17); and the handover's wait reads the count a bounded number of
/// times, not every 2 ms.
#[tokio::test(flavor = "multi_thread")]
async fn the_gates_in_flight_count_never_goes_below_zero_nor_loses_its_expiry() {
    use redis::AsyncCommands;
    let ns = NsGuard(unique_ns("inflight"));
    let store = coexist::adapters::redis::RedisStore::connect(&redis_url(), &ns.0)
        .await
        .unwrap();
    let mut redis = store.connection();
    let name = CustomerKey::WaId(ANA.into());
    let now = coexist::core::time::Millis::now();
    let held = store.hold_for_reply(PNID, &name, now).await.unwrap();
    assert!(held.in_flight);
    let sending = format!("{}:{{{PNID}}}:c:{ANA}:sending", ns.0);
    // Its mark expires (Meta took longer than the mark lives), then the reply is done.
    let _: i64 = redis.del(&sending).await.unwrap();
    store.reply_done(&held.scope).await.unwrap();
    let left: Option<i64> = redis.get(&sending).await.unwrap();
    assert_eq!(left, None, "no count below zero is left behind");
    // The next reply in flight holds a handover back until it is done.
    let next = store.hold_for_reply(PNID, &name, now).await.unwrap();
    assert!(next.in_flight);
    let ttl: i64 = redis.pttl(&sending).await.unwrap();
    assert!((1..=12_000).contains(&ttl), "the mark expires: {ttl} ms");
    let waiting = store.clone();
    let scope = next.scope.clone();
    let settle = tokio::spawn(async move { waiting.replies_settled(&scope).await });
    tokio::time::sleep(2 * SECS).await;
    assert!(
        !settle.is_finished(),
        "the handover waits for the reply in flight"
    );
    store.reply_done(&next.scope).await.unwrap();
    let reads = settle.await.unwrap().unwrap();
    assert!(
        reads < 80,
        "two seconds of waiting read the count {reads} times"
    );
}

/// Removes a broker policy when dropped.
struct Policy(String);

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-q", "clear_policy", &self.0])
            .status();
    }
}

/// Dead letters do not vanish by being looked at: viewed fifty times, every one is still there,
/// with its id, reason and age. The dead-letter queue here carries a delivery limit of 3 (a
/// policy, as RabbitMQ 4 sets 20 on every quorum queue by default): a look that handed the
/// letters back would count a delivery each time and lose them by the fourth.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_viewed_fifty_times_are_all_still_there() {
    let stack = Stack::start("dlq50", 1, &[]).await;
    let dead = format!("{}.dead", stack.ns);
    let policy = Policy(format!("{}-limit", stack.ns));
    let pattern = format!("^{}$", dead.replace('.', "\\."));
    let set = tokio::task::spawn_blocking(move || {
        rabbitmqctl(
            None,
            &[
                "set_policy",
                "--apply-to",
                "queues",
                &policy.0,
                &pattern,
                r#"{"delivery-limit": 3}"#,
            ],
        );
        policy
    });
    let _policy = set.await.unwrap();
    // Five bodies that are signed but are no webhook: each accepted and parked.
    for i in 0..5 {
        assert_eq!(
            stack.post(&format!("{{\"not\": \"a webhook {i}\"}}")).await,
            200
        );
    }
    let topology = coexist::adapters::broker::Topology::new(&stack.ns, stack.config.partitions);
    let mut first: Option<Vec<String>> = None;
    for look in 0..50 {
        let page = coexist::tools::dlq::list(&amqp_url(), &topology, 100)
            .await
            .unwrap();
        let mut ids: Vec<String> = page
            .entries
            .iter()
            .map(|e| e.id.clone().unwrap_or_default())
            .collect();
        ids.sort();
        if look == 0 && ids.len() < 5 {
            // The ingress parks them right after answering: wait for the fifth once.
            tokio::time::sleep(SECS).await;
            continue;
        }
        assert_eq!(page.total, 5, "look {look}: {ids:?}");
        match &first {
            None => first = Some(ids),
            Some(f) => assert_eq!(&ids, f, "look {look}: the same five letters"),
        }
    }
    // One page at a time: two letters per look, and looking on shows the next ones.
    let a = coexist::tools::dlq::list(&amqp_url(), &topology, 2)
        .await
        .unwrap();
    let b = coexist::tools::dlq::list(&amqp_url(), &topology, 2)
        .await
        .unwrap();
    assert_eq!((a.entries.len(), a.total), (2, 5));
    assert!(
        a.entries
            .iter()
            .all(|x| b.entries.iter().all(|y| x.id != y.id)),
        "the next look shows the next letters"
    );
    stack.stop().await;
}

/// Writes `n` pauses in force straight into a namespace (deadline set and pause keys), as
/// commits leave them: the `i`th until `until(i)`.
pub async fn seed_pauses(ns: &str, n: usize, until: impl Fn(usize) -> i64) {
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let c = customer(i);
            let trigger = format!("m:wamid.SEED{i}");
            let pause = serde_json::json!({
                "until": until(i), "since": until(i) - 3_600_000, "trigger": trigger,
                "by": {"kind": "business_app", "name": null}
            });
            pipe.cmd("SET")
                .arg(format!("{ns}:{{{PNID}}}:c:{c}:pause"))
                .arg(pause.to_string())
                .arg("PXAT")
                .arg(until(i))
                .ignore();
            pipe.cmd("ZADD")
                .arg(format!("{ns}:deadlines"))
                .arg(until(i))
                .arg(format!("{PNID}:{c}|{trigger}"))
                .ignore();
        }
        let _: () = pipe.query_async(&mut redis).await.unwrap();
    }
}

/// The list of conversations with a human pages: every pause once, soonest first, also where
/// many share one deadline, each page read with one bounded range of the deadline set.
#[tokio::test]
async fn the_paused_list_pages_through_every_pause_once_in_order() {
    let ns = NsGuard(unique_ns("pages"));
    let now = coexist::core::time::Millis::now().0;
    // 130 pauses, in runs of ten sharing one instant.
    seed_pauses(&ns.0, 130, |i| now + 3_600_000 + (i as i64 / 10) * 1000).await;
    let store = coexist::adapters::redis::RedisStore::connect(&redis_url(), &ns.0)
        .await
        .unwrap();
    let at = coexist::core::time::Millis(now);
    let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        let (page, next) = operator::list(&store, at, after, 25).await.unwrap();
        assert!(page.len() <= 25);
        seen.extend(page.into_iter().map(|p| (p.paused_until, p.customer)));
        pages += 1;
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 130, "every pause once");
    let unique: std::collections::HashSet<_> = seen.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(unique.len(), 130, "none twice");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "soonest first");
    assert_eq!(pages, 6, "130 in pages of 25");
}

/// One clock for pause truth: a worker whose host clock runs 30 s ahead decides by Redis's
/// clock, the one that expires the pause keys, so an echo of now still pauses (with the host's
/// clock it would look older than now minus the 10 s timeout: R8, no pause), the customer's
/// next message goes to the inbox, and the gate, reading the key, agrees that a human holds it.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_clock_is_ahead_decides_by_redis_time_as_the_gate_does() {
    let graph = GraphStandIn::start().await;
    let stack = Stack::start(
        "clock",
        0,
        &[
            ("COEXIST_TIMEOUT", "10s"),
            ("COEXIST_GATE_LISTEN", "127.0.0.1:0"),
            ("COEXIST_GRAPH_URL", graph.url.as_str()),
        ],
    )
    .await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let options = coexist::services::worker::Options {
        clock: coexist::core::time::Clock::skewed(30_000),
        ..Default::default()
    };
    let worker = coexist::services::worker::start_with(&stack.config, &shutdown, options)
        .await
        .unwrap();
    let gate = coexist::services::gate::start(&stack.config, &shutdown)
        .await
        .unwrap();
    eventually(
        READY_WITHIN,
        "the worker to own every partition",
        || async {
            let owned = worker.owned().len();
            (owned == stack.config.partitions as usize)
                .then_some(())
                .ok_or(format!("{owned}"))
        },
    )
    .await;
    let now = coexist::core::time::Millis::now().0 / 1000;
    stack
        .post_until_ok(
            &echo_text(ANA, "wamid.CK1", now, "Te atiendo yo"),
            10 * SECS,
        )
        .await;
    stack
        .post_until_ok(&customer_text(ANA, "wamid.CK2", now, "gracias"), 10 * SECS)
        .await;
    let inbox = take_events(&stack.ns, "human_chat", 3, 20 * SECS).await;
    let kinds: Vec<&str> = inbox.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "conversation.handover",
            "message.sent_from_app",
            "message.received"
        ],
        "paused by the echo, the customer's message to the inbox"
    );
    let path = format!("/v1/conversations/{PNID}/{ANA}");
    let (status, body) = http(gate.addr, "GET", &path, &[], b"").await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["handler"], "human", "the gate agrees: {body}");
    shutdown.cancel();
    worker.stopped().await.unwrap();
    gate.stop().await;
    stack.stop().await;
}
