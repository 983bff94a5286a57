//! The partition count changed online (docs/operations.md, "Changing the partition count"):
//! webhooks accepted throughout, every item decided once, in order within its conversation,
//! with a worker killed mid-change.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coexist::adapters::broker::{Layout, Topology};
use coexist::adapters::redis::partitions::{Partitions, Record};

use super::support::*;

const SECS: Duration = Duration::from_secs(1);

async fn record(ns: &str) -> Record {
    let store = coexist::adapters::redis::RedisStore::connect(&redis_url(), ns)
        .await
        .unwrap();
    Partitions::new(store.connection(), ns)
        .read()
        .await
        .unwrap()
        .expect("a layout record")
}

/// Whether a queue exists (a passive declare on a channel of its own).
async fn exists(conn: &lapin::Connection, queue: &str) -> bool {
    let ch = conn.create_channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let found = ch
        .queue_declare(queue.into(), passive, Default::default())
        .await
        .is_ok();
    let _ = ch.close(200, "looked".into()).await;
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn growing_8_partitions_to_16_under_load_with_a_worker_killed_loses_nothing_and_keeps_order()
{
    // The ingress in this process (it lays out the first 8), two workers as processes.
    let stack = Stack::start("grow", 0, &[("COEXIST_PARTITIONS", "8")]).await;
    let env = [
        ("COEXIST_NAMESPACE", stack.ns.as_str()),
        ("COEXIST_PARTITIONS", "8"),
    ];
    let a = Process::start("worker", &env).await;
    let b = Process::start("worker", &env).await;
    let before = record(&stack.ns).await;
    assert_eq!(before.layout, Layout { epoch: 0, count: 8 });
    assert_eq!(
        before.laid_out,
        Some(0),
        "the ingress laid the partitions out"
    );

    // Twelve numbers (spread over the partitions), three customers each, 40 messages each,
    // posted as Meta does (each until answered 200), paced so the load outlasts the change.
    let t = t0();
    let (numbers, customers, per) = (12, 3, 40);
    let total = numbers * customers * per;
    let posted = Arc::new(AtomicUsize::new(0));
    let conversations: Vec<Vec<String>> = (0..numbers)
        .flat_map(|n| (0..customers).map(move |c| (n, c)))
        .map(|(n, c)| (1..=per).map(|seq| message(n, c, seq, t)).collect())
        .collect();
    let poster = tokio::spawn(post_like_meta_counted(
        stack.ingress.addr,
        conversations,
        Duration::from_millis(300),
        posted.clone(),
    ));
    both_share_under_load(&a, &b, 8, &posted, 150).await;

    // The change, as an operator makes it.
    let out = cli(&stack.ns, &["partitions", "set", "16"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("changing from 8 to 16 partitions"), "{said}");
    let again = cli(&stack.ns, &["partitions", "set", "32"]);
    assert_eq!(again.status.code(), Some(1), "one change at a time");

    // Mid-change (before its old partitions are drained, perhaps while it moves the slots):
    // one worker killed without warning. Its old partitions are drained by the survivor once it
    // takes them over; a step it held the lock for is taken again after the lease.
    let at_kill = record(&stack.ns).await;
    let mut a = a;
    a.child.kill().unwrap(); // SIGKILL
    let _ = a.child.wait();
    let c = at_kill.change.as_ref().expect("a change in progress");
    assert!(
        c.sealed < 8,
        "killed before the old partitions were drained: {}",
        at_kill.describe()
    );
    eprintln!(
        "killed a worker mid-change ({}) with {} of {total} posted",
        at_kill.describe(),
        posted.load(Ordering::SeqCst)
    );
    let killed_at = std::time::Instant::now();
    // The survivor's /readyz says where the change stands (degraded: new items wait).
    eventually(
        20 * SECS,
        "/readyz to say a change is in progress",
        || async {
            let (status, body) = http(b.admin, "GET", "/readyz", &[], b"").await;
            let said =
                status == 200 && body.contains("partitions: degraded (changing from 8 to 16");
            said.then_some(()).ok_or(format!("{status} {body}"))
        },
    )
    .await;

    // The survivor finishes the change: the old queues drained and deleted, 16 consumed.
    eventually(90 * SECS, "the change to finish", || async {
        let r = record(&stack.ns).await;
        let owned = b.metric("coexist_partitions_owned").await;
        match (&r.change, owned) {
            (None, Some(16.0)) => Ok(()),
            _ => Err(format!("{}; the survivor owns {owned:?}", r.describe())),
        }
    })
    .await;
    eprintln!(
        "the change finished {:?} after the kill",
        killed_at.elapsed()
    );
    let refused = poster.await.unwrap();
    let after = record(&stack.ns).await;
    assert_eq!(
        after.layout,
        Layout {
            epoch: 1,
            count: 16
        }
    );
    assert_eq!(b.metric("coexist_partition_epoch").await, Some(1.0));
    assert_eq!(b.metric("coexist_partitions").await, Some(16.0));

    let (got, copies) = take_distinct(&stack.ns, "bot", total, 120 * SECS).await;
    eprintln!(
        "{} distinct events, {copies} copies, {refused} answers not 200 (retried)",
        got.len()
    );
    assert_once_each_in_order(&got, total);

    let t = Topology::new(&stack.ns, 8);
    let conn = coexist::adapters::broker::connect(&amqp_url(), "test-grow")
        .await
        .unwrap();
    for q in (Layout { epoch: 0, count: 8 }).queues(&t) {
        assert!(!exists(&conn, &q).await, "{q} deleted after the change");
    }
    for q in (Layout {
        epoch: 1,
        count: 16,
    })
    .queues(&t)
    {
        assert!(exists(&conn, &q).await, "{q} exists");
    }
    let _ = conn.close(200, "done".into()).await;
    let shown = cli(&stack.ns, &["partitions", "show", "--json"]);
    assert!(shown.status.success());
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(
        (v["epoch"].as_u64(), v["count"].as_u64()),
        (Some(1), Some(16))
    );
    assert!(v["change"].is_null(), "{v}");
    drop(b);
    stack.stop().await;
}

/// `coexist ARGS` against this test's namespace.
fn cli(ns: &str, args: &[&str]) -> std::process::Output {
    coexist_in(ns, &[("COEXIST_PARTITIONS", "8")], args)
}
