//! Faults on real servers: a poison item, Redis unreachable or restarted, the broker dropping
//! every connection, a worker killed mid-load.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coexist::adapters::broker::Topology;
use redis::AsyncCommands;
use serde_json::json;

use crate::support::*;

const SECS: Duration = Duration::from_secs(1);

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
        entries = coexist::tools::dlq::list(&amqp_url(), &topology, 1000)
            .await
            .unwrap()
            .entries;
        if !entries.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(entries.len(), 1, "dead-lettered after its attempts");
    assert_eq!(entries[0].stage, coexist::adapters::broker::Stage::Worker);
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
    stays_empty(&stack.ns, "bot", "nothing reached the bot").await;
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
    let replayed = coexist::tools::dlq::replay(&amqp_url(), &topology, None, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        replayed,
        coexist::tools::dlq::Replayed {
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
    stays_empty(&stack.ns, "bot", "nothing more").await;
    assert!(coexist::tools::dlq::list(&amqp_url(), &topology, 1000)
        .await
        .unwrap()
        .entries
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
    stays_empty(&stack.ns, "bot", "no state, nothing to the AI agent").await;
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
                let sig = coexist::services::ingress::sign(SECRET, body.as_bytes());
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
    both_share_under_load(&a, &b, 6, &posted, 60).await;
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

/// A Redis server of a test's own, with AOF persistence, that the test can restart. It listens
/// on a Unix socket in its own directory (no TCP port: nothing can take its address between two
/// runs).
struct OwnRedis {
    dir: std::path::PathBuf,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "coexist-redis-aof-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let redis = OwnRedis { dir };
        redis.run();
        redis
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.join("redis.sock")
    }

    fn answers(&self) -> bool {
        std::os::unix::net::UnixStream::connect(self.socket()).is_ok()
    }

    fn run(&self) {
        let status = std::process::Command::new("redis-server")
            .args(["--port", "0", "--daemonize", "yes"])
            .arg("--unixsocket")
            .arg(self.socket())
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
        while !self.answers() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on {} did not start",
                self.socket().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cli(&self, args: &[&str]) {
        let _ = std::process::Command::new("redis-cli")
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .status();
    }

    /// Shuts the server down (its AOF on disk) and starts it again on the same socket and files.
    fn restart(&self) {
        self.cli(&["shutdown"]);
        let deadline = std::time::Instant::now() + READY_WITHIN;
        while self.answers() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.run();
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.cli(&["shutdown", "nosave"]);
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
    stays_empty(&stack.ns, "bot", "nothing to the AI agent").await;
    stack.stop().await;
    drop(redis);
}
