//! What only the Redis store has: TTL keys as the truth, key layout and retention, and atomic
//! read-decide-write under concurrency (several tasks, one conversation).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use coexist::core::apply::{Applier, Delivery};
use coexist::core::engine::{Input, Rules};
use coexist::core::meta::parse_body;
use coexist::core::time::Millis;
use redis::AsyncCommands;
use serde_json::json;

use crate::support::*;

/// A key of a conversation (`{ns}:{pnid}:c:{id}:{suffix}`).
fn conv_key(ns: &str, customer: &str, suffix: &str) -> String {
    format!("{ns}:{{{PNID}}}:c:{customer}:{suffix}")
}

/// The dedup mark of an input of the test number.
fn seen_key(ns: &str, key: &str) -> String {
    format!("{ns}:{{{PNID}}}:seen:{key}")
}

#[tokio::test]
async fn the_pause_is_a_ttl_key_and_its_expiry_routes_back_to_the_bot() {
    let (e, ns) = redis_engine(
        "ttl",
        Rules::new(
            "/reset",
            Duration::from_secs(2),
            Duration::from_secs(86_400),
        ),
    )
    .await;
    let mut conn = e.store().connection();
    let now_ms = Millis::now();
    let ts = now_ms.0 / 1000;
    let h = feed(&e, &echo_text(ANA, "wamid.TT1", ts, "Te atiendo"), ts).await;
    assert_eq!(h.len(), 2);
    let pttl: i64 = conn.pttl(conv_key(&ns.0, ANA, "pause")).await.unwrap();
    assert!(
        (0..=2000).contains(&pttl),
        "pause TTL follows the deadline: {pttl}"
    );
    // Wait for Redis to expire the key by itself.
    let until = (ts + 2) * 1000;
    tokio::time::sleep(Duration::from_millis(
        (until - Millis::now().0 + 150).max(0) as u64,
    ))
    .await;
    let exists: bool = conn.exists(conv_key(&ns.0, ANA, "pause")).await.unwrap();
    assert!(!exists, "Redis expired the pause");
    let now = Millis::now();
    let item = parse_body(customer_text(ANA, "wamid.TT2", now.0 / 1000, "hola").as_bytes())
        .unwrap()
        .items;
    let applied = e.apply(&Input::Item(&item[0]), now).await.unwrap();
    let ev = events(&applied);
    assert_eq!(
        kinds(&ev),
        pairs(&[
            ("human_chat", "conversation.released"),
            ("bot", "message.received")
        ])
    );
    assert_eq!(ev[0].body["reason"], json!("timeout"));
}

#[tokio::test]
async fn deleting_the_pause_key_by_hand_releases_the_pause() {
    let (e, ns) = redis_engine("del", Rules::default()).await;
    let t = t0();
    feed(&e, &echo_text(ANA, "wamid.DL1", t, "Te atiendo"), t).await;
    let _: i64 = e
        .store()
        .connection()
        .del(conv_key(&ns.0, ANA, "pause"))
        .await
        .unwrap();
    let m = feed(&e, &customer_text(ANA, "wamid.DL2", t + 1, "hola"), t + 1).await;
    assert_eq!(
        kinds(&m),
        pairs(&[
            ("human_chat", "conversation.released"),
            ("bot", "message.received")
        ])
    );
}

