//! What reading the conversations with a human costs as they grow: a page of the list from the
//! store (the first, and one deep in), the console's page and the admin API's over HTTP, and `coexist conversation
//! list` (every one, a page at a time), with 100,000 pauses in force.
//!
//! `cargo bench --bench lists` runs it with 100,000 (COEXIST_BENCH_PAUSED overrides;
//! COEXIST_BENCH_BIN names the `coexist` binary to time, else target/release's); under
//! `cargo test` it runs a smoke round with 2,000. Needs Redis on 127.0.0.1:6379 and RabbitMQ on
//! 127.0.0.1:5672 (the console's process connects to both).

mod common;

use std::time::{Duration, Instant};

use coexist::adapters::redis::{PageCursor, RedisStore};
use coexist::core::time::Millis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PNID: &str = "410000000000088";

/// Writes `n` pauses in force into `ns`, as commits leave them (pause key + deadline).
async fn seed(conn: &mut redis::aio::MultiplexedConnection, ns: &str, n: usize, now: i64) {
    for start in (0..n).step_by(2000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 2000).min(n) {
            let c = 5_215_550_000_000u64 + i as u64;
            let until = now + 3_600_000 + i as i64 * 10;
            let trigger = format!("m:wamid.L{i}");
            let pause = format!(
                r#"{{"until":{until},"since":{},"trigger":"{trigger}","by":{{"kind":"business_app","name":null}}}}"#,
                until - 3_600_000
            );
            pipe.cmd("SET")
                .arg(format!("{ns}:{{{PNID}}}:c:{c}:pause"))
                .arg(pause)
                .arg("PXAT")
                .arg(until)
                .ignore();
            pipe.cmd("ZADD")
                .arg(format!("{ns}:deadlines"))
                .arg(until)
                .arg(format!("{PNID}:{c}|{trigger}"))
                .ignore();
        }
        let _: () = pipe.query_async(conn).await.unwrap();
    }
}

/// The median and the worst of `runs` timings of `f`, in ms.
async fn timed<F, Fut>(runs: usize, mut f: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut t: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f().await;
        t.push(start.elapsed());
    }
    t.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(t[t.len() / 2]), ms(t[t.len() - 1]))
}

