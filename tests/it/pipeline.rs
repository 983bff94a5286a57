//! The running system on real RabbitMQ and Redis (a namespace per test): ingress, workers,
//! partitions, dead letters, failures.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use coexist::adapters::broker::Topology;
use coexist::core::time::Millis;
use redis::AsyncCommands;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::*;

const SECS: Duration = Duration::from_secs(1);

/// Publishes made while a gathering is open go to the broker together, each still its own
/// message, confirmed before its caller hears so; a publisher that does not gather publishes
/// each caller's messages alone.
#[tokio::test]
async fn publishes_waiting_together_go_to_the_broker_in_one_gathering_each_confirmed() {
    use coexist::adapters::broker::{Outgoing, Publisher};
    let conn = coexist::adapters::broker::connect(&amqp_url(), "test-gather")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let queue = format!("{}.gather", unique_ns("gather"));
    // Exclusive: gone with this test's connection.
    let exclusive = lapin::options::QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare(queue.as_str().into(), exclusive, Default::default())
        .await
        .unwrap();
    let message = |i: usize| Outgoing {
        exchange: String::new(),
        routing_key: queue.clone(),
        body: format!("m{i}").into_bytes(),
        properties: lapin::BasicProperties::default(),
    };
    // Six callers at once: one gathering (each waited for the next). Sixteen: two, each closed
    // as soon as it held eight. None gathering: each publishes alone.
    let cases = [
        (Duration::from_millis(200), 6, 1),
        (Duration::from_secs(30), 16, 2),
        (Duration::ZERO, 4, 0),
    ];
    for (within, callers, gatherings) in cases {
        let publisher = Publisher::open_gathering(&conn, within).await.unwrap();
        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..callers)
            .map(|i| {
                let (p, m) = (publisher.clone(), message(i));
                tokio::spawn(async move { p.publish_all(&[m]).await })
            })
            .collect();
        for c in calls {
            c.await.unwrap().expect("confirmed");
        }
        assert_eq!(
            publisher.gatherings(),
            gatherings,
            "{callers} callers within {within:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never past its time"
        );
    }
    // Callers far apart (5 s, gathering for 1 s): the first waits, the next expects no company
    // and goes at once.
    let within = Duration::from_secs(1);
    let publisher = Publisher::open_gathering(&conn, within).await.unwrap();
    let mut took = Vec::new();
    for i in 0..2 {
        if i > 0 {
            tokio::time::sleep(5 * within).await;
        }
        let started = std::time::Instant::now();
        publisher.publish_all(&[message(100 + i)]).await.unwrap();
        took.push(started.elapsed());
    }
    assert!(took[0] >= within, "the first caller waited: {took:?}");
    assert!(
        took[1] < within,
        "a caller far behind the last did not: {took:?}"
    );
    // Every message is in the queue, once.
    let mut bodies = Vec::new();
    while let Some(m) = ch
        .basic_get(
            queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        bodies.push(String::from_utf8(m.delivery.data).unwrap());
    }
    bodies.sort();
    let mut wanted: Vec<String> = (0..6)
        .chain(0..16)
        .chain(0..4)
        .chain(100..102)
        .map(|i| format!("m{i}"))
        .collect();
    wanted.sort();
    assert_eq!(bodies, wanted);
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test]
async fn handshake_signatures_and_body_limit() {
    let stack = Stack::start("http", 0, &[("COEXIST_MAX_BODY_BYTES", "2048")]).await;
    let addr = stack.ingress.addr;
    let ok = http(
        addr,
        "GET",
        "/webhook?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=12345",
        &[],
        b"",
    )
    .await;
    assert_eq!(ok, (200, "12345".to_owned()));
    assert_eq!(
        http(
            addr,
            "GET",
            "/webhook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
            &[],
            b""
        )
        .await
        .0,
        403
    );
    assert_eq!(
        http(
            addr,
            "GET",
            "/webhook?hub.mode=unsubscribe&hub.verify_token=verify-me&hub.challenge=1",
            &[],
            b""
        )
        .await
        .0,
        403
    );
    assert_eq!(http(addr, "GET", "/webhook", &[], b"").await.0, 403);

    let body = customer_text(ANA, "wamid.SIG1", t0(), "hola");
    assert_eq!(
        http(addr, "POST", "/webhook", &[], body.as_bytes()).await.0,
        401,
        "missing signature"
    );
    let wrong = coexist::services::ingress::sign("another-secret", body.as_bytes());
    assert_eq!(
        http(
            addr,
            "POST",
            "/webhook",
            &[("X-Hub-Signature-256", wrong)],
            body.as_bytes()
        )
        .await
        .0,
        401,
        "wrong secret"
    );
    let good = coexist::services::ingress::sign(SECRET, body.as_bytes());
    let tampered = body.replace("hola", "HOLA");
    assert_eq!(
        http(
            addr,
            "POST",
            "/webhook",
            &[("X-Hub-Signature-256", good.clone())],
            tampered.as_bytes()
        )
        .await
        .0,
        401,
        "tampered body"
    );
    assert_eq!(
        http(
            addr,
            "POST",
            "/webhook",
            &[("X-Hub-Signature-256", good)],
            body.as_bytes()
        )
        .await
        .0,
        200
    );

    let big = customer_text(ANA, "wamid.BIG1", t0(), &"x".repeat(4096));
    let sig = coexist::services::ingress::sign(SECRET, big.as_bytes());
    assert_eq!(
        http(
            addr,
            "POST",
            "/webhook",
            &[("X-Hub-Signature-256", sig)],
            big.as_bytes()
        )
        .await
        .0,
        413
    );

    assert_eq!(http(addr, "GET", "/healthz", &[], b"").await.0, 200);
    assert_eq!(
        http(addr, "GET", "/readyz", &[], b"").await,
        (200, "rabbitmq: ok\n".to_owned())
    );
    // Metrics are on the admin address only, not on the public webhook port.
    assert_eq!(http(addr, "GET", "/metrics", &[], b"").await.0, 404);
    let admin = stack
        .ingress
        .admin_addr
        .expect("the ingress's admin address");
    assert_eq!(http(admin, "GET", "/healthz", &[], b"").await.0, 200);
    let (status, metrics) = http(admin, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    for reason in ["signature", "too_large"] {
        let line = format!("coexist_webhooks_total{{result=\"rejected\",reason=\"{reason}\"}}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn signed_garbage_is_accepted_and_parked() {
    let stack = Stack::start("garbage", 0, &[]).await;
    let status = stack.post("this is { not json").await;
    assert_eq!(status, 200, "a signed body is never refused");
    let half = envelope(
        "messages",
        json!({"metadata": metadata(), "messages": [{"id": "wamid.NOSENDER", "type": "text"}]}),
    );
    assert_eq!(stack.post(&half).await, 200);
    let topology = Topology::new(&stack.ns, 4);
    let entries = coexist::tools::dlq::list(&amqp_url(), &topology, 1000)
        .await
        .unwrap()
        .entries;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries[0].reason.starts_with("not JSON"),
        "{:?}",
        entries[0]
    );
    assert_eq!(entries[0].stage, coexist::adapters::broker::Stage::Ingress);
    assert_eq!(entries[0].kind.as_deref(), Some("meta.webhook"));
    assert!(
        entries[1].reason.contains("without a sender"),
        "{:?}",
        entries[1]
    );
    assert_eq!(entries[1].kind.as_deref(), Some("meta.item"));
    // Replaying input that still cannot be placed puts it back, with its reason; the progress
    // counts as it goes.
    let mut counts = Vec::new();
    let replayed = coexist::tools::dlq::replay(&amqp_url(), &topology, None, |r, total| {
        counts.push((r.replayed, r.parked_again, total))
    })
    .await
    .unwrap();
    assert_eq!(counts, [(1, 1, 2), (2, 2, 2)]);
    assert_eq!(
        replayed,
        coexist::tools::dlq::Replayed {
            replayed: 2,
            units: 0,
            parked_again: 2
        }
    );
    let again = coexist::tools::dlq::list(&amqp_url(), &topology, 1000)
        .await
        .unwrap()
        .entries;
    let reasons: Vec<&str> = again.iter().map(|e| e.reason.as_str()).collect();
    assert!(
        reasons[0].starts_with("not JSON") && reasons[1].contains("without a sender"),
        "{reasons:?}"
    );
    assert_eq!(
        coexist::tools::dlq::list(&amqp_url(), &topology, 1000)
            .await
            .unwrap()
            .entries
            .len(),
        2,
        "listing leaves them in place"
    );
    stack.stop().await;
}

#[tokio::test]
async fn handover_story_with_amqp_properties() {
    let stack = Stack::start("story", 1, &[]).await;
    let t = t0();
    for body in [
        customer_text(ANA, "wamid.ST1", t, "Hola"),
        echo_text(ANA, "wamid.ST2", t + 1, "Hola Ana, soy Carla"),
        customer_text(ANA, "wamid.ST3", t + 2, "Gracias Carla"),
        echo_text(ANA, "wamid.ST4", t + 3, "/reset"),
        customer_text(ANA, "wamid.ST5", t + 4, "Otra pregunta"),
    ] {
        assert_eq!(stack.post(&body).await, 200);
    }
    let bot = take_events(&stack.ns, "bot", 3, 10 * SECS).await;
    let human = take_events(&stack.ns, "human_chat", 4, 10 * SECS).await;
    let bot_kinds: Vec<&str> = bot.iter().map(|e| e.kind.as_str()).collect();
    let human_kinds: Vec<&str> = human.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        bot_kinds,
        ["message.received", "session.paused", "message.received"]
    );
    assert_eq!(
        human_kinds,
        [
            "conversation.handover",
            "message.sent_from_app",
            "message.received",
            "conversation.released"
        ]
    );
    assert_eq!(bot[2].body["session_started"], json!(true));
    assert_eq!(human[1].body["message"]["icon"], json!("📱"));
    for e in bot.iter().chain(&human) {
        let p = &e.properties;
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            e.body["event_id"].as_str(),
            "message_id = event_id"
        );
        assert_eq!(
            p.kind().as_ref().map(|s| s.as_str()),
            Some(e.kind.as_str()),
            "type = event type"
        );
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert_eq!(e.header("conversation"), Some(format!("{PNID}:{ANA}")));
    }
    wait_done(&stack.ns, ANA, "m:wamid.ST5").await;
    stays_empty(&stack.ns, "bot", "nothing more").await;
    stays_empty(&stack.ns, "human_chat", "nothing more").await;
    stack.stop().await;
}

