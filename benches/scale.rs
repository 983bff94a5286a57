//! What coexist's state costs as it grows, and what must stay flat: Redis bytes per conversation
//! and per number, the timeout sweep with a million pending deadlines, the paused list's first
//! page, and a worker's start-up, hand-over and crash take-over with that state in Redis.
//!
//! `cargo bench --bench scale` runs it with 1,000,000 conversations (each paused by an App reply,
//! so each has a pause deadline) and 10,000 registered numbers; `BENCH_CONVERSATIONS` and
//! `BENCH_SCALE_NUMBERS` override them. Under `cargo test` it runs a smoke round (2,000 and 100).
//! Every conversation is written by the real commit path (`Applier`, as a worker writes it), 64
//! at a time. Needs Redis on 127.0.0.1:6379 and RabbitMQ on 127.0.0.1:5672 (the workers). Redis's
//! `used_memory` is read before and after each fill, so nothing else should write to Redis
//! meanwhile.

mod common;

use common::{fill, Story, IN_FLIGHT};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coexist::adapters::redis::RedisStore;
use coexist::core::store::{StateStore, CLAIM_LEASE};
use coexist::core::time::Millis;
use tokio_util::sync::CancellationToken;

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(common::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A field of Redis's `INFO section`.
async fn info(conn: &mut redis::aio::MultiplexedConnection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

/// Redis's `used_memory`, in bytes.
async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    info(conn, "memory", "used_memory").await.parse().unwrap()
}

/// What a key of the namespace is, by the last part of its name (`pause`, `seen`, `number:settings`...).
fn kind(ns: &str, key: &str) -> String {
    let rest = key.strip_prefix(ns).unwrap_or(key).trim_start_matches(':');
    let parts: Vec<&str> = rest.split(':').collect();
    match parts.as_slice() {
        [_, "c", _, kind] => (*kind).to_owned(),
        [_, "seen", ..] => "seen (dedup mark)".to_owned(),
        [_, "n", ..] => "n (name link)".to_owned(),
        [pnid, rest @ ..] if pnid.starts_with('{') => rest.join(":"),
        other => other.join(":"),
    }
}

/// `MEMORY USAGE` of every key of `ns`, summed by [`kind`]: (bytes, keys) per kind.
async fn by_kind(
    conn: &mut redis::aio::MultiplexedConnection,
    ns: &str,
) -> BTreeMap<String, (i64, usize)> {
    let mut sums: BTreeMap<String, (i64, usize)> = BTreeMap::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys) = common::scan_page(conn, ns, cursor).await.unwrap();
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
            }
            let sizes: Vec<Option<i64>> = pipe.query_async(conn).await.unwrap();
            for (k, size) in keys.iter().zip(sizes) {
                let e = sums.entry(kind(ns, k)).or_default();
                e.0 += size.unwrap_or(0);
                e.1 += 1;
            }
        }
        if next == 0 {
            return sums;
        }
        cursor = next;
    }
}

fn ns(name: &str) -> String {
    format!(
        "bench-scale-{name}-{}-{}",
        std::process::id(),
        Millis::now().0
    )
}

/// The median and the 99th percentile of `runs` timings of `f`, in ms.
async fn timed<F, Fut, T>(runs: usize, mut f: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut t: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(f().await);
        t.push(start.elapsed());
    }
    t.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(t[t.len() / 2]),
        ms(t[(t.len() * 99 / 100).min(t.len() - 1)]),
    )
}

/// Makes the first `n` deadlines of the sorted set `key` due now (a burst: pauses set in the
/// same minute, all ending together); returns them.
async fn make_due(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    n: usize,
) -> Vec<String> {
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(n as i64 - 1)
        .query_async(conn)
        .await
        .unwrap();
    let mut pipe = redis::pipe();
    for m in &members {
        pipe.cmd("ZADD")
            .arg(key)
            .arg("XX")
            .arg(Millis::now().0 - 1_000)
            .arg(m)
            .ignore();
    }
    let _: () = pipe.query_async(conn).await.unwrap();
    members
}

fn worker_config(ns: &str, partitions: u16) -> coexist::runtime::config::Config {
    let ns = ns.to_owned();
    coexist::runtime::config::Config::load(None, move |k| match k {
        "COEXIST_NAMESPACE" => Some(ns.clone()),
        "COEXIST_PARTITIONS" => Some(partitions.to_string()),
        "COEXIST_ADMIN_LISTEN" => Some("127.0.0.1:0".into()),
        "COEXIST_AMQP_URL" => Some(common::amqp_url()),
        "COEXIST_REDIS_URL" => Some(common::redis_url()),
        _ => None,
    })
    .unwrap()
}

