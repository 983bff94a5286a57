//! Soak: a steady load for ten minutes through one ingress and two worker processes, to show
//! whether anything grows that should not (memory, descriptors, latency, backlog).
//!
//! `cargo bench --bench soak` runs it in full: first the maximum end-to-end rate for 15 s (32
//! keep-alive clients), then a third of it, paced, for `BENCH_SOAK_MINUTES` (default 10)
//! minutes (`BENCH_SOAK_RATE` fixes the rate instead). Every minute it prints each worker's RSS
//! and open descriptors, the ingress's, p50/p99 from sending a POST to receiving its event, and
//! the inbound backlog. Under `cargo test` it runs a smoke round of two 3-second windows.
//! Goals (printed, never asserted): RSS and descriptors within 10 % of minute 2, p99 flat,
//! backlog zero.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Sent instants of the POSTs not yet matched with their event, by message id, with the window
/// they were sent in.
type Sent = Arc<Mutex<HashMap<String, (usize, Instant)>>>;

/// One window's reading: workers' RSS (MiB, summed), descriptors (summed), p99 (ms), backlog.
type Row = (f64, usize, f64, u32);

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    let (windows, window) = if full {
        (
            var("BENCH_SOAK_MINUTES").unwrap_or(10.0) as usize,
            Duration::from_secs(60),
        )
    } else {
        (2, Duration::from_secs(3))
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let system = System::start("soak", 16, 2).await;
        let arrivals = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(collect_events(system.ns.clone(), arrivals.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ts = coexist::core::time::Millis::now().0 / 1000;
        let addr = system.ingress_addr;

        // The machine's rate: 32 clients as fast as they are answered, for 15 s (1 s in smoke).
        let burst = if full { Duration::from_secs(15) } else { Duration::from_secs(1) };
        let posted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let posted = posted.clone();
                tokio::spawn(async move {
                    let mut client = Client::connect(addr).await;
                    while start.elapsed() < burst {
                        let i = posted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        assert_eq!(client.post(&body(i, ts)).await, 200);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let n_burst = posted.load(std::sync::atomic::Ordering::Relaxed);
        assert!(wait_for(&arrivals, n_burst, Duration::from_secs(120)).await, "every event arrives");
        let max_rate = n_burst as f64 / start.elapsed().as_secs_f64();
        let rate = var("BENCH_SOAK_RATE").unwrap_or(if full { max_rate / 3.0 } else { 50.0 });
        arrivals.lock().unwrap().clear();

        println!("soak benchmark: one ingress and two worker processes, 16 partitions, RabbitMQ and Redis on this machine");
        println!("  maximum end-to-end rate {max_rate:.0} webhooks/s ({n_burst} webhooks); soak at {rate:.0}/s for {windows} windows of {window:?}");
        println!("  {:>6} {:>8} {:>22} {:>20} {:>9} {:>9} {:>9} {:>8}", "window", "posted", "worker RSS MiB", "descriptors w0/w1/in", "p50 ms", "p99 ms", "missing", "backlog");

        // The load: 8 clients, each posting every 8th webhook at its due time.
        let sent: Sent = Arc::default();
        let soak_start = Instant::now();
        let total = (rate * (window.as_secs_f64() * windows as f64)) as usize;
        let clients = 8;
        let record = sent.clone();
        // The clients are held open until the last window is read.
        let load = paced(addr, soak_start, rate, (n_burst, total), clients, ts, move |k, due| {
            let w = (due - soak_start).as_secs_f64() / window.as_secs_f64();
            record.lock().unwrap().insert(format!("wamid.P{}", n_burst + k), (w as usize, Instant::now()));
        });

        let conn = coexist::adapters::broker::connect(&amqp_url(), "bench-soak").await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let pids: Vec<u32> = system.workers.iter().map(|w| w.id()).collect();
        let mut rows: Vec<Row> = Vec::new();
        for w in 0..windows {
            // Read a window 5 s after it ends (2 s in smoke), so its last events have arrived.
            let grace = if full { Duration::from_secs(5) } else { Duration::from_secs(2) };
            tokio::time::sleep_until((soak_start + window * (w as u32 + 1) + grace).into()).await;
            let backlog = system.backlog(&ch).await;
            let (mut lat, missing, posted) = {
                let mut sent = sent.lock().unwrap();
                let mut arrivals = arrivals.lock().unwrap();
                let mine: Vec<String> = sent.iter().filter(|(_, (win, _))| *win == w).map(|(id, _)| id.clone()).collect();
                let posted = mine.len();
                let mut lat = Vec::with_capacity(posted);
                let mut missing = 0;
                for id in mine {
                    match arrivals.remove(&id) {
                        Some(at) => {
                            let (_, sent_at) = sent.remove(&id).unwrap();
                            lat.push(at.saturating_duration_since(sent_at));
                        }
                        None => missing += 1,
                    }
                }
                (lat, missing, posted)
            };
            lat.sort();
            let rss: Vec<f64> = pids.iter().map(|p| rss_kib(*p).1 as f64 / 1024.0).collect();
            let fds: Vec<usize> = pids.iter().chain(std::iter::once(&system.ingress.id())).map(|p| open_fds(*p)).collect();
            let p99 = percentile(&lat, 0.99);
            println!(
                "  {:>6} {:>8} {:>22} {:>20} {:>9.1} {:>9.1} {:>9} {:>8}",
                w + 1,
                posted,
                rss.iter().map(|r| format!("{r:.1}")).collect::<Vec<_>>().join(" / "),
                fds.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(" / "),
                percentile(&lat, 0.5),
                p99,
                missing,
                backlog
            );
            rows.push((rss.iter().sum(), fds.iter().sum(), p99, backlog));
        }
        let clients: Vec<Client> = futures_util::future::join_all(load).await.into_iter().map(Result::unwrap).collect();
        drop(clients);
        // Flatness against window 2 (the first after warm-up).
        if let Some(base) = rows.get(1).copied() {
            let drift = |f: &dyn Fn(&Row) -> f64| {
                rows.iter().skip(1).map(|r| (f(r) / f(&base).max(1e-9) - 1.0) * 100.0).fold(0.0f64, |m, d| if d.abs() > m.abs() { d } else { m })
            };
            println!("  largest drift from window 2: workers' RSS {:+.1} %, descriptors {:+.1} %, p99 {:+.1} %   (goal: RSS and descriptors within 10 %, p99 flat)",
                drift(&|r| r.0), drift(&|r| r.1 as f64), drift(&|r| r.2));
            println!("  largest backlog {} messages   (goal: zero)", rows.iter().map(|r| r.3).max().unwrap_or(0));
        }
        if !full {
            println!("  (smoke round; `cargo bench --bench soak` for the real figures)");
        }
        let _ = conn.close(200, "done".into()).await;
        system.stop().await;
    });
}