#[tokio::test]
async fn duplicates_and_batches() {
    let stack = Stack::start("dupes", 1, &[]).await;
    let t = t0();
    let body = customer_text(ANA, "wamid.DU1", t, "Hola");
    assert_eq!(stack.post(&body).await, 200);
    assert_eq!(stack.post(&body).await, 200, "Meta's retry is accepted");
    let msgs: Vec<_> = (0..30)
        .map(|i| json!({"from": format!("52155577{:05}", i % 3), "id": format!("wamid.BA{i}"), "timestamp": t.to_string(), "type": "text", "text": {"body": i.to_string()}}))
        .collect();
    assert_eq!(
        stack
            .post(&envelope(
                "messages",
                json!({"metadata": metadata(), "messages": msgs})
            ))
            .await,
        200
    );
    // Every conversation's last item published means everything before it was.
    wait_done(&stack.ns, ANA, "m:wamid.DU1").await;
    for (i, customer) in ["5215557700000", "5215557700001", "5215557700002"]
        .iter()
        .enumerate()
    {
        wait_done(&stack.ns, customer, &format!("m:wamid.BA{}", 27 + i)).await;
    }
    let ready = queue_len(&stack.ns, "bot").await as usize;
    let got = take_events(&stack.ns, "bot", ready, 10 * SECS).await;
    assert_eq!(
        got.len(),
        31,
        "one for the duplicated body, thirty for the batch"
    );
    let mut per_customer: HashMap<String, Vec<i64>> = HashMap::new();
    for e in &got[1..] {
        per_customer
            .entry(e.body["customer"]["wa_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(e.body["message"]["text"].as_str().unwrap().parse().unwrap());
    }
    for (c, seq) in per_customer {
        let mut sorted = seq.clone();
        sorted.sort();
        assert_eq!(seq, sorted, "{c}: in order of appearance");
    }
    stack.stop().await;
}

#[tokio::test]
async fn two_workers_share_partitions_and_keep_each_conversation_in_order() {
    let stack = Stack::start("order", 2, &[("COEXIST_PARTITIONS", "8")]).await;
    let shares: Vec<Vec<u16>> = stack.workers.iter().map(|w| w.owned()).collect();
    assert!(shares.iter().all(|s| !s.is_empty()), "{shares:?}");
    let t = t0();
    let conversations = 12;
    let per = 15;
    // Twelve conversations of six business numbers (a number's items share its partition),
    // chosen so that both workers have numbers to decide.
    let topology = Topology::new(&stack.ns, 8);
    let owner = |number: &str| {
        let p = topology
            .first_layout()
            .partition_of(&coexist::core::domain::Scope::number(number));
        shares.iter().position(|s| s.contains(&p)).unwrap()
    };
    let candidates: Vec<String> = (0..1000u32).map(|n| format!("41000000{n:07}")).collect();
    let first_of = |w: usize| candidates.iter().find(|n| owner(n) == w).unwrap().clone();
    let mut numbers = vec![first_of(0), first_of(1)];
    let more: Vec<String> = candidates
        .iter()
        .filter(|n| !numbers.contains(n))
        .take(4)
        .cloned()
        .collect();
    numbers.extend(more);
    let owners: HashSet<usize> = numbers.iter().map(|n| owner(n)).collect();
    assert_eq!(owners.len(), 2, "both workers get numbers: {numbers:?}");
    let posts: Vec<_> = (0..conversations)
        .map(|c| {
            let addr = stack.ingress.addr;
            let number = numbers[c % numbers.len()].clone();
            tokio::spawn(async move {
                for i in 0..per {
                    let body = customer_text(
                        &format!("52155588{c:05}"),
                        &format!("wamid.O{c}.{i}"),
                        t,
                        &i.to_string(),
                    )
                    .replace(PNID, &number);
                    assert_eq!(post_signed(addr, &body).await, 200);
                }
            })
        })
        .collect();
    for p in posts {
        p.await.unwrap();
    }
    let got = take_events(&stack.ns, "bot", conversations * per, 20 * SECS).await;
    assert_eq!(got.len(), conversations * per);
    let mut seqs: HashMap<String, Vec<u32>> = HashMap::new();
    for e in &got {
        seqs.entry(e.body["customer"]["wa_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(e.body["message"]["text"].as_str().unwrap().parse().unwrap());
    }
    for (c, seq) in &seqs {
        assert_eq!(*seq, (0..per as u32).collect::<Vec<_>>(), "{c}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn a_new_worker_gets_its_share_and_a_stopped_ones_share_moves() {
    let mut stack = Stack::start("share", 1, &[("COEXIST_PARTITIONS", "8")]).await;
    assert_eq!(stack.workers[0].owned().len(), 8);
    let second = coexist::services::worker::start(&stack.config, &CancellationToken::new())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while second.owned().is_empty() || stack.workers[0].owned().len() + second.owned().len() != 8 {
        assert!(
            started.elapsed() < 30 * SECS,
            "the newcomer gets its share within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!stack.workers[0].owned().is_empty());
    second.stop().await;
    let started = std::time::Instant::now();
    while stack.workers[0].owned().len() != 8 {
        assert!(
            started.elapsed() < 30 * SECS,
            "the leaver's share moves within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = t0();
    stack
        .post_until_ok(&customer_text(ANA, "wamid.SH1", t, "hola"), 5 * SECS)
        .await;
    assert_eq!(take_events(&stack.ns, "bot", 1, 10 * SECS).await.len(), 1);
    let w = stack.workers.remove(0);
    w.stop().await;
    stack.stop().await;
}

#[tokio::test]
async fn timeouts_are_released_by_the_worker() {
    let stack = Stack::start("timeout", 2, &[("COEXIST_TIMEOUT", "3s")]).await;
    let t = t0();
    assert_eq!(
        stack
            .post(&echo_text(ANA, "wamid.TO1", t, "te atiendo"))
            .await,
        200
    );
    let human = take_events(&stack.ns, "human_chat", 3, 15 * SECS).await;
    let kinds: Vec<&str> = human.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "conversation.handover",
            "message.sent_from_app",
            "conversation.released"
        ]
    );
    assert_eq!(human[2].body["reason"], json!("timeout"));
    let deadline = Millis::from_secs(t + 3);
    let arrived = Millis::now();
    assert!(
        arrived.0 - deadline.0 < 10_000,
        "released within 10 s of the deadline"
    );
    // Once the deadline is finished no worker can claim it again: whatever was published is there.
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadlines = format!("{}:deadlines", stack.ns);
    eventually(READY_WITHIN, "the deadline to be finished", || {
        let (mut redis, deadlines) = (redis.clone(), deadlines.clone());
        async move {
            let left: u64 = redis.zcard(&deadlines).await.unwrap();
            (left == 0)
                .then_some(())
                .ok_or(format!("{left} deadline(s) left"))
        }
    })
    .await;
    let _: u64 = redis.zcard(&deadlines).await.unwrap();
    stays_empty(&stack.ns, "human_chat", "exactly once across two workers").await;
    stack.stop().await;
}

/// A change of a field coexist does not handle is accepted and counted by field, never silent.
#[tokio::test]
async fn unhandled_fields_are_accepted_and_counted() {
    let stack = Stack::start("unhandled", 1, &[]).await;
    let body = envelope(
        "calls",
        json!({"messaging_product": "whatsapp", "metadata": metadata(), "calls": [{"id": "c1"}]}),
    );
    assert_eq!(stack.post(&body).await, 200);
    let (_, metrics) = http(
        stack.ingress.admin_addr.unwrap(),
        "GET",
        "/metrics",
        &[],
        b"",
    )
    .await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("coexist_webhook_items_total{")
                && l.contains("field=\"calls\"")
                && l.contains("kind=\"unhandled\"")
        })
        .unwrap_or_else(|| panic!("not counted:\n{metrics}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{line}");
    stack.stop().await;
}
