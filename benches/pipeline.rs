//! End-to-end throughput and latency of the pipeline on this machine, beside the raw broker
//! ceiling measured in the same run.
//!
//! `cargo bench --bench pipeline` runs it in full (one ingress and two worker processes, RabbitMQ
//! and Redis on 127.0.0.1); under `cargo test` it runs a small smoke round.
//!
//! 1. Broker ceiling: persistent messages published with confirms (256 in flight) into a quorum
//!    queue and consumed with acks, no logic.
//! 2. Maximum rate: signed single-message webhooks (2,000 customers of 64 business numbers)
//!    posted by 32 keep-alive clients, until every event has arrived on `{ns}.bot.events`; then
//!    the same with 128 and 512 clients (the curve against concurrency).
//! 3. The sustained rate: the highest posting rate held for 20 s with the inbound backlog not
//!    growing, stepping up from half the burst rate by tenths of it.
//! 4. Half the sustained rate for a while: latency from acceptance to confirmed events (the
//!    workers' histogram), and from sending the POST to receiving the event (measured here).
//! 5. Worker memory: peak and current RSS of each worker process.
//!
//! `BENCH_PARTITIONS=N` sets the partition count (default 16). `BENCH_RATE=N` skips the curve and
//! the sustained-rate search and paces step 4 at N webhooks/s: a quick comparison of CPU per
//! webhook between two builds at the same rate. `BENCH_BACKLOG_ONLY=1` runs the ceiling and the
//! backlog alone. `BENCH_NUMBERS=N` registers N numbers (the 64 of the load among them), each with
//! runtime settings of its own, before the load: the cost of a registry that size.
//! `BENCH_CURVE=1` adds the curve: the same paced round at 100, 250, 500, 1,000 and 2,000
//! webhooks/s and at the sustained rate, printed as a table of CPU per webhook of each process
//! and latencies, and charted in SVG (`BENCH_CURVE_SVG`, default `target/pipeline-curve.svg`).
//! `BENCH_CONVERSATIONS=N` writes N conversations of another number (each paused by an App
//! reply, trail on) through the commit path before the load: the cost of a Redis that full.
//! `BENCH_PROCESS_THREADS=N` runs the coexist processes with N runtime threads.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicPublishOptions, QueueDeleteOptions};
use lapin::BasicProperties;

/// Persistent messages with confirms into a quorum queue, consumed with acks: messages/s.
async fn broker_ceiling(n: usize) -> f64 {
    let conn = coexist::adapters::broker::connect(&amqp_url(), "bench-ceiling")
        .await
        .unwrap();
    let queue = format!("bench-ceiling-{}", std::process::id());
    let (pub_ch, mut consumer) = quorum_queue(&conn, &queue, 256).await;
    let payload = vec![b'x'; 600];
    let start = Instant::now();
    let consuming = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            let d = consumer.next().await.unwrap().unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
            got += 1;
        }
    });
    let mut window = Vec::with_capacity(256);
    for _ in 0..n {
        let c = pub_ch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        window.push(c);
        if window.len() == 256 {
            for c in window.drain(..) {
                assert!(c.await.unwrap().is_ack());
            }
        }
    }
    for c in window.drain(..) {
        assert!(c.await.unwrap().is_ack());
    }
    consuming.await.unwrap();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = pub_ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    rate
}