/// Time until `owns` holds, checked every 5 ms.
async fn until(owns: impl Fn() -> bool, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if owns() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("not within the limit".into(), |d| {
        format!("{:.2} s", d.as_secs_f64())
    })
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, full_n: usize, smoke: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if full { full_n } else { smoke })
    };
    let conversations: usize = env("BENCH_CONVERSATIONS", 1_000_000, 2_000);
    let numbers: usize = env("BENCH_SCALE_NUMBERS", 10_000, 100);
    let sample: usize = if full { 20_000 } else { 500 };
    let partitions = 16u16;
    let mut conn = redis().await;

    println!("scale benchmark: Redis {} on this machine, state written by the commit path ({IN_FLIGHT} conversations at a time)", info(&mut conn, "server", "redis_version").await);

    // 1. Bytes per conversation, per story, and per number.
    println!("  Redis bytes per conversation ({sample} conversations each; used_memory delta, then MEMORY USAGE by key):");
    for (label, story, trail) in [
        ("idle (one customer message), trail off", Story::Idle, 0),
        (
            "idle, trail on (50 entries kept; 1 written)",
            Story::Idle,
            50,
        ),
        (
            "paused by an App reply, trail on (2 entries)",
            Story::Paused,
            50,
        ),
        (
            "paused with handback (message, App reply, message), trail on",
            Story::PausedWithHandback,
            50,
        ),
    ] {
        let ns = ns("bytes");
        let before = used_memory(&mut conn).await;
        let rate = fill(&ns, sample, story, trail).await;
        let after = used_memory(&mut conn).await;
        let kinds = by_kind(&mut conn, &ns).await;
        let per = (after - before) as f64 / sample as f64;
        let parts: Vec<String> = kinds
            .iter()
            .map(|(k, (bytes, _))| format!("{k} {:.0}", *bytes as f64 / sample as f64))
            .collect();
        println!("    {label:<62} {per:>6.0} B   ({rate:.0} items/s written)");
        println!("      by key, bytes per conversation: {}", parts.join(", "));
        common::clear_keys(&mut conn, &ns).await;
    }
    {
        let ns = ns("numbers");
        let n = sample.min(numbers).max(10);
        let before = used_memory(&mut conn).await;
        common::register_numbers(&ns, n).await;
        let after = used_memory(&mut conn).await;
        let kinds = by_kind(&mut conn, &ns).await;
        let parts: Vec<String> = kinds
            .iter()
            .map(|(k, (bytes, _))| format!("{k} {:.0}", *bytes as f64 / n as f64))
            .collect();
        println!("    per registered number (runtime settings of its own, one change)   {:>6.0} B   ({n} numbers)", (after - before) as f64 / n as f64);
        println!("      by key, bytes per number: {}", parts.join(", "));
        common::clear_keys(&mut conn, &ns).await;
    }

    // 2. The namespace at size.
    let big = ns("big");
    let empty = ns("empty");
    let before = used_memory(&mut conn).await;
    let started = Instant::now();
    let rate = fill(&big, conversations, Story::Paused, 50).await;
    let filled_in = started.elapsed();
    let started = Instant::now();
    common::register_numbers(&big, numbers).await;
    let registered_in = started.elapsed();
    let after = used_memory(&mut conn).await;
    println!("  at size: {conversations} conversations paused by an App reply (trail on) and {numbers} registered numbers");
    println!("    written in {:.0} s ({rate:.0} items/s through the commit path); numbers in {:.1} s; Redis used_memory +{:.2} GiB ({:.0} B per conversation, numbers included)",
        filled_in.as_secs_f64(), registered_in.as_secs_f64(), (after - before) as f64 / (1u64 << 30) as f64, (after - before) as f64 / conversations as f64);

    // The sweep: what a worker does every second, against the big namespace and an empty one.
    let store = RedisStore::connect(&common::redis_url(), &big)
        .await
        .unwrap();
    let none = RedisStore::connect(&common::redis_url(), &empty)
        .await
        .unwrap();
    let now = Millis::now();
    let runs = if full { 1_000 } else { 50 };
    let (p50, p99) = timed(runs, || store.claim_due(now, CLAIM_LEASE, 100)).await;
    let (e50, e99) = timed(runs, || none.claim_due(now, CLAIM_LEASE, 100)).await;
    println!("    the sweep's claim of due deadlines, none due: p50 {p50:.3} ms, p99 {p99:.3} ms with {conversations} pending; p50 {e50:.3} ms, p99 {e99:.3} ms with none");
    let (p50, p99) = timed(runs, || store.paused_count(now)).await;
    println!("    the pauses in force counted (every 5 s, for /metrics): p50 {p50:.3} ms, p99 {p99:.3} ms");
    let (p50, p99) = timed(runs, || store.paused_page(now, None, 50)).await;
    println!("    the paused list's first page of 50: p50 {p50:.3} ms, p99 {p99:.3} ms");

    // A burst of deadlines due at once (pauses set in the same minute, all ending together).
    let burst = (conversations / 100).clamp(100, 10_000);
    make_due(&mut conn, &format!("{big}:deadlines"), burst).await;
    let started = Instant::now();
    let mut claimed = 0usize;
    let mut rounds = 0usize;
    loop {
        let claims = store
            .claim_due(Millis::now(), CLAIM_LEASE, 100)
            .await
            .unwrap();
        if claims.is_empty() {
            break;
        }
        rounds += 1;
        claimed += claims.len();
        for c in &claims {
            store.finish_claim(c).await.unwrap();
        }
    }
    let took = started.elapsed();
    println!("    a burst of {burst} deadlines due at once among them: claimed and finished by one sweeper in {:.2} s ({rounds} claims of up to 100, {:.0} deadlines/s; the commands' publishes not included)",
        took.as_secs_f64(), claimed as f64 / took.as_secs_f64());

    // 3. A worker's start-up and a hand-over with the namespace at size.
    let shutdown = CancellationToken::new();
    for (label, namespace) in [("empty namespace", &empty), ("at size", &big)] {
        let config = worker_config(namespace, partitions);
        let started = Instant::now();
        let first = coexist::services::worker::start(&config, &shutdown)
            .await
            .unwrap();
        let alone = until(
            || first.owned().len() == partitions as usize,
            Duration::from_secs(60),
        )
        .await;
        let start_took = started.elapsed();
        let second = coexist::services::worker::start(&config, &shutdown)
            .await
            .unwrap();
        let split = until(
            || second.owned().len() == partitions as usize / 2,
            Duration::from_secs(60),
        )
        .await;
        let leaving = Instant::now();
        first.stop().await;
        let stopped = leaving.elapsed();
        let taken = until(
            || second.owned().len() == partitions as usize,
            Duration::from_secs(60),
        )
        .await;
        println!("    worker, {label}: owns all {partitions} partitions {} after start ({:.2} s to start); a second takes half in {}; the first stops in {:.2} s and the second owns all {} later",
            secs(alone), start_took.as_secs_f64(), secs(split), stopped.as_secs_f64(), secs(taken));
        // A crash: a worker process takes half, is killed (SIGKILL), and the survivor takes its
        // partitions once it is silent for the membership's expiry.
        let admin: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap();
        let mut process = common::spawn_worker(namespace, partitions, admin);
        let shared = until(
            || second.owned().len() == partitions as usize / 2,
            Duration::from_secs(60),
        )
        .await;
        let _ = process.kill();
        let _ = process.wait();
        let taken_over = until(
            || second.owned().len() == partitions as usize,
            Duration::from_secs(60),
        )
        .await;
        println!("    worker, {label}: a worker process took half in {}; killed, its partitions consumed by the survivor {} after the kill (membership expiry {} s)",
            secs(shared), secs(taken_over), coexist::services::worker::membership::EXPIRY.as_secs());
        if namespace == &big {
            // A burst due at once, released by the running worker's sweeper: the time until every
            // one of them was sent to its partition (and its claim finished).
            let key = format!("{big}:deadlines");
            let total: usize = redis::cmd("ZCARD")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let members = make_due(&mut conn, &key, burst).await;
            let started = Instant::now();
            let mut left = members.len();
            while left > 0 && started.elapsed() < Duration::from_secs(300) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let now: usize = redis::cmd("ZCARD")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                left = now.saturating_sub(total - members.len());
            }
            println!("    a burst of {} deadlines due at once, released by the running worker's sweeper: all sent to their partitions in {:.2} s ({left} left)",
                members.len(), started.elapsed().as_secs_f64());
        }
        second.stop().await;
    }
    common::remove_namespace(&big, partitions).await;
    common::remove_namespace(&empty, partitions).await;
    if !full {
        println!("  (smoke round; `cargo bench --bench scale` for the real figures)");
    }
}
