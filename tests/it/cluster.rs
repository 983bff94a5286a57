//! On the clusters of `scripts/cluster` (docs/contract.md, "Guarantees"): a RabbitMQ node lost mid-load, a Redis
//! Cluster primary killed mid-load. Ignored by `cargo test` (they need the clusters and stop their
//! nodes); `scripts/test` starts the clusters once and runs these, and the rules and store
//! scenarios against the Redis Cluster (`both!`'s `redis_cluster`), after the rest.

use std::time::{Duration, Instant};

use super::support::*;

const SECS: Duration = Duration::from_secs(1);

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name}: start the clusters with scripts/cluster up, and export what it prints")
    })
}

/// Starts any cluster node that is down (a killed Redis node rejoins as a replica) when dropped.
struct ClusterUp;

impl Drop for ClusterUp {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster");
        let _ = std::process::Command::new(script)
            .arg("up")
            .stdout(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the RabbitMQ cluster of scripts/cluster and stops its first node: scripts/test runs it"]
async fn cluster_rabbitmq_node_holding_the_connections_stopped_mid_load() {
    let urls = var("COEXIST_TEST_AMQP_CLUSTER");
    let first = var("COEXIST_TEST_RABBIT_NODES")
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let stack = Stack::start("cl-rabbit", 2, &[("COEXIST_AMQP_URL", &urls)]).await;
    let _amqp = ClusterAmqpNsGuard(stack.ns.clone(), urls.clone());
    let t = t0();
    // 8 numbers x 4 customers, 10 messages each: 320 webhooks over 32 conversations.
    let conversations: Vec<Vec<String>> = (0..32)
        .map(|k| (0..10).map(|seq| message(k % 8, k, seq, t)).collect())
        .collect();
    let addr = stack.ingress.addr;
    let poster = tokio::spawn(post_like_meta(
        addr,
        conversations,
        Duration::from_millis(300),
    ));
    tokio::time::sleep(SECS).await;
    // Every connection went to the first node: stop it.
    let _restart = StartsApp(Some(first.clone()));
    let node = first.clone();
    tokio::task::spawn_blocking(move || rabbitmqctl(Some(&node), &["stop_app"]))
        .await
        .unwrap();
    let stopped = Instant::now();
    let probe = message(0, 99, 0, t);
    accepted_within(addr, &probe, 30 * SECS, "the ingress to accept again").await;
    eprintln!(
        "the ingress accepted again {:?} after the node stopped",
        stopped.elapsed()
    );
    let others: Vec<String> = var("COEXIST_TEST_RABBIT_NODES")
        .split(',')
        .skip(1)
        .map(str::to_owned)
        .collect();
    let held = tokio::task::spawn_blocking(move || {
        others
            .iter()
            .map(|node| {
                let out = std::process::Command::new("rabbitmqctl")
                    .args(["-q", "-n", node, "list_connections", "client_properties"])
                    .output()
                    .expect("rabbitmqctl runs");
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .collect::<String>()
    })
    .await
    .unwrap();
    assert!(
        held.contains("coexist-ingress") && held.contains("coexist-worker"),
        "the ingress and the workers went on with the other nodes"
    );
    let refused = tokio::time::timeout(180 * SECS, poster)
        .await
        .expect("every webhook accepted within 3 minutes")
        .unwrap();
    eprintln!("{refused} answers other than 200 while the node was away");
    // The node rejoins; nothing is repeated but redeliveries of the same ids.
    let node = first.clone();
    tokio::task::spawn_blocking(move || rabbitmqctl(Some(&node), &["start_app"]))
        .await
        .unwrap();
    let (events, copies) = take_distinct_at(&urls, &stack.ns, "bot", 321, 90 * SECS).await;
    eprintln!("{} events, {copies} deliveries of them", events.len());
    let events: Vec<Taken> = events
        .into_iter()
        .filter(|e| e.body["message"]["id"] != "wamid.CL0.99.0")
        .collect();
    assert_once_each_in_order(&events, 320);
    let more = take_events_at(&urls, &stack.ns, "bot", 1, 3 * SECS).await;
    assert!(
        more.iter().all(|e| events
            .iter()
            .any(|x| x.body["event_id"] == e.body["event_id"])),
        "anything more is a redelivery of an id already seen"
    );
    stack.stop().await;
}

/// The pid and port of the Redis Cluster primary that holds `key`'s slot, as the first node
/// that answers sees it (`None` while no live primary holds it).
async fn primary_of(key: &str) -> Option<(u32, u16)> {
    let mut c = None;
    for seed in redis_cluster_seeds() {
        if let Ok(conn) = redis::Client::open(seed)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
        {
            c = Some(conn);
            break;
        }
    }
    let mut c = c?;
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap();
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut c)
        .await
        .unwrap();
    // <id> <ip:port@bus> <flags> <primary> <ping> <pong> <epoch> <link> <slot ranges...>
    let port = nodes
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| {
            f[2].contains("master")
                && !f[2].contains("fail")
                && f[8..].iter().any(|r| {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    matches!((a.parse::<i64>(), b.parse::<i64>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
                })
        })
        .map(|f| f[1].split(['@', ':']).nth(1).unwrap().parse::<u16>().unwrap())
        .expect("a primary holds the slot");
    let mut p = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut p)
        .await
        .unwrap();
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Some((pid, port))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the Redis Cluster of scripts/cluster and kills a primary: scripts/test runs it"]
async fn cluster_redis_primary_killed_keeps_the_pause() {
    let seeds = redis_cluster_seeds().join(",");
    let stack = Stack::start(
        "cl-redis",
        2,
        &[
            ("COEXIST_REDIS_CLUSTER", &seeds),
            ("COEXIST_REDIS_REPLICAS", "1"),
        ],
    )
    .await;
    let _keys = ClusterNsGuard(stack.ns.clone());
    let _up = ClusterUp;
    let t = t0();
    // Ana is paused: a human answered from the Business App.
    stack
        .post_until_ok(&customer_text(ANA, "wamid.KR1", t, "hola"), 10 * SECS)
        .await;
    stack
        .post_until_ok(
            &echo_text(ANA, "wamid.KR2", t + 1, "te atiendo yo"),
            10 * SECS,
        )
        .await;
    let (bot, _) = take_distinct(&stack.ns, "bot", 2, 20 * SECS).await;
    let kinds: Vec<&str> = bot.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["message.received", "session.paused"],
        "paused before the kill"
    );

    // Load on the same number (the same slot, so the same primary) while its primary dies.
    // 300 webhooks: 30 conversations of 10 messages.
    let conversations: Vec<Vec<String>> = (0..30)
        .map(|c| {
            (0..10)
                .map(|seq| message(0, c, seq, t).replace(&number(0), PNID))
                .collect()
        })
        .collect();
    let addr = stack.ingress.addr;
    let poster = tokio::spawn(post_like_meta(
        addr,
        conversations,
        Duration::from_millis(400),
    ));
    tokio::time::sleep(SECS).await;
    let (pid, port) = primary_of(PNID)
        .await
        .expect("a primary holds the number's slot");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    eprintln!("killed the primary on port {port} (pid {pid})");
    let killed_at = Instant::now();
    let refused = tokio::time::timeout(180 * SECS, poster)
        .await
        .expect("every webhook accepted within 3 minutes")
        .unwrap();
    eprintln!("{refused} answers other than 200 after the kill");
    // Nothing accepted is lost, and the shard left without a replica does not crawl: every
    // event within 60 s of the kill (commits stop waiting for the missing replica).
    let left = (60 * SECS).saturating_sub(killed_at.elapsed());
    let (events, _) = take_distinct(&stack.ns, "bot", 300, left).await;
    eprintln!(
        "{} events out {:?} after the kill",
        events.len(),
        killed_at.elapsed()
    );
    assert_once_each_in_order(&events, 300);
    let (_, readyz) = http(stack.workers[0].admin_addr, "GET", "/readyz", &[], b"").await;
    eprintln!("a worker's /readyz after the failover: {readyz:?}");
    // After the failover the pause holds: Ana's next message goes to the human.
    eventually(30 * SECS, "a replica to take over the slot", || async {
        match primary_of(PNID).await {
            Some((_, now)) if now != port => Ok(()),
            other => Err(format!("primary {other:?}")),
        }
    })
    .await;
    eprintln!(
        "a replica took over {:?} after the kill",
        killed_at.elapsed()
    );
    stack
        .post_until_ok(
            &customer_text(ANA, "wamid.KR3", t + 50, "¿sigue ahí?"),
            30 * SECS,
        )
        .await;
    let human = take_distinct(&stack.ns, "human_chat", 4, 30 * SECS).await.0;
    assert!(
        human.iter().any(|e| e.body["message"]["id"] == "wamid.KR3"),
        "Ana's message after the failover went to the human: {:?}",
        human
            .iter()
            .map(|e| (&e.kind, &e.body["message"]["id"]))
            .collect::<Vec<_>>()
    );
    let bot = take_events(&stack.ns, "bot", 1, 2 * SECS).await;
    assert!(
        bot.iter().all(|e| e.body["message"]["id"] != "wamid.KR3"),
        "and not to the bot"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the Redis Cluster of scripts/cluster: scripts/test runs it"]
async fn cluster_a_commit_sent_again_changes_nothing_the_second_time() {
    use coexist::core::apply::Delivery;
    use coexist::core::engine::Input;
    use coexist::core::store::StateStore;
    let ns = unique_ns("cl-twice");
    let _keys = ClusterNsGuard(ns.clone());
    let store = cluster_store(&ns, 0).await;
    let engine = coexist::core::apply::Applier::new(
        store.clone(),
        book(coexist::core::engine::Rules::default()),
    );
    let t = t0();
    let now = coexist::core::time::Millis::from_secs(t);
    let items =
        coexist::core::meta::parse_body(customer_text(ANA, "wamid.TW1", t, "hola").as_bytes())
            .unwrap()
            .items;
    let first = engine.apply(&Input::Item(&items[0]), now).await.unwrap();
    // The cluster client sends a command again when a node fails before answering; a commit
    // that already took effect finds its dedup mark, so the second run writes nothing and the
    // same events (same ids) come back.
    let again = engine.apply(&Input::Item(&items[0]), now).await.unwrap();
    assert!(matches!(first.delivery, Delivery::Fresh));
    assert!(matches!(again.delivery, Delivery::Redelivered));
    let ids = |a: &coexist::core::apply::Applied| {
        a.events
            .iter()
            .map(|e| e.event.event_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ids(&again));
    let snapshot = store.load(&first.scope, &first.key, now).await.unwrap();
    assert_eq!(snapshot.version, 1, "one commit took effect");
}

/// `amqps://` speaks TLS and checks the broker's certificate (#27): the whole pipeline runs over
/// the first node's TLS listener with the test CA named by `cacertfile`, the broker reports those
/// connections as TLS, and the same listener refuses a client that does not trust its
/// certificate and one that speaks plain AMQP.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the TLS listener of scripts/cluster's first node: scripts/test runs it"]
async fn cluster_amqps_is_tls_and_checks_the_certificate() {
    let tls = var("COEXIST_TEST_AMQPS_URL");
    let stack = Stack::start("cl-amqps", 1, &[("COEXIST_AMQP_URL", &tls)]).await;
    let _amqp = ClusterAmqpNsGuard(stack.ns.clone(), tls.clone());
    let body = customer_text(ANA, "wamid.TLS1", t0(), "over TLS");
    stack.post_until_ok(&body, 30 * SECS).await;
    let events = take_events_at(&tls, &stack.ns, "bot", 1, 30 * SECS).await;
    assert_eq!(events.len(), 1, "the event came through the TLS listener");
    assert_eq!(events[0].body["message"]["text"], "over TLS");
    // The broker's own view: every connection of this stack is a TLS one.
    let node = var("COEXIST_TEST_RABBIT_NODES")
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let listed = tokio::task::spawn_blocking(move || {
        std::process::Command::new("rabbitmqctl")
            .args([
                "-q",
                "-n",
                &node,
                "list_connections",
                "port",
                "ssl",
                "ssl_protocol",
            ])
            .output()
            .expect("rabbitmqctl runs")
    })
    .await
    .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let on_tls: Vec<&str> = listed.lines().filter(|l| l.starts_with("5691")).collect();
    assert!(
        on_tls.len() >= 2,
        "the ingress and the worker connect on 5691: {listed}"
    );
    for line in &on_tls {
        assert!(
            line.contains("true") && line.contains("tlsv1."),
            "a TLS connection: {line}"
        );
    }
    stack.stop().await;
    // Without the CA the test certificate is not trusted: no connection, no credentials sent.
    let untrusted = tls.split('?').next().unwrap().to_owned();
    let refused = coexist::adapters::broker::connect(&untrusted, "coexist-test-untrusted").await;
    let Err(e) = refused else {
        panic!("a certificate no root vouches for is refused")
    };
    assert!(
        format!("{e:?}").to_lowercase().contains("certificate"),
        "refused for its certificate: {e:?}"
    );
    // Plain AMQP to the TLS listener gets nowhere either.
    let plain = untrusted.replacen("amqps://", "amqp://", 1);
    assert!(
        coexist::adapters::broker::connect(&plain, "coexist-test-plain")
            .await
            .is_err(),
        "the TLS listener does not speak plain AMQP"
    );
}