/// One HTTP/1.1 request on a connection of its own: the status line and the body's length.
async fn http(addr: std::net::SocketAddr, request: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.lines().next().unwrap_or("").to_owned();
    (status, text)
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("COEXIST_BENCH_PAUSED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100_000 } else { 2_000 });
    let runs = if full { 20 } else { 3 };
    let ns = format!("bench-lists-{}", std::process::id());
    let mut conn = redis::Client::open(common::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let now = Millis::now().0;
    let started = Instant::now();
    seed(&mut conn, &ns, n, now).await;
    println!(
        "lists: {n} pauses in force written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let store = RedisStore::connect(&common::redis_url(), &ns)
        .await
        .unwrap();
    let at = Millis(now);

    // A page from the store: the first, and the last one (its cursor found once, by paging).
    let (first_p50, first_max) = timed(runs, || async {
        let (page, _) = store.paused_page(at, None, 50).await.unwrap();
        assert_eq!(page.len(), 50);
    })
    .await;
    let mut after: Option<PageCursor> = None;
    let mut pages = 0;
    let walk = Instant::now();
    loop {
        let (_, next) = store.paused_page(at, after, 1000).await.unwrap();
        pages += 1;
        match next {
            Some(c) if pages * 1000 < n - 50 => after = Some(c),
            _ => break,
        }
    }
    let walked = walk.elapsed();
    let (deep_p50, deep_max) = timed(runs, || async {
        let (page, _) = store.paused_page(at, after, 50).await.unwrap();
        assert!(!page.is_empty());
    })
    .await;
    println!(
        "lists: store page of 50: first p50 {first_p50:.2} ms (max {first_max:.2}), deep (past {} pauses) p50 {deep_p50:.2} ms (max {deep_max:.2}); all {n} in pages of 1000: {:.0} ms",
        (pages - 1) * 1000,
        walked.as_secs_f64() * 1000.0
    );

    // The console's first page over HTTP, signed in.
    let port = common::free_port();
    let vars: std::collections::HashMap<&str, String> = [
        ("COEXIST_NAMESPACE", ns.clone()),
        ("COEXIST_REDIS_URL", common::redis_url()),
        ("COEXIST_AMQP_URL", common::amqp_url()),
        ("COEXIST_CONSOLE_LISTEN", format!("127.0.0.1:{port}")),
        ("COEXIST_CONSOLE_TOKEN", "bench:bench-console-token".into()),
        ("COEXIST_API_TOKEN", "bench:bench-api-token".into()),
    ]
    .into_iter()
    .collect();
    let config = coexist::runtime::config::Config::load(None, |k| vars.get(k).cloned()).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let console = coexist::services::console::start(&config, &shutdown)
        .await
        .unwrap();
    let addr = console.addr;
    let form = "token=bench-console-token";
    let login = format!(
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    let (_, answer) = http(addr, &login).await;
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("signed in")
        .to_owned();
    let get =
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n");
    let (_, page) = http(addr, &get).await;
    let bytes = page.len();
    let (console_p50, console_max) = timed(runs, || async {
        let (status, _) = http(addr, &get).await;
        assert!(status.contains("200"), "{status}");
    })
    .await;
    println!(
        "lists: console page (50 rows, {bytes} bytes): p50 {console_p50:.2} ms (max {console_max:.2})"
    );

    // The admin API's first page of 100 (its default), and one deep in, by its own cursor.
    let api = |query: String| {
        format!("GET /api/v1/conversations{query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer bench-api-token\r\nConnection: close\r\n\r\n")
    };
    let (status, body) = http(addr, &api(String::new())).await;
    assert!(status.contains("200"), "{status}");
    let (api_p50, api_max) = timed(runs, || async {
        let (status, _) = http(addr, &api(String::new())).await;
        assert!(status.contains("200"), "{status}");
    })
    .await;
    // Walk 1000 at a time to past most of them, then time a page of 100 there.
    let next_of = |answer: &str| -> Option<String> {
        let json = answer.split("\r\n\r\n").nth(1)?;
        let json = json.trim_start_matches(|c: char| c.is_ascii_hexdigit() || c.is_whitespace());
        let v: serde_json::Value = serde_json::Deserializer::from_str(json)
            .into_iter()
            .next()?
            .ok()?;
        v["next"].as_str().map(str::to_owned)
    };
    let mut cursor = next_of(&body);
    let mut seen = 100;
    while seen + 1000 < n {
        let Some(c) = cursor.take() else { break };
        let (_, answer) = http(addr, &api(format!("?limit=1000&after={c}"))).await;
        cursor = next_of(&answer);
        seen += 1000;
    }
    let deep = cursor.map(|c| format!("?after={c}")).unwrap_or_default();
    let (api_deep_p50, api_deep_max) = timed(runs, || async {
        let (status, _) = http(addr, &api(deep.clone())).await;
        assert!(status.contains("200"), "{status}");
    })
    .await;
    println!(
        "lists: admin API page of 100: first p50 {api_p50:.2} ms (max {api_max:.2}), deep (past {seen}) p50 {api_deep_p50:.2} ms (max {api_deep_max:.2})"
    );
    console.stop().await;

    // `coexist conversation list`, every one, as a user runs it (the release build when
    // there is one, else the debug build).
    let bin = std::env::var("COEXIST_BENCH_BIN")
        .ok()
        .map(std::path::PathBuf::from)
        .or_else(|| {
            ["release", "debug"]
                .iter()
                .map(|p| {
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join(format!("target/{p}/coexist"))
                })
                .find(|p| p.exists())
        });
    match bin {
        None => {
            println!("lists: conversation list: no coexist binary built (cargo build --release)")
        }
        Some(bin) => {
            let start = Instant::now();
            let out = std::process::Command::new(&bin)
                .args(["conversation", "list"])
                .env("COEXIST_NAMESPACE", &ns)
                .env("COEXIST_REDIS_URL", common::redis_url())
                .output()
                .unwrap();
            let took = start.elapsed();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let lines = String::from_utf8_lossy(&out.stdout).lines().count() - 1;
            assert_eq!(lines, n);
            println!(
                "lists: `{} conversation list` printed {lines} in {:.2} s",
                bin.display(),
                took.as_secs_f64()
            );
        }
    }
    common::clear_keys(&mut conn, &ns).await;
    let _ = shutdown;
}
