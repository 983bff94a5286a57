//! Consuming one partition: one lane per business number. A number's deliveries are handled one
//! after the other, in the order the partition delivered them (so a customer's items stay in
//! order whatever name each carries); different numbers run side by side. A finished delivery is
//! acknowledged by the worker's acking task ([`super::acks`]), flushed before a seal is acted on
//! and before the channel closes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use tokio_util::sync::CancellationToken;

use super::handle::Work;
use super::Shared;
use crate::adapters::broker::{Seal, SEAL_TYPE};

/// Deliveries a partition consumer holds ahead of the ones it works on.
const PREFETCH: u16 = 16;
/// How long a consumer waits for the broker to answer a cancel or a close.
const BROKER_CALL: std::time::Duration = std::time::Duration::from_secs(2);

/// The deliveries waiting behind the one each lane works on, by business number, each read once.
type Waiting = Arc<Mutex<HashMap<String, VecDeque<(Delivery, Work)>>>>;

/// Consumes one partition until `stop` (the partition handed over, or the worker stopping), or
/// a broker failure.
pub(super) async fn consume(
    shared: Arc<Shared>,
    partition: u16,
    queue: String,
    conn: Arc<Connection>,
    stop: CancellationToken,
    consuming: Arc<AtomicBool>,
) {
    let result = consume_inner(&shared, partition, &queue, &conn, &stop, &consuming).await;
    consuming.store(false, Ordering::SeqCst);
    if let Err(e) = result {
        tracing::warn!(partition, error = %e, "partition consumer failed");
    }
}

async fn consume_inner(
    shared: &Arc<Shared>,
    partition: u16,
    queue: &str,
    conn: &Connection,
    stop: &CancellationToken,
    consuming: &AtomicBool,
) -> Result<(), lapin::Error> {
    let tag = format!("{}-{queue}", shared.id);
    // On a connection that died under it the broker's answers never come: bounded, and given
    // up at once when the partition is stopped (it restarts on the link's next connection).
    let setup = async {
        let ch = conn.create_channel().await?;
        ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
        let consumer = ch
            .basic_consume(
                queue.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((ch, consumer))
    };
    let (ch, mut consumer) = tokio::select! {
        set = tokio::time::timeout(BROKER_CALL, setup) => match set {
            Ok(set) => set?,
            Err(_) => {
                tracing::warn!(partition, "the broker did not answer setting up a consumer; retrying");
                return Ok(());
            }
        },
        () = stop.cancelled() => return Ok(()),
    };
    tracing::info!(partition, "consuming");
    consuming.store(true, Ordering::SeqCst);
    let waiting: Waiting = Arc::default();
    let acking = Arc::new(super::acks::Partition {
        partition,
        ..Default::default()
    });
    let halted = &acking.halted;
    let mut running = tokio::task::JoinSet::new();
    let result = loop {
        let next = tokio::select! {
            d = consumer.next() => d,
            _ = stop.cancelled() => break Ok(()),
            // An ack failed: give the partition back (its deliveries come again).
            () = acking.failed.notified() => break Ok(()),
            Some(joined) = running.join_next(), if !running.is_empty() => match joined {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => break Err(e),
                Err(e) => {
                    // A lane that panicked would hold its number forever: give the whole
                    // partition back (its deliveries return to the queue) and let it restart.
                    tracing::error!(partition, error = %e, "a conversation lane failed; restarting the partition");
                    break Ok(());
                }
            },
        };
        if halted.load(Ordering::SeqCst) {
            break Ok(());
        }
        match next {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(delivery)) => {
                let kind = delivery.properties.kind().as_ref().map(|k| k.as_str());
                if kind == Some(SEAL_TYPE) {
                    // The last message of an old partition: once every lane has finished what
                    // came before it, the partition is drained.
                    while let Some(joined) = running.join_next().await {
                        if let Ok(Err(e)) = joined {
                            halted.store(true, Ordering::SeqCst);
                            tracing::warn!(partition, error = %e, "a lane failed before the seal");
                        }
                    }
                    // The items before the seal are acknowledged before the partition counts
                    // as drained (its queue is deleted after).
                    if !shared.acks.flush().await {
                        halted.store(true, Ordering::SeqCst);
                    }
                    if halted.load(Ordering::SeqCst) || !seal(shared, queue, &delivery).await {
                        break Ok(());
                    }
                    continue;
                }
                let work = Work::read(kind, &delivery.data);
                let lane = work.lane().to_owned();
                let mut map = waiting.lock().expect("lanes");
                match map.get_mut(&lane) {
                    Some(queue) => queue.push_back((delivery, work)),
                    None => {
                        map.insert(lane.clone(), VecDeque::new());
                        running.spawn(run_lane(
                            shared.clone(),
                            partition,
                            queue.to_owned(),
                            lane,
                            (delivery, work),
                            (waiting.clone(), acking.clone()),
                        ));
                    }
                }
            }
        }
    };
    // Stop taking deliveries, let every lane finish the one in hand; the waiting ones stay
    // unacknowledged and go back to the queue with the channel, ahead of the rest. The consumer
    // is not cancelled first: with a single active consumer the broker would make the next one
    // active at once, and it would get later items before these came back (RabbitMQ 3.10,
    // tested). Closing the channel returns them before the next consumer is served. (On a lost
    // connection the broker's answers never come: the calls to it are bounded.)
    halted.store(true, Ordering::SeqCst);
    consuming.store(false, Ordering::SeqCst);
    let mut result = result;
    while let Some(joined) = running.join_next().await {
        if let Ok(Err(e)) = joined {
            result = result.and(Err(e));
        }
    }
    // Every finished item's ack goes before the channel closes (else it would come again).
    let _ = tokio::time::timeout(2 * BROKER_CALL, shared.acks.flush()).await;
    let _ = tokio::time::timeout(BROKER_CALL, ch.close(200, "partition released".into())).await;
    result
}