/// Posts webhooks `first..first + n` with `clients` keep-alive clients as fast as they are
/// answered, and waits for every event: the end-to-end rate and how long accepting took.
async fn burst(
    addr: std::net::SocketAddr,
    arrivals: &Arc<Mutex<HashMap<String, Instant>>>,
    clients: usize,
    first: usize,
    n: usize,
    ts: i64,
) -> (f64, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                let mut i = c;
                while i < n {
                    assert_eq!(client.post(&body(first + i, ts)).await, 200);
                    i += clients;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let accepted_in = start.elapsed();
    assert!(
        wait_for(arrivals, first + n, Duration::from_secs(120)).await,
        "every event arrives"
    );
    (n as f64 / start.elapsed().as_secs_f64(), accepted_in)
}

/// Posts at `rate` for `hold` (64 paced clients): whether the rate held (every webhook posted
/// on time, within 5 %, and the inbound backlog at the end no larger than after the first
/// second, give or take 100), and how many were posted.
async fn holds(
    addr: std::net::SocketAddr,
    system: &System,
    ch: &lapin::Channel,
    rate: f64,
    first: usize,
    ts: i64,
    hold: Duration,
) -> (bool, usize) {
    let n = (rate * hold.as_secs_f64()) as usize;
    let start = Instant::now();
    let clients = 64;
    let tasks = paced(addr, start, rate, (first, n), clients, ts, |_, _| {});
    tokio::time::sleep(Duration::from_secs(1).min(hold / 2)).await;
    let early = system.backlog(ch).await;
    for t in tasks {
        t.await.unwrap();
    }
    let late = system.backlog(ch).await;
    let on_time = start.elapsed() <= hold.mul_f64(1.05);
    (on_time && late <= early + 100, n)
}

/// The rates of `BENCH_CURVE=1` (webhooks/s), beside the sustained rate.
const CURVE: [f64; 5] = [100.0, 250.0, 500.0, 1_000.0, 2_000.0];

/// What one paced round measured.
struct Round {
    rate: f64,
    /// Webhooks posted.
    n: usize,
    /// The machine's CPU busy, % of all cores.
    cpu_busy: f64,
    /// Acceptance -> confirmed events, the workers' histogram: p50, p99 (bucket bounds).
    histogram: (String, String),
    /// POST sent -> event received here: p50, p99, max (ms).
    latency: (f64, f64, f64),
    /// Each process: name, CPU µs per webhook, context switches per webhook.
    procs: Vec<(String, f64, f64)>,
}

impl Round {
    /// CPU µs per webhook of every process but this benchmark (the load tool).
    fn system_cpu(&self) -> f64 {
        self.procs
            .iter()
            .filter(|(n, _, _)| n != LOAD_TOOL)
            .map(|(_, per, _)| per)
            .sum()
    }
    /// CPU µs per webhook of the processes whose name starts with `prefix`, summed.
    fn cpu_of(&self, prefix: &str) -> f64 {
        self.procs
            .iter()
            .filter(|(n, _, _)| n.starts_with(prefix))
            .map(|(_, per, _)| per)
            .sum()
    }
}

const LOAD_TOOL: &str = "this benchmark";

/// Each process's CPU seconds and context switches so far (its pids summed).
fn readings(procs: &[(String, Vec<u32>)]) -> (Vec<f64>, Vec<u64>) {
    let cpu = procs
        .iter()
        .map(|(_, pids)| pids.iter().map(|p| cpu_secs(*p)).sum())
        .collect();
    let switches = procs
        .iter()
        .map(|(_, pids)| pids.iter().map(|p| context_switches(*p)).sum())
        .collect();
    (cpu, switches)
}

/// Posts webhooks `next..` at `rate` for `secs` (8 paced clients) and waits for their events:
/// CPU per webhook of each process, and the latencies.
async fn paced_round(
    system: &System,
    arrivals: &Arc<Mutex<HashMap<String, Instant>>>,
    rate: f64,
    secs: u64,
    next: usize,
    ts: i64,
) -> Round {
    let before = latency_buckets(&system.admins).await;
    let cpu_before = cpu_jiffies();
    let mut procs: Vec<(String, Vec<u32>)> = vec![("ingress".into(), vec![system.ingress.id()])];
    procs.extend(
        system
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("worker {i}"), vec![w.id()])),
    );
    procs.push(("rabbitmq (beam.smp)".into(), server_pids("beam.smp")));
    procs.push(("redis-server".into(), server_pids("redis-server")));
    procs.push((LOAD_TOOL.into(), vec![std::process::id()]));
    let (proc_before, switches_before) = readings(&procs);
    let n = (rate * secs as f64) as usize;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let record = sent.clone();
    let tasks = paced(
        system.ingress_addr,
        Instant::now(),
        rate,
        (next, n),
        8,
        ts,
        move |k, _| {
            record
                .lock()
                .unwrap()
                .insert(format!("wamid.P{}", next + k), Instant::now());
        },
    );
    for t in tasks {
        t.await.unwrap();
    }
    assert!(wait_for(arrivals, next + n, Duration::from_secs(60)).await);
    let cpu_after = cpu_jiffies();
    let (proc_after, switches_after) = readings(&procs);
    let cpu_busy =
        (cpu_after.0 - cpu_before.0) as f64 / (cpu_after.1 - cpu_before.1).max(1) as f64 * 100.0;
    let after = latency_buckets(&system.admins).await;
    let mut lat: Vec<Duration> = {
        let arrivals = arrivals.lock().unwrap();
        sent.lock()
            .unwrap()
            .iter()
            .filter_map(|(id, t)| arrivals.get(id).map(|a| a.saturating_duration_since(*t)))
            .collect()
    };
    lat.sort();
    Round {
        rate,
        n,
        cpu_busy,
        histogram: (
            quantile_bucket(&before, &after, 0.5),
            quantile_bucket(&before, &after, 0.99),
        ),
        latency: (
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
        ),
        procs: procs
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let secs = proc_after[i] - proc_before[i];
                let switches = (switches_after[i] - switches_before[i]) as f64;
                (name.clone(), secs / n as f64 * 1e6, switches / n as f64)
            })
            .collect(),
    }
}