#[tokio::test]
async fn keys_share_one_slot_and_live_as_long_as_promised() {
    let (e, ns) = redis_engine("layout", Rules::default()).await;
    let t = t0();
    feed(&e, &customer_text(ANA, "wamid.KL1", t, "Hola"), t).await;
    feed(&e, &echo_text(ANA, "wamid.KL2", t, "Te atiendo"), t).await;
    let mut conn = e.store().connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", ns.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    // Every key of the number shares its hash tag (one slot on Redis Cluster).
    let tag = format!("{}:{{{PNID}}}:", ns.0);
    let conv: HashSet<&str> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(&format!("{tag}c:{ANA}:")))
        .collect();
    assert_eq!(
        conv,
        HashSet::from(["v", "pause", "session", "state", "handback", "trail"]),
        "{keys:?}"
    );
    let marks = keys
        .iter()
        .filter(|k| k.starts_with(&format!("{tag}seen:")))
        .count();
    assert_eq!(marks, 2, "a dedup mark per item, per number: {keys:?}");
    assert_eq!(
        keys.iter()
            .filter(|k| !k.starts_with(&tag))
            .collect::<Vec<_>>(),
        [&format!("{}:deadlines", ns.0)],
        "the deadline set lives apart"
    );
    assert!(keys.contains(&format!("{}:deadlines", ns.0)));
    for k in &keys {
        assert!(
            k.starts_with(&format!("{}:", ns.0)),
            "every key under the namespace: {k}"
        );
    }
    let seen_ttl: i64 = conn.ttl(seen_key(&ns.0, "m:wamid.KL1")).await.unwrap();
    assert!(
        seen_ttl >= 7 * 86_400,
        "dedup marks live at least 7 days: {seen_ttl}"
    );
    let pause_ttl: i64 = conn.ttl(conv_key(&ns.0, ANA, "pause")).await.unwrap();
    assert!(
        (7 * 86_400 - 5..=7 * 86_400).contains(&pause_ttl),
        "{pause_ttl}"
    );
    let state_ttl: i64 = conn.ttl(conv_key(&ns.0, ANA, "state")).await.unwrap();
    let handback_ttl: i64 = conn.ttl(conv_key(&ns.0, ANA, "handback")).await.unwrap();
    assert!(
        state_ttl > 7 * 86_400 && (state_ttl - handback_ttl).abs() <= 1,
        "the handback expires with the state: {handback_ttl} / {state_ttl}"
    );
    let trail_ttl: i64 = conn.ttl(conv_key(&ns.0, ANA, "trail")).await.unwrap();
    assert!(
        (state_ttl - trail_ttl).abs() <= 1,
        "the trail expires with the state: {trail_ttl} / {state_ttl}"
    );
    let session_ttl: i64 = conn.ttl(conv_key(&ns.0, ANA, "session")).await.unwrap();
    assert!(
        (86_400 - 5..=86_400).contains(&session_ttl),
        "{session_ttl}"
    );
    let deadline: Option<f64> = conn
        .zscore(
            format!("{}:deadlines", ns.0),
            format!("{PNID}:{ANA}|m:wamid.KL2"),
        )
        .await
        .unwrap();
    assert_eq!(deadline, Some(((t + 7 * 86_400) * 1000) as f64));
}

