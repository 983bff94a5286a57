//! The ingress facing hostile clients (docs/contract.md, "Configuration" and "Ingress"): slow and idle connections are cut
//! within the HTTP limits, held bodies stay within the memory budget, connections past the limit
//! are closed at once, webhooks past the confirm bound are shed, and Meta is answered throughout.
//! Also the broker drill: RabbitMQ restarted for real mid-load (ignored by `cargo test`: it stops
//! the broker every other test uses; `scripts/test` runs it alone, after the rest).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

const SECS: Duration = Duration::from_secs(1);

/// The `i`th customer of these tests.
fn customer(i: usize) -> String {
    format!("52155544{i:05}")
}

/// Reads until the server closes `conn` (end of stream or reset); what it sent and when it
/// closed, or `None` when still open after `limit`.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> Option<(Duration, String)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((started.elapsed(), String::from_utf8_lossy(&got).into()))
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// An ingress process in its own namespace, with `limits` on top of the test settings.
async fn ingress(ns: &str, limits: &[(&str, &str)]) -> Process {
    let mut env = vec![("COEXIST_NAMESPACE", ns), ("COEXIST_APP_SECRET", SECRET)];
    env.extend_from_slice(limits);
    Process::start("ingress", &env).await
}

/// A signed webhook is answered `200` within 5 s.
async fn answered_within_5s(addr: std::net::SocketAddr, wamid: &str) {
    let body = customer_text(ANA, wamid, t0(), "¿siguen ahí?");
    let started = Instant::now();
    let status = tokio::time::timeout(5 * SECS, post_signed(addr, &body))
        .await
        .unwrap_or_else(|_| panic!("a signed webhook unanswered after 5 s"));
    assert_eq!(status, 200, "a signed webhook is accepted");
    assert!(started.elapsed() < 5 * SECS);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_slow_bodies_and_idle_connections_are_cut_within_the_limits() {
    let ns = unique_ns("cuts");
    let (_redis, _amqp) = (NsGuard(ns.clone()), AmqpNsGuard(ns.clone()));
    let p = ingress(
        &ns,
        &[
            ("COEXIST_HTTP_HEADER_TIMEOUT", "1s"),
            ("COEXIST_HTTP_BODY_TIMEOUT", "2s"),
            ("COEXIST_HTTP_IDLE_TIMEOUT", "3s"),
        ],
    )
    .await;
    let addr = p.listen.unwrap();

    // A connection that never sends a request: cut at the header timeout.
    let silent = async {
        let mut c = TcpStream::connect(addr).await.unwrap();
        closed_within(&mut c, 10 * SECS).await
    };
    // Headers trickled a byte every 100 ms: the trickle does not extend the header timeout.
    let trickle = async {
        let c = TcpStream::connect(addr).await.unwrap();
        let (mut r, mut w) = c.into_split();
        let writer = tokio::spawn(async move {
            let _ = w.write_all(b"POST /webhook HTTP/1.1\r\nHost: t\r\n").await;
            for b in b"X-Slow: ".iter().cycle() {
                if w.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let started = Instant::now();
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(10 * SECS, async {
            while !matches!(r.read(&mut buf).await, Ok(0) | Err(_)) {}
        })
        .await;
        writer.abort();
        closed.ok().map(|()| started.elapsed())
    };
    // A body that declares 1,000 bytes and sends 10: 408, then closed.
    let slow_body = async {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"POST /webhook HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789")
            .await
            .unwrap();
        closed_within(&mut c, 10 * SECS).await
    };
    // An idle keep-alive connection: open past the header timeout, closed at the idle timeout.
    let idle = async {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).ends_with("ok\n") {
            let n = c.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering");
            got.extend_from_slice(&buf[..n]);
        }
        closed_within(&mut c, 10 * SECS).await
    };
    let (silent, trickle, slow_body, idle) = tokio::join!(silent, trickle, slow_body, idle);

    let (after, _) = silent.expect("a silent connection is closed");
    assert!(
        after >= 900 * Duration::from_millis(1) && after < 3 * SECS,
        "{after:?}"
    );
    let after = trickle.expect("trickled headers are cut");
    assert!(
        after < 3 * SECS,
        "cut at the header timeout, not extended: {after:?}"
    );
    let (after, answer) = slow_body.expect("a slow body is cut");
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "answered 408: {answer:?}"
    );
    assert!(
        after >= 1900 * Duration::from_millis(1) && after < 5 * SECS,
        "{after:?}"
    );
    let (after, _) = idle.expect("an idle connection is closed");
    assert!(
        after >= 2800 * Duration::from_millis(1) && after < 6 * SECS,
        "closed by the idle timeout (3 s), not the header timeout (1 s): {after:?}"
    );

    let cut = |reason: &'static str| p.labelled("coexist_webhooks_total", reason);
    assert!(
        cut("header_timeout").await >= 2.0,
        "counted:\n{}",
        p.metrics().await
    );
    assert!(cut("idle_timeout").await >= 1.0);
    assert!(cut("body_timeout").await >= 1.0);
    answered_within_5s(addr, "wamid.CUT1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_idle_connections_do_not_keep_meta_out() {
    let ns = unique_ns("flood");
    let (_redis, _amqp) = (NsGuard(ns.clone()), AmqpNsGuard(ns.clone()));
    let p = ingress(&ns, &[("COEXIST_HTTP_HEADER_TIMEOUT", "3s")]).await;
    let addr = p.listen.unwrap();
    let mut flood = Vec::with_capacity(2000);
    for _ in 0..2000 {
        flood.push(TcpStream::connect(addr).await.unwrap());
    }
    answered_within_5s(addr, "wamid.FLOOD1").await;
    // Every one of them is cut by the header timeout.
    let closed =
        futures_util::future::join_all(flood.iter_mut().map(|c| closed_within(c, 10 * SECS))).await;
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(
        open, 0,
        "{open} of 2,000 idle connections still open 10 s later"
    );
    assert!(p.labelled("coexist_webhooks_total", "header_timeout").await >= 2000.0);
    answered_within_5s(addr, "wamid.FLOOD2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_limit_are_closed_at_once() {
    let ns = unique_ns("maxconn");
    let (_redis, _amqp) = (NsGuard(ns.clone()), AmqpNsGuard(ns.clone()));
    let p = ingress(&ns, &[("COEXIST_HTTP_MAX_CONNECTIONS", "100")]).await;
    let addr = p.listen.unwrap();
    let mut conns = Vec::new();
    for _ in 0..150 {
        conns.push(TcpStream::connect(addr).await.unwrap());
    }
    let closed =
        futures_util::future::join_all(conns.iter_mut().map(|c| closed_within(c, 2 * SECS))).await;
    let cut = closed.iter().filter(|c| c.is_some()).count();
    assert_eq!(
        cut, 50,
        "the 50 past the limit are closed at once, the rest stay"
    );
    drop(conns);
    // Their slots come back: Meta gets in again.
    let body = customer_text(ANA, "wamid.MAX1", t0(), "hola");
    accepted_within(
        addr,
        &body,
        5 * SECS,
        "a webhook accepted once the flood is gone",
    )
    .await;
    assert_eq!(
        p.labelled("coexist_webhooks_total", "max_connections")
            .await,
        50.0
    );
}

/// The resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn held_bodies_stay_within_the_memory_budget() {
    const BUDGET: u64 = 64 << 20;
    const BODY: usize = 4 << 20;
    let ns = unique_ns("budget");
    let (_redis, _amqp) = (NsGuard(ns.clone()), AmqpNsGuard(ns.clone()));
    let budget = BUDGET.to_string();
    let mut p = ingress(&ns, &[("COEXIST_HTTP_MAX_BUFFERED_BYTES", &budget)]).await;
    let addr = p.listen.unwrap();
    let pid = p.child.id();
    let before = rss(pid);

    // 300 unsigned bodies of 4 MiB, each stopping 10 bytes short, held open.
    let chunk = vec![b'x'; 64 << 10];
    let mut holders = Vec::new();
    for _ in 0..300 {
        let chunk = chunk.clone();
        holders.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let head =
                format!("POST /webhook HTTP/1.1\r\nHost: t\r\nContent-Length: {BODY}\r\n\r\n");
            if c.write_all(head.as_bytes()).await.is_err() {
                return c;
            }
            let mut left = BODY - 10;
            while left > 0 {
                let n = left.min(chunk.len());
                if c.write_all(&chunk[..n]).await.is_err() {
                    break;
                }
                left -= n;
            }
            c
        }));
    }
    let mut peak = before;
    let sampling = async {
        loop {
            peak = peak.max(rss(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let held = tokio::select! {
        held = futures_util::future::join_all(holders) => held,
        () = sampling => unreachable!(),
    };
    for _ in 0..20 {
        peak = peak.max(rss(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "ingress RSS {} MiB before, peak {} MiB",
        before >> 20,
        peak >> 20
    );
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the ingress is alive"
    );
    let margin = 48 << 20;
    assert!(
        peak <= before + BUDGET + margin,
        "RSS peaked at {} MiB (from {} MiB): over the {} MiB budget plus {} MiB",
        peak >> 20,
        before >> 20,
        BUDGET >> 20,
        margin >> 20
    );
    let refused = p.labelled("coexist_webhooks_total", "buffer_full").await;
    assert!(
        refused >= 250.0,
        "the bodies past the budget are refused at once: {refused}"
    );
    drop(held);
    let body = customer_text(ANA, "wamid.BUD1", t0(), "hola");
    accepted_within(
        addr,
        &body,
        5 * SECS,
        "a signed webhook accepted once they are gone",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_past_the_confirm_bound_are_shed_and_the_rest_delivered() {
    let stack = Stack::start("shed", 1, &[("COEXIST_HTTP_MAX_PENDING", "1")]).await;
    let t = t0();
    let bodies: Vec<String> = (0..60)
        .map(|i| {
            customer_text(
                &customer(i % 6),
                &format!("wamid.SHED{i}"),
                t + i as i64,
                "hola",
            )
        })
        .collect();
    let answers = futures_util::future::join_all(bodies.iter().map(|b| stack.post(b))).await;
    let shed = answers.iter().filter(|s| **s == 503).count();
    assert!(
        shed > 0,
        "60 at once with room for 1 awaiting confirms: some are shed"
    );
    assert!(
        answers.iter().all(|s| *s == 200 || *s == 503),
        "{answers:?}"
    );
    // Meta retries what was shed.
    for (body, status) in bodies.iter().zip(&answers) {
        if *status == 503 {
            stack.post_until_ok(body, 20 * SECS).await;
        }
    }
    let (got, _) = take_distinct(&stack.ns, "bot", 60, 30 * SECS).await;
    assert_eq!(
        got.len(),
        60,
        "every webhook answered 200 produces its event"
    );
    assert!(coexist::runtime::metrics::render().contains("reason=\"shed\""));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "stops the broker every other test uses: scripts/test runs it alone, after the rest"]
async fn drill_the_broker_restarting_mid_load_loses_no_accepted_webhook() {
    let stack = Stack::start("drill-broker", 2, &[]).await;
    let t = t0();
    let bodies: Vec<String> = (0..300)
        .map(|i| {
            customer_text(
                &customer(i % 20),
                &format!("wamid.DRILL{i}"),
                t + i as i64,
                &(i / 20).to_string(),
            )
        })
        .collect();
    let addr = stack.ingress.addr;
    // Posted like Meta: one conversation's webhooks in order, each retried until 200; returns
    // how many answers were not 200.
    let poster = tokio::spawn(async move {
        let mut by_conversation: Vec<Vec<String>> = vec![Vec::new(); 20];
        for (i, b) in bodies.into_iter().enumerate() {
            by_conversation[i % 20].push(b);
        }
        let refused =
            futures_util::future::join_all(by_conversation.into_iter().map(|bodies| async move {
                let mut refused = 0;
                for body in bodies {
                    while post_signed(addr, &body).await != 200 {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                refused
            }))
            .await;
        refused.into_iter().sum::<usize>()
    });
    tokio::time::sleep(SECS).await;
    let _restart = StartsApp(None);
    tokio::task::spawn_blocking(|| rabbitmqctl(None, &["stop_app"]))
        .await
        .unwrap();
    tokio::time::sleep(3 * SECS).await;
    tokio::task::spawn_blocking(|| rabbitmqctl(None, &["start_app"]))
        .await
        .unwrap();
    let back = Instant::now();
    let probe = customer_text(ANA, "wamid.DRILLBACK", t, "hola");
    accepted_within(addr, &probe, 30 * SECS, "the ingress to accept again").await;
    eprintln!(
        "the ingress accepted again {:?} after the broker's return",
        back.elapsed()
    );
    let refused = tokio::time::timeout(120 * SECS, poster)
        .await
        .expect("every webhook accepted within 2 minutes")
        .unwrap();
    assert!(
        refused > 0,
        "the broker went away while webhooks were being posted"
    );
    // 300 webhooks and the probe: one event each, in order per conversation.
    let (got, _) = take_distinct(&stack.ns, "bot", 301, 60 * SECS).await;
    assert_eq!(
        got.len(),
        301,
        "every webhook answered 200 produces its event"
    );
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for e in got
        .iter()
        .filter(|e| e.body["message"]["id"] != "wamid.DRILLBACK")
    {
        let n: i64 = e.body["message"]["text"].as_str().unwrap().parse().unwrap();
        let c = e.body["customer"]["wa_id"].as_str().unwrap().to_owned();
        assert!(
            last.get(&c).is_none_or(|p| *p < n),
            "{c}: {n} after {:?}",
            last.get(&c)
        );
        last.insert(c, n);
    }
    stack.stop().await;
}