/// The curve's table: per rate, CPU per webhook of each kind of process and the latencies.
fn print_curve(rounds: &[Round], sustained: f64) {
    println!(
        "  the curve (BENCH_CURVE=1), CPU µs per webhook and POST -> event latency at each rate:"
    );
    println!("    | rate /s | machine busy | ingress | workers (sum) | RabbitMQ | Redis | all but the load tool | p50 | p99 |");
    println!("    |---|---|---|---|---|---|---|---|---|");
    for r in rounds {
        let label = if r.rate == sustained {
            format!("{:.0} (sustained)", r.rate)
        } else {
            format!("{:.0}", r.rate)
        };
        println!(
            "    | {label} | {:.0} % | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} ms | {:.1} ms |",
            r.cpu_busy, r.cpu_of("ingress"), r.cpu_of("worker"), r.cpu_of("rabbitmq"), r.cpu_of("redis"), r.system_cpu(), r.latency.0, r.latency.1
        );
    }
}

/// A line of the chart: its name, colour and value of a round.
type Series = (&'static str, plotters::style::RGBColor, fn(&Round) -> f64);

/// An SVG chart of CPU per webhook against rate, one line per kind of process.
fn chart_curve(rounds: &[Round], path: &str) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_rate = rounds.iter().map(|r| r.rate).fold(0.0, f64::max) * 1.05;
    let max_cpu = rounds.iter().map(|r| r.system_cpu()).fold(0.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("CPU per webhook against rate", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_rate, 0.0..max_cpu)?;
    chart
        .configure_mesh()
        .x_desc("webhooks/s")
        .y_desc("CPU µs per webhook")
        .draw()?;
    let series: [Series; 5] = [
        ("all but the load tool", BLACK, |r| r.system_cpu()),
        ("RabbitMQ", RED, |r| r.cpu_of("rabbitmq")),
        ("workers", BLUE, |r| r.cpu_of("worker")),
        ("ingress", GREEN, |r| r.cpu_of("ingress")),
        ("Redis", MAGENTA, |r| r.cpu_of("redis")),
    ];
    for (name, color, value) in series {
        let mut points: Vec<(f64, f64)> = rounds.iter().map(|r| (r.rate, value(r))).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (ceiling_n, max_n, half_secs) = if full {
        (30_000, 20_000, 20)
    } else {
        (500, 200, 2)
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let ceiling = broker_ceiling(ceiling_n).await;

        // BENCH_PARTITIONS sets the partition count (default 16, as in production).
        let partitions: u16 = std::env::var("BENCH_PARTITIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
        let system = System::start("pipeline", partitions, 2).await;
        let registered: usize = std::env::var("BENCH_NUMBERS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        if registered > 0 {
            register_numbers(&system.ns, registered).await;
            // Every worker follows the registry within a second.
            tokio::time::sleep(Duration::from_secs(3)).await;
            println!("  registry: {registered} numbers with runtime settings (BENCH_NUMBERS)");
        }
        let prefilled: usize = std::env::var("BENCH_CONVERSATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        if prefilled > 0 {
            let started = Instant::now();
            let rate = fill(&system.ns, prefilled, Story::Paused, 50).await;
            println!("  state: {prefilled} conversations paused by an App reply written first (BENCH_CONVERSATIONS; {:.0} s, {rate:.0} items/s)", started.elapsed().as_secs_f64());
        }
        let (ns, ingress_addr) = (system.ns.clone(), system.ingress_addr);
        let arrivals = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(collect_events(ns.clone(), arrivals.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ts = coexist::core::time::Millis::now().0 / 1000;

        // BENCH_BACKLOG_ONLY=1: the ceiling and the backlog alone.
        let backlog_only = std::env::var("BENCH_BACKLOG_ONLY").is_ok_and(|v| v == "1");
        let first = if backlog_only {
            println!("pipeline benchmark (BENCH_BACKLOG_ONLY): one ingress and two worker processes, {partitions} partitions");
            println!("  broker ceiling (persistent, confirms, quorum queue, consumed with acks) {:>9.0} msg/s   ({ceiling_n} messages)", ceiling);
            0
        } else {
            // Maximum rate, 32 clients; then the curve at 128 and 512 (Meta sends many at once).
            let clients = 32;
            let (end_to_end, accepted_in) = burst(ingress_addr, &arrivals, clients, 0, max_n, ts).await;
            let mut next = max_n;
            let mut curve = Vec::new();
            // BENCH_RATE=N skips the curve and the sustained-rate search and paces at N/s: a quick
            // comparison of CPU per webhook between two builds.
            let fixed: Option<f64> = std::env::var("BENCH_RATE").ok().and_then(|v| v.parse().ok());
            let curve_mode = std::env::var("BENCH_CURVE").is_ok_and(|v| v == "1");
            for c in [128, 512].into_iter().filter(|_| fixed.is_none()) {
                let (rate, _) = burst(ingress_addr, &arrivals, c, next, max_n, ts).await;
                next += max_n;
                curve.push((c, rate));
            }

            // The sustained rate: the highest posting rate held for `hold` with the inbound
            // backlog not growing, stepping up from half the burst rate by a tenth of it.
            let conn = coexist::adapters::broker::connect(&amqp_url(), "bench-backlog").await.unwrap();
            let ch = conn.create_channel().await.unwrap();
            let hold = if full { Duration::from_secs(20) } else { Duration::from_secs(2) };
            let mut sustained = 0.0;
            let mut step = end_to_end * 0.5;
            while fixed.is_none() && step <= end_to_end * 1.5 {
                let (held, posted) = holds(ingress_addr, &system, &ch, step, next, ts, hold).await;
                next += posted;
                assert!(wait_for(&arrivals, next, Duration::from_secs(120)).await, "every event arrives");
                if !held {
                    break;
                }
                sustained = step;
                step += end_to_end * 0.1;
            }
            let _ = conn.close(200, "done".into()).await;

            // Half the sustained rate, paced.
            let rate = match fixed {
                Some(r) => r,
                None if sustained > 0.0 => sustained / 2.0,
                None => end_to_end / 2.0,
            };
            let round = paced_round(&system, &arrivals, rate, half_secs, next, ts).await;
            let n_half = round.n;
            let mem: Vec<(u64, u64)> = system.workers.iter().map(|w| rss_kib(w.id())).collect();

            println!("pipeline benchmark: one ingress and two worker processes, {partitions} partitions, RabbitMQ and Redis on this machine{}", if otlp_endpoint().is_some() { ", spans exported over OTLP (BENCH_OTLP=1)" } else { "" });
            println!("  broker ceiling (persistent, confirms, quorum queue, consumed with acks) {:>9.0} msg/s   ({ceiling_n} messages)", ceiling);
            println!("  end to end at maximum rate ({clients} keep-alive clients)                {:>9.0} webhooks/s ({max_n} webhooks, all accepted in {:.1} s)", end_to_end, accepted_in.as_secs_f64());
            println!("  end to end / ceiling                                                 {:>8.0} %    (goal: at least 40 %)", end_to_end / ceiling * 100.0);
            for (c, r) in &curve {
                println!("  end to end with {c} keep-alive clients                                {:>9.0} webhooks/s = {:.0} % of the ceiling", r, r / ceiling * 100.0);
            }
            if fixed.is_none() {
                println!("  sustained rate (held {hold:?} with the inbound backlog not growing)        {:>9.0} webhooks/s = {:.0} % of the ceiling (burst: {:.0})", sustained, sustained / ceiling * 100.0, end_to_end);
            } else {
                println!("  sustained rate: not searched (BENCH_RATE paces at a fixed rate)");
            }
            let pacing = if fixed.is_some() { "at BENCH_RATE" } else { "at half the sustained rate" };
            println!("  {pacing} ({rate:.0}/s for {half_secs} s, {n_half} webhooks; machine CPU busy {:.0} % of {} cores):", round.cpu_busy, std::thread::available_parallelism().map_or(0, |n| n.get()));
            println!("    acceptance -> confirmed events, workers' histogram: p50 {}, p99 {}   (goal: p99 at most 25 ms)", round.histogram.0, round.histogram.1);
            println!("    POST sent -> event received here: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", round.latency.0, round.latency.1, round.latency.2);
            for (name, per, switches) in &round.procs {
                println!("    CPU of {name:<22} {:>6.1} s  ({per:.0} µs per webhook)", per * n_half as f64 / 1e6);
                println!("      context switches of {name:<22} {switches:.1} per webhook");
            }
            let mut next = next + n_half;
            // BENCH_CURVE=1: the same at each rate of the curve, and at the sustained rate.
            if curve_mode {
                let mut rates: Vec<f64> = CURVE.to_vec();
                if sustained > 0.0 {
                    rates.push(sustained);
                }
                let mut rounds = Vec::new();
                for r in rates {
                    let round = paced_round(&system, &arrivals, r, half_secs, next, ts).await;
                    next += round.n;
                    rounds.push(round);
                }
                print_curve(&rounds, sustained);
                let chart = std::env::var("BENCH_CURVE_SVG").unwrap_or_else(|_| "target/pipeline-curve.svg".into());
                match chart_curve(&rounds, &chart) {
                    Ok(()) => println!("  chart of CPU per webhook against rate: {chart}"),
                    Err(e) => println!("  chart not written ({chart}): {e}"),
                }
            }
            for (i, (hwm, rss)) in mem.iter().enumerate() {
                println!("  worker {i} memory: peak RSS {:.1} MiB, now {:.1} MiB   (goal: at most 64 MiB)", *hwm as f64 / 1024.0, *rss as f64 / 1024.0);
            }
            next
        };
        // A backlog: accepted with the workers stopped, then drained by two workers.
        let mut system = system;
        let backlog_n = if full { 100_000 } else { 300 };
        system.stop_workers();
        let accept_start = Instant::now();
        let tasks = paced(ingress_addr, accept_start, 1e9, (first, backlog_n), 64, ts, |_, _| {});
        for t in tasks {
            t.await.unwrap();
        }
        let accepted_in = accept_start.elapsed();
        let drain_start = Instant::now();
        let drain_cpu = cpu_jiffies();
        let rabbit_before: f64 = server_pids("beam.smp").iter().map(|p| cpu_secs(*p)).sum();
        let redis_before: f64 = server_pids("redis-server").iter().map(|p| cpu_secs(*p)).sum();
        system.start_workers();
        let peaks = Arc::new(Mutex::new(vec![0u64; system.workers.len()]));
        let watch = {
            let (pids, peaks) = (system.workers.iter().map(|w| w.id()).collect::<Vec<_>>(), peaks.clone());
            tokio::spawn(async move {
                loop {
                    for (i, pid) in pids.iter().enumerate() {
                        let (hwm, _) = rss_kib(*pid);
                        let mut p = peaks.lock().unwrap();
                        p[i] = p[i].max(hwm);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        assert!(wait_for(&arrivals, first + backlog_n, Duration::from_secs(600)).await, "the backlog drains");
        let drained_in = drain_start.elapsed();
        let drain_cpu_after = cpu_jiffies();
        let workers_cpu: Vec<f64> = system.workers.iter().map(|w| cpu_secs(w.id())).collect();
        let rabbit_cpu = server_pids("beam.smp").iter().map(|p| cpu_secs(*p)).sum::<f64>() - rabbit_before;
        let redis_cpu = server_pids("redis-server").iter().map(|p| cpu_secs(*p)).sum::<f64>() - redis_before;
        watch.abort();
        let drain_rate = backlog_n as f64 / drained_in.as_secs_f64();
        println!("  backlog: {backlog_n} webhooks accepted in {:.1} s with the workers stopped, drained by two workers in {:.1} s", accepted_in.as_secs_f64(), drained_in.as_secs_f64());
        // The ceiling moves by a third between runs minutes apart: measured again right after
        // the drain, and the drain set against both.
        let ceiling_after = broker_ceiling(ceiling_n).await;
        println!("    drain rate {drain_rate:.0} webhooks/s = {:.0} % of the ceiling measured first, {:.0} % of the ceiling measured right after ({ceiling_after:.0} msg/s)   (goal: at least 40 %)", drain_rate / ceiling * 100.0, drain_rate / ceiling_after * 100.0);
        let first_event = arrivals.lock().unwrap().values().filter(|t| **t > drain_start).min().map(|t| t.duration_since(drain_start));
        println!("    first event {:.2} s after the workers were started", first_event.map_or(f64::NAN, |d| d.as_secs_f64()));
        let busy = (drain_cpu_after.0 - drain_cpu.0) as f64 / (drain_cpu_after.1 - drain_cpu.1).max(1) as f64 * 100.0;
        let per = |secs: f64| secs / backlog_n as f64 * 1e6;
        let workers: Vec<String> = workers_cpu.iter().map(|s| format!("{:.0}", per(*s))).collect();
        println!("    machine CPU busy {busy:.0} %; CPU per webhook: workers {} µs, RabbitMQ {:.0} µs, Redis {:.0} µs", workers.join(" + "), per(rabbit_cpu), per(redis_cpu));
        for (i, kib) in peaks.lock().unwrap().iter().enumerate() {
            println!("    worker {i} peak RSS while draining {:.1} MiB   (goal: under 128 MiB)", *kib as f64 / 1024.0);
        }
        if !full {
            println!("  (smoke round; `cargo bench --bench pipeline` for the real figures)");
        }

        system.stop().await;
    });
}
