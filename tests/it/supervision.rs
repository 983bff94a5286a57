//! A process's tasks are supervised (a task that dies takes the process down or turns it
//! unready), and workers share partitions by Redis's clock, not their own.

use std::time::Duration;

use coexist::core::time::Clock;
use tokio_util::sync::CancellationToken;

use crate::support::*;

const SECS: Duration = Duration::from_secs(1);

/// A worker whose partition manager panics exits non-zero, naming the task, instead of running
/// on with `/readyz` green and nothing consumed.
#[tokio::test]
async fn a_worker_whose_task_panics_exits_non_zero_naming_it() {
    let ns = unique_ns("fault");
    let (_redis, _amqp) = (NsGuard(ns.clone()), AmqpNsGuard(ns.clone()));
    for task in ["partition manager", "timeout sweeper"] {
        let mut w = Process::start(
            "worker",
            &[("COEXIST_NAMESPACE", ns.as_str()), ("COEXIST_FAULT", task)],
        )
        .await;
        let code = exit_within(&mut w.child, std::time::Instant::now(), 30 * SECS).await;
        assert_eq!(code, Some(1), "{task}: non-zero exit\n{}", w.log());
        let log = w.log();
        assert!(
            log.contains(&format!("the {task} task panicked")),
            "{task}: the log names the task:\n{log}"
        );
    }
}

/// Without the fault the same worker runs until told to stop, and stops cleanly (exit 0).
#[tokio::test]
async fn a_worker_without_a_fault_runs_until_stopped() {
    let ns = unique_ns("nofault");
    let (_redis, _amqp) = (NsGuard(ns.clone()), AmqpNsGuard(ns.clone()));
    let mut w = Process::start("worker", &[("COEXIST_NAMESPACE", ns.as_str())]).await;
    eventually(READY_WITHIN, "the worker to be ready", || async {
        let (status, body) = http(w.admin, "GET", "/readyz", &[], b"").await;
        (status == 200).then_some(()).ok_or(body)
    })
    .await;
    tokio::time::sleep(3 * SECS).await;
    assert!(w.child.try_wait().unwrap().is_none(), "still running");
    w.terminate();
    let code = exit_within(&mut w.child, std::time::Instant::now(), 15 * SECS).await;
    assert_eq!(code, Some(0), "{}", w.log());
}

/// A worker that owns a partition it cannot consume (its queue was deleted under it) answers
/// `/readyz` 503, naming the partitions; when it consumes them all again it is ready again.
#[tokio::test]
async fn readyz_is_503_while_an_owned_partition_is_not_consumed() {
    let stack = Stack::start("unconsumed", 1, &[]).await;
    let admin = stack.workers[0].admin_addr;
    let ready = || async {
        let (status, body) = http(admin, "GET", "/readyz", &[], b"").await;
        (status, body)
    };
    eventually(READY_WITHIN, "the worker to be ready", || async {
        let (status, body) = ready().await;
        (status == 200).then_some(()).ok_or(body)
    })
    .await;
    let topology = coexist::adapters::broker::Topology::new(&stack.ns, stack.config.partitions);
    let conn = coexist::adapters::broker::connect(&amqp_url(), "test-delete")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let queue = topology.first_layout().queue(&topology, 2);
    ch.queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    eventually(20 * SECS, "/readyz to turn 503", || async {
        let (status, body) = ready().await;
        (status == 503 && body.contains("partitions: not ready"))
            .then_some(())
            .ok_or(format!("{status} {body}"))
    })
    .await;
    // Three seconds later it still says so: the partition is owned and not consumed.
    tokio::time::sleep(3 * SECS).await;
    assert_eq!(ready().await.0, 503);
    assert!(stack.workers[0].owned().contains(&2), "it still owns it");
    // The queue declared again (`coexist topology`): consumed again, ready again.
    let out = coexist_in(&stack.ns, &[("COEXIST_PARTITIONS", "4")], &["topology"]);
    assert!(out.status.success(), "{out:?}");
    eventually(20 * SECS, "/readyz to be 200 again", || async {
        let (status, body) = ready().await;
        (status == 200).then_some(()).ok_or(body)
    })
    .await;
    let _ = conn.close(200, "done".into()).await;
    stack.stop().await;
}

/// Two workers, one whose clock runs 30 s ahead: membership is scored with Redis's clock, so
/// neither takes the other for dead, and the split of the partitions holds for a minute.
#[tokio::test]
async fn a_worker_whose_clock_is_ahead_keeps_a_stable_split() {
    let stack = Stack::start("skew", 0, &[]).await;
    let shutdown = CancellationToken::new();
    let honest = coexist::services::worker::start(&stack.config, &shutdown)
        .await
        .unwrap();
    let options = coexist::services::worker::Options {
        clock: Clock::skewed(30_000),
        ..Default::default()
    };
    let ahead = coexist::services::worker::start_with(&stack.config, &shutdown, options)
        .await
        .unwrap();
    let partitions = stack.config.partitions as usize;
    eventually(READY_WITHIN, "the two to share the partitions", || async {
        let (a, b) = (honest.owned(), ahead.owned());
        (a.len() + b.len() == partitions && !a.is_empty() && !b.is_empty())
            .then_some(())
            .ok_or(format!("{a:?} {b:?}"))
    })
    .await;
    let split = (honest.owned(), ahead.owned());
    for second in 0..60 {
        tokio::time::sleep(SECS).await;
        assert_eq!(
            (honest.owned(), ahead.owned()),
            split,
            "the split moved after {second} s"
        );
    }
    shutdown.cancel();
    honest.stopped().await.unwrap();
    ahead.stopped().await.unwrap();
    stack.stop().await;
}