#[tokio::test]
async fn one_item_applied_by_many_tasks_is_decided_once() {
    let (e, _ns) = redis_engine("same", Rules::default()).await;
    let e = Arc::new(e);
    let t = t0();
    feed(&e, &customer_text(ANA, "wamid.SM0", t, "Hola"), t).await;
    let body = echo_text(ANA, "wamid.SM1", t + 1, "Te atiendo");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (e, body) = (e.clone(), body.clone());
            tokio::spawn(async move { apply_body(&e, &body, t + 1).await.remove(0) })
        })
        .collect();
    let mut fresh = 0;
    let mut bodies = HashSet::new();
    for task in tasks {
        let applied = task.await.unwrap();
        if applied.delivery == Delivery::Fresh {
            fresh += 1;
        }
        assert_ne!(
            applied.delivery,
            Delivery::Duplicate,
            "never acknowledged, so never a bare duplicate"
        );
        bodies.insert(
            events(&applied)
                .iter()
                .map(|e| e.body.to_string())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(fresh, 1, "decided exactly once");
    assert_eq!(bodies.len(), 1, "every task got the same events");
}

#[tokio::test]
async fn concurrent_messages_start_exactly_one_session() {
    let (e, _ns) = redis_engine("sessions", Rules::default()).await;
    let e = Arc::new(e);
    let t = t0();
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let e = e.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..40 {
                    out.extend(
                        feed(
                            &e,
                            &customer_text(ANA, &format!("wamid.CS{task}.{i}"), t, "hola"),
                            t,
                        )
                        .await,
                    );
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert_eq!(all.len(), 320, "every message decided once");
    assert_eq!(
        all.iter()
            .filter(|e| e.body["session_started"] == json!(true))
            .count(),
        1,
        "no doubled session start"
    );
    let sessions: HashSet<_> = all
        .iter()
        .map(|e| e.session().unwrap().to_owned())
        .collect();
    assert_eq!(
        sessions.len(),
        1,
        "no lost session: everyone is in the one session"
    );
}

#[tokio::test]
async fn concurrent_echoes_and_messages_hand_over_exactly_once() {
    let (e, _ns) = redis_engine("handover", Rules::default()).await;
    let e = Arc::new(e);
    let t = t0();
    feed(&e, &customer_text(ANA, "wamid.HO0", t, "Hola"), t).await;
    let tasks: Vec<_> = (0..12)
        .map(|task| {
            let e = e.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..10 {
                    let body = if task % 3 == 0 {
                        echo_text(ANA, &format!("wamid.HOE{task}.{i}"), t + 1, "te atiendo")
                    } else {
                        customer_text(ANA, &format!("wamid.HOC{task}.{i}"), t + 1, "¿hola?")
                    };
                    out.extend(feed(&e, &body, t + 1).await);
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let count = |ex: &str, k: &str| all.iter().filter(|e| e.is(ex, k)).count();
    assert_eq!(count("human_chat", "conversation.handover"), 1);
    assert_eq!(count("bot", "session.paused"), 1);
    assert_eq!(count("human_chat", "message.sent_from_app"), 40);
    assert_eq!(
        count("bot", "message.received") + count("human_chat", "message.received"),
        80
    );
    // After the handover, nothing reached the bot: every bot message was decided before it.
    let sessions: HashSet<_> = all
        .iter()
        .filter_map(|e| e.session().map(str::to_owned))
        .collect();
    assert_eq!(
        sessions.len(),
        1,
        "the bot session continued with the human"
    );
    let m = feed(&e, &customer_text(ANA, "wamid.HO9", t + 2, "?"), t + 2).await;
    assert_eq!(kinds(&m), pairs(&[("human_chat", "message.received")]));
}

#[tokio::test]
async fn deadlines_are_claimed_by_one_worker_each() {
    let (e, _ns) = redis_engine(
        "claims",
        Rules::new(
            "/reset",
            Duration::from_secs(60),
            Duration::from_secs(86_400),
        ),
    )
    .await;
    let e = Arc::new(e);
    let t = t0();
    for i in 0..50 {
        feed(
            &e,
            &echo_text(
                &format!("52155512{i:05}"),
                &format!("wamid.DC{i}"),
                t,
                "te atiendo",
            ),
            t,
        )
        .await;
    }
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let e = e.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..5 {
                    out.extend(sweep(&e, t + 61).await);
                }
                out
            })
        })
        .collect();
    let mut ids = HashMap::new();
    for task in tasks {
        for ev in task.await.unwrap() {
            assert_eq!(ev.body["reason"], json!("timeout"));
            *ids.entry(ev.body["event_id"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(ids.len(), 50, "every pause released");
    assert!(ids.values().all(|n| *n == 1), "each exactly once");
}

#[tokio::test]
async fn an_unfinished_claim_comes_due_again_with_the_same_event() {
    let (e, _ns) = redis_engine(
        "lease",
        Rules::new(
            "/reset",
            Duration::from_secs(60),
            Duration::from_secs(86_400),
        ),
    )
    .await;
    let t = t0();
    feed(&e, &echo_text(ANA, "wamid.LS1", t, "te atiendo"), t).await;
    // A worker claims and decides the release, then dies before publishing.
    let first = e.release_due(Millis::from_secs(t + 61), 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        e.release_due(Millis::from_secs(t + 62), 10)
            .await
            .unwrap()
            .is_empty(),
        "held by the lease"
    );
    let again = e
        .release_due(Millis::from_secs(t + 61 + 31), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "the lease ran out: due again");
    assert_eq!(again[0].delivery, Delivery::Redelivered);
    assert_eq!(
        events(&again[0])[0].body,
        events(&first[0])[0].body,
        "same event, same id"
    );
    e.acknowledge(&again[0]).await.unwrap();
    assert!(e
        .release_due(Millis::from_secs(t + 61 + 100), 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn redis_unreachable_is_an_error_not_a_decision() {
    let started = std::time::Instant::now();
    assert!(coexist::adapters::redis::RedisStore::connect(
        "redis://127.0.0.1:1",
        "test-unreachable"
    )
    .await
    .is_err());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "fails fast: {:?}",
        started.elapsed()
    );

    // Redis behind a proxy that the test cuts and restores.
    let proxy = TcpProxy::start("127.0.0.1:6379").await;
    let ns = NsGuard(unique_ns("outage"));
    let store =
        coexist::adapters::redis::RedisStore::connect(&format!("redis://{}", proxy.addr), &ns.0)
            .await
            .unwrap();
    let e = Applier::new(store, book(Rules::default()));
    let t = t0();
    assert_eq!(
        feed(&e, &customer_text(ANA, "wamid.RD1", t, "hola"), t)
            .await
            .len(),
        1
    );
    proxy.cut();
    let items = parse_body(customer_text(ANA, "wamid.RD2", t + 1, "¿hola?").as_bytes())
        .unwrap()
        .items;
    let r = e
        .apply(&Input::Item(&items[0]), Millis::from_secs(t + 1))
        .await;
    assert!(r.is_err(), "no state, no decision: {r:?}");
    proxy.restore().await;
    let mut last = None;
    for _ in 0..20 {
        match e
            .apply(&Input::Item(&items[0]), Millis::from_secs(t + 1))
            .await
        {
            Ok(applied) => {
                last = Some(applied);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let applied = last.expect("the connection comes back by itself");
    let ev = events(&applied);
    assert_eq!(kinds(&ev), pairs(&[("bot", "message.received")]));
    assert_eq!(
        ev[0].body["session_started"],
        json!(false),
        "state survived the outage"
    );
}

#[tokio::test]
async fn a_commit_short_of_its_replicas_is_counted_and_still_made() {
    // The test server has no replicas: asked for one, each commit waits its second for `WAIT`,
    // is counted as a shortfall, and takes effect all the same.
    let ns = NsGuard(unique_ns("replicas"));
    let target = coexist::adapters::redis::RedisTarget::Server(
        coexist::runtime::secret::Secret::new(redis_url()),
    );
    let store = coexist::adapters::redis::RedisStore::open(&target, &ns.0, 1)
        .await
        .unwrap();
    let e = Applier::new(store, book(Rules::default()));
    let shortfalls = || {
        coexist::runtime::metrics::render()
            .lines()
            .find_map(|l| {
                l.strip_prefix(coexist::runtime::metrics::REPLICA_SHORTFALLS)?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let before = shortfalls();
    let t = t0();
    let started = std::time::Instant::now();
    let events = feed(&e, &customer_text(ANA, "wamid.RP1", t, "hola"), t).await;
    assert_eq!(events.len(), 1, "the commit took effect");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it waited for the replica"
    );
    assert!(shortfalls() >= before + 1.0, "the shortfall is counted");
    // From then on commits do not wait for a replica that is not there (no crawl), and say so.
    assert!(e.store().replicas_short().is_some());
    let started = std::time::Instant::now();
    for i in 2..12 {
        let body = customer_text(ANA, &format!("wamid.RP{i}"), t + i, "más");
        assert_eq!(feed(&e, &body, t + i).await.len(), 1);
    }
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "ten commits while short took {:?}",
        started.elapsed()
    );
    let skipped = coexist::runtime::metrics::render()
        .lines()
        .any(|l| l.starts_with(coexist::runtime::metrics::REPLICA_WAITS_SKIPPED));
    assert!(skipped, "the skipped waits are counted");
}
