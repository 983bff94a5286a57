//! Load spread over business numbers and conversations, and what it must produce: every
//! message once, in order within its conversation (the cluster drills, the partition change).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// The `i`th business number of these tests (numbers spread over partitions).
pub fn number(i: usize) -> String {
    format!("41000000000{:04}", 100 + i)
}

/// A customer message of customer `c` of number `n`, numbered `seq` in its conversation.
pub fn message(n: usize, c: usize, seq: usize, t: i64) -> String {
    customer_text(
        &format!("52155533{c:05}"),
        &format!("wamid.CL{n}.{c}.{seq}"),
        t + seq as i64,
        &seq.to_string(),
    )
    .replace(PNID, &number(n))
}

/// Posts every conversation's bodies in order, each until answered 200 (as Meta retries);
/// returns how many answers were not 200.
pub async fn post_like_meta(
    addr: std::net::SocketAddr,
    conversations: Vec<Vec<String>>,
    pace: Duration,
) -> usize {
    post_like_meta_counted(addr, conversations, pace, Default::default()).await
}

/// [`post_like_meta`], counting the bodies accepted in `accepted` as it goes.
pub async fn post_like_meta_counted(
    addr: std::net::SocketAddr,
    conversations: Vec<Vec<String>>,
    pace: Duration,
    accepted: Arc<AtomicUsize>,
) -> usize {
    let refused = futures_util::future::join_all(conversations.into_iter().map(|bodies| {
        let accepted = accepted.clone();
        async move {
            let mut refused = 0;
            for body in bodies {
                while post_signed(addr, &body).await != 200 {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(pace).await;
            }
            refused
        }
    }))
    .await;
    refused.into_iter().sum()
}

/// Every message once (one event id per item), in order within its conversation.
pub fn assert_once_each_in_order(events: &[Taken], want: usize) {
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e.body["message"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), want, "every accepted message produced its event");
    assert_eq!(events.len(), want, "one event id per item");
    let mut last: HashMap<String, i64> = HashMap::new();
    for e in events {
        let n: i64 = e.body["message"]["text"].as_str().unwrap().parse().unwrap();
        let c = format!(
            "{}:{}",
            e.body["phone_number_id"].as_str().unwrap(),
            e.body["customer"]["wa_id"].as_str().unwrap()
        );
        assert!(
            last.get(&c).is_none_or(|p| *p < n),
            "{c}: {n} after {:?}",
            last.get(&c)
        );
        last.insert(c, n);
    }
}
