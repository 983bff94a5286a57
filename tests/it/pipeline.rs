//! The running system on real RabbitMQ and Redis (a namespace per test): ingress, workers,
//! partitions, dead letters, failures.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coexist::broker::Topology;
use coexist::time::Millis;
use redis::AsyncCommands;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::*;

const SECS: Duration = Duration::from_secs(1);

fn header(t: &Taken, name: &str) -> Option<String> {
    let h = t.properties.headers().as_ref()?;
    h.inner()
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .and_then(|(_, v)| match v {
            lapin::types::AMQPValue::LongString(s) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            _ => None,
        })
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
    let wrong = coexist::ingress::sign("another-secret", body.as_bytes());
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
    let good = coexist::ingress::sign(SECRET, body.as_bytes());
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
    let sig = coexist::ingress::sign(SECRET, big.as_bytes());
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
    let (status, metrics) = http(addr, "GET", "/metrics", &[], b"").await;
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
    let entries = coexist::dlq::list(&amqp_url(), &topology).await.unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries[0].reason.starts_with("not JSON"),
        "{:?}",
        entries[0]
    );
    assert_eq!(entries[0].stage, coexist::broker::Stage::Ingress);
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
    let replayed = coexist::dlq::replay(&amqp_url(), &topology, None, |r, total| {
        counts.push((r.replayed, r.parked_again, total))
    })
    .await
    .unwrap();
    assert_eq!(counts, [(1, 1, 2), (2, 2, 2)]);
    assert_eq!(
        replayed,
        coexist::dlq::Replayed {
            replayed: 2,
            units: 0,
            parked_again: 2
        }
    );
    let again = coexist::dlq::list(&amqp_url(), &topology).await.unwrap();
    let reasons: Vec<&str> = again.iter().map(|e| e.reason.as_str()).collect();
    assert!(
        reasons[0].starts_with("not JSON") && reasons[1].contains("without a sender"),
        "{reasons:?}"
    );
    assert_eq!(
        coexist::dlq::list(&amqp_url(), &topology)
            .await
            .unwrap()
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
        assert_eq!(header(e, "conversation"), Some(format!("{PNID}:{ANA}")));
    }
    wait_done(&stack.ns, ANA, "m:wamid.ST5").await;
    assert_eq!(queue_len(&stack.ns, "bot").await, 0, "nothing more");
    assert_eq!(queue_len(&stack.ns, "human_chat").await, 0, "nothing more");
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
        let p = topology.partition_of(&coexist::domain::Scope::number(number));
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
    let second = coexist::worker::start(&stack.config, &CancellationToken::new())
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
    assert_eq!(
        queue_len(&stack.ns, "human_chat").await,
        0,
        "exactly once across two workers"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_poison_item_is_dead_lettered_then_replayed_against_the_state_at_replay_time() {
    let stack = Stack::start("poison", 1, &[]).await;
    let t = t0();
    // Corrupt the conversation's state: every decision about it fails until it is repaired.
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let state_key = format!("{}:{{{PNID}}}:c:{ANA}:state", stack.ns);
    let _: () = redis.set(&state_key, "{not json").await.unwrap();
    assert_eq!(
        stack
            .post(&customer_text(ANA, "wamid.PO1", t, "¿hay envío?"))
            .await,
        200
    );
    let topology = Topology::new(&stack.ns, 4);
    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = coexist::dlq::list(&amqp_url(), &topology).await.unwrap();
        if !entries.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(entries.len(), 1, "dead-lettered after its attempts");
    assert_eq!(entries[0].stage, coexist::broker::Stage::Worker);
    assert!(
        entries[0].reason.contains("cannot be read"),
        "{:?}",
        entries[0]
    );
    assert!(
        entries[0]
            .reason
            .contains(&format!("{{{PNID}}}:c:…0001:state"))
            && !entries[0].reason.contains(ANA),
        "names the conversation without the full phone number: {:?}",
        entries[0]
    );
    assert_eq!(entries[0].attempts, 5);
    assert_eq!(
        queue_len(&stack.ns, "bot").await,
        0,
        "nothing reached the bot"
    );
    // Repair, then a human takes the conversation before the replay.
    let _: () = redis.del(&state_key).await.unwrap();
    assert_eq!(
        stack
            .post(&echo_text(ANA, "wamid.PO2", t + 1, "te atiendo"))
            .await,
        200
    );
    assert_eq!(
        take_events(&stack.ns, "human_chat", 2, 10 * SECS)
            .await
            .len(),
        2
    );
    let replayed = coexist::dlq::replay(&amqp_url(), &topology, None, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        replayed,
        coexist::dlq::Replayed {
            replayed: 1,
            units: 1,
            parked_again: 0
        }
    );
    let human = take_events(&stack.ns, "human_chat", 1, 10 * SECS).await;
    assert_eq!(human.len(), 1);
    assert_eq!(
        human[0].kind, "message.received",
        "decided against the state at replay time: paused"
    );
    assert_eq!(human[0].body["message"]["text"], json!("¿hay envío?"));
    assert_eq!(queue_len(&stack.ns, "bot").await, 0);
    assert!(coexist::dlq::list(&amqp_url(), &topology)
        .await
        .unwrap()
        .is_empty());
    stack.stop().await;
}

#[tokio::test]
async fn redis_unreachable_holds_items_back_until_it_returns() {
    let proxy = TcpProxy::start("127.0.0.1:6379").await;
    let redis_via_proxy = format!("redis://{}", proxy.addr);
    let stack = Stack::start("redisdown", 1, &[("COEXIST_REDIS_URL", &redis_via_proxy)]).await;
    let t = t0();
    proxy.cut();
    for i in 0..5 {
        assert_eq!(
            stack
                .post(&customer_text(
                    ANA,
                    &format!("wamid.RD{i}"),
                    t,
                    &i.to_string()
                ))
                .await,
            200,
            "the ingress needs no Redis"
        );
    }
    // The worker holds every unit and knows Redis is away: nothing can have reached the bot.
    let admin = stack.workers[0].admin_addr;
    eventually(
        READY_WITHIN,
        "the worker to hold the items without Redis",
        || async {
            let ready = partitions_ready(&stack.ns, 4).await;
            let (_, readyz) = http(admin, "GET", "/readyz", &[], b"").await;
            match (ready, readyz.contains("redis: not ready")) {
                (0, true) => Ok(()),
                (0, false) => Err(format!("/readyz does not report Redis down: {readyz:?}")),
                (n, _) => Err(format!("{n} unit(s) not yet delivered")),
            }
        },
    )
    .await;
    assert_eq!(
        queue_len(&stack.ns, "bot").await,
        0,
        "no state, nothing to the AI agent"
    );
    proxy.restore().await;
    let got = take_events(&stack.ns, "bot", 5, 30 * SECS).await;
    let texts: Vec<&str> = got
        .iter()
        .map(|e| e.body["message"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["0", "1", "2", "3", "4"],
        "all of them, in order, once Redis is back"
    );
    stack.stop().await;
}

#[tokio::test]
async fn the_broker_dropping_every_connection_mid_load_loses_nothing() {
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    let via_proxy = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let stack = Stack::start("brokerdrop", 1, &[("COEXIST_AMQP_URL", &via_proxy)]).await;
    let t = t0();
    let total = 60;
    let poster = {
        let addr = stack.ingress.addr;
        tokio::spawn(async move {
            let mut accepted = 0;
            for i in 0..total {
                let body = customer_text(
                    &format!("52155599{:05}", i % 6),
                    &format!("wamid.BD{i}"),
                    t,
                    &i.to_string(),
                );
                let sig = coexist::ingress::sign(SECRET, body.as_bytes());
                // Meta retries until it gets a 200.
                loop {
                    let status = http(
                        addr,
                        "POST",
                        "/webhook",
                        &[("X-Hub-Signature-256", sig.clone())],
                        body.as_bytes(),
                    )
                    .await
                    .0;
                    if status == 200 {
                        accepted += 1;
                        break;
                    }
                    assert_eq!(status, 503, "unavailable, never an error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            accepted
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore().await;
    assert_eq!(poster.await.unwrap(), total);
    let (got, copies) = take_distinct(&stack.ns, "bot", total, 60 * SECS).await;
    eprintln!("{total} events, {copies} copies on the wire");
    let ids: HashSet<String> = got
        .iter()
        .map(|e| e.body["message"]["id"].as_str().unwrap().to_owned())
        .collect();
    if ids.len() != total {
        let missing: Vec<String> = (0..total)
            .map(|i| format!("wamid.BD{i}"))
            .filter(|id| !ids.contains(id))
            .collect();
        let queues = std::process::Command::new("rabbitmqctl")
            .args([
                "list_queues",
                "name",
                "messages",
                "messages_unacknowledged",
                "consumers",
            ])
            .output();
        let queues = queues
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.contains(&stack.ns))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        panic!(
            "missing {missing:?}; owned {:?}; queues:\n{queues}",
            stack.workers[0].owned()
        );
    }
    assert_in_order_per_conversation(&got);
    stack.stop().await;
}

#[tokio::test]
async fn a_worker_killed_mid_load_loses_nothing() {
    // Ingress in this process, two workers as processes.
    let stack = Stack::start("kill9", 0, &[("COEXIST_PARTITIONS", "6")]).await;
    let env = [
        ("COEXIST_NAMESPACE", stack.ns.as_str()),
        ("COEXIST_PARTITIONS", "6"),
    ];
    let a = Process::start("worker", &env).await;
    let b = Process::start("worker", &env).await;
    let t = t0();
    let total = 300;
    let posted = Arc::new(AtomicUsize::new(0));
    let poster = {
        let (addr, posted) = (stack.ingress.addr, posted.clone());
        tokio::spawn(async move {
            for i in 0..total {
                let body = customer_text(
                    &format!("52155566{:05}", i % 25),
                    &format!("wamid.K{i}"),
                    t,
                    &i.to_string(),
                );
                assert_eq!(post_signed(addr, &body).await, 200);
                posted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Both share the partitions and work is flowing: then kill one without warning.
    eventually(
        READY_WITHIN,
        "both workers to share the partitions under load",
        || async {
            let owned = (
                a.metric("coexist_partitions_owned").await,
                b.metric("coexist_partitions_owned").await,
            );
            let n = posted.load(Ordering::SeqCst);
            match owned {
                (Some(x), Some(y)) if x > 0.0 && y > 0.0 && x + y == 6.0 && n >= 60 => Ok(()),
                _ => Err(format!("partitions owned {owned:?}, {n} webhooks posted")),
            }
        },
    )
    .await;
    let mut a = a;
    a.child.kill().unwrap(); // SIGKILL
    let _ = a.child.wait();
    let killed_at = std::time::Instant::now();
    // The survivor takes over the dead worker's partitions (membership expiry ~10 s).
    eventually(
        30 * SECS,
        "the survivor to take every partition",
        || async {
            match b.metric("coexist_partitions_owned").await {
                Some(6.0) => Ok(()),
                other => Err(format!("it owns {other:?}")),
            }
        },
    )
    .await;
    eprintln!(
        "survivor owns every partition {:?} after the kill",
        killed_at.elapsed()
    );
    poster.await.unwrap();
    let (got, copies) = take_distinct(&stack.ns, "bot", total, 60 * SECS).await;
    eprintln!("{} distinct events, {copies} copies", got.len());
    let ids: HashSet<String> = got
        .iter()
        .map(|e| e.body["message"]["id"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<usize> = (0..total)
        .filter(|i| !ids.contains(&format!("wamid.K{i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "every accepted webhook's event: missing {missing:?}"
    );
    assert_in_order_per_conversation(&got);
    drop(b);
    stack.stop().await;
}

#[tokio::test]
async fn sigterm_stops_a_worker_within_ten_seconds() {
    let stack = Stack::start("sigterm", 0, &[]).await;
    let env = [
        ("COEXIST_NAMESPACE", stack.ns.as_str()),
        ("COEXIST_PARTITIONS", "4"),
    ];
    let mut w = Process::start("worker", &env).await;
    eventually(READY_WITHIN, "the worker to own the partitions", || async {
        match w.metric("coexist_partitions_owned").await {
            Some(4.0) => Ok(()),
            other => Err(format!("it owns {other:?}")),
        }
    })
    .await;
    let t = t0();
    for i in 0..20 {
        let body = customer_text(ANA, &format!("wamid.TERM{i}"), t, &i.to_string());
        assert_eq!(stack.post(&body).await, 200);
    }
    let started = std::time::Instant::now();
    w.terminate();
    assert_eq!(
        exit_within(&mut w.child, started, 10 * SECS).await,
        Some(0),
        "a clean exit within 10 s of SIGTERM"
    );
    // What it finished is published; what it handed back is for the next worker.
    let next = coexist::worker::start(&stack.config, &CancellationToken::new())
        .await
        .unwrap();
    let (got, _) = take_distinct(&stack.ns, "bot", 20, 30 * SECS).await;
    assert_eq!(got.len(), 20, "what it held was finished or handed back");
    assert_in_order_per_conversation(&got);
    next.stop().await;
    stack.stop().await;
}

#[tokio::test]
async fn serve_runs_ingress_and_worker_in_one_process() {
    let ns = unique_ns("serve");
    let (_redis, _amqp) = (NsGuard(ns.clone()), AmqpNsGuard(ns.clone()));
    let env = [
        ("COEXIST_NAMESPACE", ns.as_str()),
        ("COEXIST_APP_SECRET", SECRET),
        ("COEXIST_PARTITIONS", "2"),
    ];
    let (mut serve, listen) = Process::serving(&env).await;
    let t = t0();
    for body in [
        customer_text(ANA, "wamid.SV1", t, "Hola"),
        echo_text(ANA, "wamid.SV2", t + 1, "te atiendo"),
    ] {
        assert_eq!(post_signed(listen, &body).await, 200);
    }
    let (bot, _) = take_distinct(&ns, "bot", 2, 15 * SECS).await;
    let kinds: Vec<&str> = bot.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["message.received", "session.paused"]);
    serve.terminate();
    assert_eq!(
        exit_within(&mut serve.child, std::time::Instant::now(), 10 * SECS).await,
        Some(0),
        "a clean exit within 10 s"
    );
}

/// Events carry each conversation's sequence numbers (the message text) in increasing order.
fn assert_in_order_per_conversation(events: &[Taken]) {
    let mut last: HashMap<String, i64> = HashMap::new();
    for e in events {
        let n: i64 = e.body["message"]["text"].as_str().unwrap().parse().unwrap();
        let c = e.body["customer"]["wa_id"].as_str().unwrap().to_owned();
        assert!(
            last.get(&c).is_none_or(|prev| *prev < n),
            "{c}: {n} after {:?}",
            last.get(&c)
        );
        last.insert(c, n);
    }
}

/// Runs `serve` with JSON logs at `level`, passes a story through, stops it; returns stderr.
async fn serve_logs(level: &str, content: bool) -> String {
    let ns = unique_ns("logs");
    let (_redis, _amqp) = (NsGuard(ns.clone()), AmqpNsGuard(ns.clone()));
    let content = content.to_string();
    let env = [
        ("COEXIST_NAMESPACE", ns.as_str()),
        ("COEXIST_APP_SECRET", SECRET),
        ("COEXIST_PARTITIONS", "2"),
        ("COEXIST_LOG", level),
        ("COEXIST_LOG_CONTENT", content.as_str()),
    ];
    let (mut serve, listen) = Process::serving(&env).await;
    let t = t0();
    for body in [
        customer_text(ANA, "wamid.LG1", t, "mi dirección secreta"),
        echo_text(ANA, "wamid.LG2", t + 1, "respuesta privada"),
        "not a webhook at all".to_owned(),
    ] {
        assert_eq!(post_signed(listen, &body).await, 200);
    }
    let unsigned = customer_text(ANA, "wamid.LG3", t, "sin firma");
    assert_eq!(
        http(listen, "POST", "/webhook", &[], unsigned.as_bytes())
            .await
            .0,
        401
    );
    assert_eq!(
        take_distinct(&ns, "human_chat", 2, 10 * SECS).await.0.len(),
        2
    );
    serve.terminate();
    exit_within(&mut serve.child, std::time::Instant::now(), 10 * SECS).await;
    // The reading thread has the last lines once the pipe closes.
    eventually(10 * SECS, "the log to end", || async {
        serve
            .log()
            .contains("worker stopped")
            .then_some(())
            .ok_or("no \"worker stopped\" yet".to_owned())
    })
    .await;
    serve.log()
}

#[tokio::test]
async fn logs_are_json_without_message_text_or_phone_numbers() {
    let logs = serve_logs("debug", false).await;
    assert!(logs.lines().count() > 5, "something was logged: {logs}");
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"].is_object(),
            "structured: {line}"
        );
        for secret in ["secreta", "privada", "sin firma", ANA] {
            assert!(!line.contains(secret), "{secret:?} leaked: {line}");
        }
    }
    assert!(
        logs.contains("…0001"),
        "conversations appear redacted: {logs}"
    );
    // Each item's lines carry a span naming it: partition, conversation, item, rule.
    let decided: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["fields"]["message"] == "item decided")
        .collect();
    let first = decided
        .iter()
        .find(|v| v["span"]["item"] == "m:wamid.LG1")
        .unwrap_or_else(|| panic!("an \"item decided\" line in the span of wamid.LG1: {logs}"));
    assert_eq!(first["span"]["name"], "item");
    assert_eq!(first["span"]["rule"], "R2");
    assert_eq!(first["span"]["conversation"], format!("{PNID}:…0001"));
    assert!(first["span"]["partition"].is_number());
    // The debug setting that asks for them shows full conversations.
    let logs = serve_logs("coexist=debug,info", true).await;
    assert!(
        logs.contains(&format!("{PNID}:{ANA}")),
        "full conversation with COEXIST_LOG_CONTENT=true"
    );
}

/// Whether RabbitMQ still has a connection whose name contains `name`.
fn broker_has_connection(name: &str) -> bool {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "client_properties"])
        .output()
        .expect("rabbitmqctl");
    String::from_utf8_lossy(&out.stdout).contains(name)
}

#[tokio::test]
async fn dropping_a_worker_or_the_ingress_without_stop_leaves_nothing_running() {
    let ns = unique_ns("drop");
    let (_redis, _amqp) = (NsGuard(ns.clone()), AmqpNsGuard(ns.clone()));
    let config = stack_config(&ns, &[]);
    let never = CancellationToken::new(); // nobody cancels it: only the drops stop anything
    let worker = coexist::worker::start(&config, &never).await.unwrap();
    let ingress = coexist::ingress::start(&config, &never).await.unwrap();
    let (id, admin, listen, link) = (
        worker.id.clone(),
        worker.admin_addr,
        ingress.addr,
        ingress.link.clone(),
    );
    eventually(
        READY_WITHIN,
        "the worker and the ingress to run",
        || async {
            let owned = worker.owned().len();
            match (owned, link.is_connected(), broker_has_connection(&id)) {
                (4, true, true) => Ok(()),
                state => Err(format!(
                    "(partitions, ingress linked, worker linked) = {state:?}"
                )),
            }
        },
    )
    .await;
    drop(worker);
    drop(ingress);
    let redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    eventually(READY_WITHIN, "every task of both to end", || async {
        let mut running = Vec::new();
        if tokio::net::TcpStream::connect(admin).await.is_ok() {
            running.push("the worker's admin server");
        }
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            running.push("the ingress's server");
        }
        let members: Vec<String> = redis
            .clone()
            .zrange(format!("{ns}:workers"), 0, -1)
            .await
            .unwrap();
        if members.contains(&id) {
            running.push("the worker's membership");
        }
        if broker_has_connection(&id) {
            running.push("the worker's broker link");
        }
        if link.is_connected() {
            running.push("the ingress's broker link");
        }
        running.is_empty().then_some(()).ok_or(running.join(", "))
    })
    .await;
    assert!(!never.is_cancelled(), "stopped by the drops alone");
}

// Multi-threaded: the test blocks on the tail's output while the stack runs in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_one_conversation_and_takes_nothing_from_the_default_queues() {
    use std::io::BufRead;
    let stack = Stack::start("tail", 1, &[]).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coexist"))
        .args([
            "tail",
            "--json",
            "--conversation",
            &format!("{PNID}:+52 1 555 123 0001"),
        ])
        .env_clear()
        .env("COEXIST_NAMESPACE", &stack.ns)
        .env("COEXIST_AMQP_URL", amqp_url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send((true, l));
        }
    });
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send((false, l));
        }
    });
    let next = |within: Duration| rx.recv_timeout(within).ok();
    let ready = next(READY_WITHIN).expect("tail says it follows");
    assert!(!ready.0 && ready.1.starts_with("following"), "{ready:?}");
    let t = t0();
    for body in [
        customer_text(ANA, "wamid.TL1", t, "hola"),
        customer_text(LUIS, "wamid.TL2", t, "soy Luis"),
        echo_text(ANA, "wamid.TL3", t + 1, "te atiendo"),
    ] {
        assert_eq!(stack.post(&body).await, 200);
    }
    let mut shown: Vec<serde_json::Value> = Vec::new();
    let mut said = Vec::new();
    while shown.len() < 4 {
        let Some((stdout, line)) = next(30 * SECS) else {
            panic!("only {} shown; stderr: {said:?}", shown.len());
        };
        match stdout {
            true => shown.push(serde_json::from_str(&line).unwrap()),
            false => said.push(line),
        }
    }
    let mut kinds: Vec<&str> = shown.iter().map(|e| e["type"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "conversation.handover",
            "message.received",
            "message.sent_from_app",
            "session.paused"
        ]
    );
    assert!(shown.iter().all(|e| e["customer"]["wa_id"] == json!(ANA)));
    wait_done(&stack.ns, LUIS, "m:wamid.TL2").await;
    wait_done(&stack.ns, ANA, "m:wamid.TL3").await;
    // Ctrl-C ends it cleanly.
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert_eq!(
        exit_within(&mut child, std::time::Instant::now(), 10 * SECS).await,
        Some(0)
    );
    assert!(
        !shown.iter().any(|e| e["customer"]["wa_id"] == json!(LUIS)),
        "Luis's event is filtered out"
    );
    // Everything is still in the default queues for their consumers.
    assert_eq!(queue_len(&stack.ns, "bot").await, 3);
    assert_eq!(queue_len(&stack.ns, "human_chat").await, 2);
    stack.stop().await;
}

/// Runs `coexist send` against `url` with `secret` (blocking, off the runtime's threads).
async fn send(url: String, secret: &str, files: &[&str]) -> std::process::Output {
    let (secret, files): (String, Vec<String>) = (
        secret.to_owned(),
        files.iter().map(|f| f.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_coexist"))
            .arg("send")
            .args(["--url", &url])
            .args(&files)
            .env_clear()
            .env("COEXIST_APP_SECRET", secret)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn send_signs_and_posts_and_says_what_was_refused() {
    let stack = Stack::start("send", 1, &[]).await;
    let url = format!("http://{}/webhook", stack.ingress.addr);
    let out = send(url.clone(), SECRET, &["examples/handover-story.jsonl"]).await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.lines().count(), 8, "{said}");
    assert!(said.lines().all(|l| l.ends_with(": 200 OK")), "{said}");
    assert!(
        said.starts_with("examples/handover-story.jsonl:1: 200 OK"),
        "{said}"
    );
    // Its events were published. (The story is a year old: the App's replies are recorded but
    // pause nothing, R8, so every customer message goes to the AI agent.)
    assert_eq!(take_events(&stack.ns, "bot", 5, 20 * SECS).await.len(), 5);
    assert_eq!(
        take_events(&stack.ns, "human_chat", 2, 20 * SECS)
            .await
            .len(),
        2
    );
    // A wrong secret: refused, named, non-zero.
    let out = send(
        url,
        "not-the-secret",
        &["examples/webhooks/customer-text.json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401 Unauthorized"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("401 Unauthorized"));
    // Nobody listening: retried with backoff, then refused. On 127.0.0.2, where no other test
    // listens (they bind 127.0.0.1:0 and could be given the port in between).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = send(
        format!("http://{closed}/webhook"),
        SECRET,
        &["examples/webhooks/customer-text.json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.lines().filter(|l| l.contains("retrying in")).count(),
        coexist::send::ATTEMPTS as usize - 1,
        "{said}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer"));
    stack.stop().await;
}

#[tokio::test]
async fn an_idle_worker_consumes_again_after_the_broker_connection_drops() {
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    let via_proxy = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let stack = Stack::start("idledrop", 1, &[("COEXIST_AMQP_URL", &via_proxy)]).await;
    let t = t0();
    assert_eq!(
        stack
            .post(&customer_text(ANA, "wamid.ID1", t, "antes"))
            .await,
        200
    );
    wait_done(&stack.ns, ANA, "m:wamid.ID1").await;
    // Nothing in flight: the connection drops while every consumer waits for deliveries.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore().await;
    stack
        .post_until_ok(
            &customer_text(ANA, "wamid.ID2", t + 1, "después"),
            60 * SECS,
        )
        .await;
    wait_done(&stack.ns, ANA, "m:wamid.ID2").await;
    let texts: Vec<String> = take_events(&stack.ns, "bot", 2, 10 * SECS)
        .await
        .iter()
        .map(|e| e.body["message"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["antes", "después"]);
    stack.stop().await;
}

/// A Redis server of a test's own, with AOF persistence, that the test can restart.
struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("coexist-redis-aof-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let redis = OwnRedis { port, dir };
        redis.run();
        redis
    }

    fn run(&self) {
        let status = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .status()
            .expect("redis-server (scripts/test installs it)");
        assert!(status.success());
        let deadline = std::time::Instant::now() + READY_WITHIN;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Shuts the server down (its AOF on disk) and starts it again on the same port and files.
    fn restart(&self) {
        let _ = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown"])
            .status();
        let deadline = std::time::Instant::now() + READY_WITHIN;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.run();
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_survives_a_real_redis_restart_with_persistence() {
    let redis = tokio::task::spawn_blocking(OwnRedis::start).await.unwrap();
    let stack = Stack::start("aof", 1, &[("COEXIST_REDIS_URL", &redis.url())]).await;
    let t = t0();
    assert_eq!(
        stack
            .post(&echo_text(ANA, "wamid.AOF1", t, "te atiendo"))
            .await,
        200
    );
    let human = take_events(&stack.ns, "human_chat", 2, 30 * SECS).await;
    assert_eq!(human[0].kind, "conversation.handover");
    let redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    // The worker reconnects by itself; the pause in force still holds.
    stack
        .post_until_ok(
            &customer_text(ANA, "wamid.AOF2", t + 60, "¿sigues?"),
            30 * SECS,
        )
        .await;
    let human = take_events(&stack.ns, "human_chat", 1, 60 * SECS).await;
    assert_eq!(
        human.len(),
        1,
        "the message reached the human after the restart"
    );
    assert_eq!(human[0].kind, "message.received");
    assert_eq!(
        queue_len(&stack.ns, "bot").await,
        0,
        "nothing to the AI agent"
    );
    stack.stop().await;
    drop(redis);
}