/// Records an old partition drained, then acknowledges its seal: false when that could not be
/// done (the worker stopping, the broker gone), and the seal comes again.
async fn seal(shared: &Shared, queue: &str, delivery: &Delivery) -> bool {
    let Ok(seal) = serde_json::from_slice::<Seal>(&delivery.data) else {
        tracing::warn!(
            queue,
            "a seal that cannot be read; acknowledged and ignored"
        );
        return delivery.ack(BasicAckOptions::default()).await.is_ok();
    };
    let recorded = crate::runtime::retry::until_ok(
        "recording a partition drained",
        &shared.stop,
        |_, _| false,
        || shared.partitions.seal(seal.epoch, seal.partition),
    )
    .await;
    if recorded.is_err() {
        return false;
    }
    tracing::info!(
        queue,
        epoch = seal.epoch,
        partition = seal.partition,
        "old partition drained"
    );
    matches!(
        tokio::time::timeout(BROKER_CALL, delivery.ack(BasicAckOptions::default())).await,
        Ok(Ok(_))
    )
}

/// Handles a business number's deliveries in order until none is waiting, or the partition halts.
async fn run_lane(
    shared: Arc<Shared>,
    partition: u16,
    queue: String,
    lane: String,
    first: (Delivery, Work),
    (waiting, acking): (Waiting, Arc<super::acks::Partition>),
) -> Result<(), lapin::Error> {
    let halted = &acking.halted;
    let (mut delivery, mut work) = first;
    loop {
        let Ok(processing) = shared
            .handle(
                partition,
                &queue,
                &delivery.data,
                &delivery.properties,
                work,
            )
            .await
        else {
            // Shut down mid-item: left unacknowledged, it is delivered again, and so is the rest.
            halted.store(true, Ordering::SeqCst);
            return Ok(());
        };
        // Acknowledged by the worker's acking task (bounded there: on a connection that
        // died the answer never comes, and unacked the delivery comes again and finds its
        // events published, same ids).
        let settling = crate::runtime::trace::settle(&processing, &queue);
        crate::runtime::trace::end(&processing, None);
        if !shared
            .acks
            .finished(delivery.acker.clone(), settling, &acking)
        {
            halted.store(true, Ordering::SeqCst);
            return Ok(());
        }
        let mut map = waiting.lock().expect("lanes");
        let next = if halted.load(Ordering::SeqCst) {
            None
        } else {
            map.get_mut(&lane).and_then(VecDeque::pop_front)
        };
        match next {
            Some(next) => (delivery, work) = next,
            None => {
                map.remove(&lane);
                return Ok(());
            }
        }
    }
}
