//! Which worker consumes which partition. Workers heartbeat into `{ns}:workers` (a sorted set of
//! worker id by last heartbeat); a worker silent for [`EXPIRY`] is gone. Each partition belongs
//! to the live worker with the highest rendezvous score for it, so with W workers each owns about
//! N/W partitions, and a join or a death moves only the partitions that must move. The queues'
//! single-active-consumer flag keeps one consumer per partition while ownership changes hands.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::time::Millis;

/// How often a worker heartbeats and recomputes its partitions.
pub const TICK: Duration = Duration::from_secs(1);
/// A worker not heard from for this long is taken for dead (its partitions move).
pub const EXPIRY: Duration = Duration::from_secs(10);

/// One worker's view of the membership.
pub struct Membership {
    conn: ConnectionManager,
    key: String,
    pub id: String,
}

impl Membership {
    pub fn new(conn: ConnectionManager, namespace: &str, id: String) -> Self {
        Membership {
            conn,
            key: format!("{namespace}:workers"),
            id,
        }
    }

    /// Heartbeats, forgets silent workers, and returns the live ones (sorted).
    pub async fn beat(&self) -> redis::RedisResult<Vec<String>> {
        let now = Millis::now();
        let cutoff = now.minus(EXPIRY).0;
        let mut conn = self.conn.clone();
        let (_, _, live): (i64, i64, Vec<String>) = redis::pipe()
            .atomic()
            .zadd(&self.key, &self.id, now.0)
            .zrembyscore(&self.key, "-inf", format!("({cutoff}"))
            .zrangebyscore(&self.key, cutoff, "+inf")
            .query_async(&mut conn)
            .await?;
        let mut live = live;
        live.sort();
        Ok(live)
    }

    /// Leaves at once (on shutdown), so the others take over without waiting for the expiry.
    pub async fn leave(&self) -> redis::RedisResult<()> {
        let _: i64 = self.conn.clone().zrem(&self.key, &self.id).await?;
        Ok(())
    }
}

/// The partitions `me` owns among `live` workers (rendezvous hashing).
pub fn owned(me: &str, live: &[String], partitions: u16) -> Vec<u16> {
    (0..partitions)
        .filter(|p| {
            live.iter()
                .max_by_key(|w| (score(w, *p), (*w).clone()))
                .is_some_and(|w| w == me)
        })
        .collect()
}

fn score(worker: &str, partition: u16) -> u64 {
    let mut key = Vec::with_capacity(worker.len() + 3);
    key.extend_from_slice(worker.as_bytes());
    key.push(b'|');
    key.extend_from_slice(&partition.to_le_bytes());
    let mut h = crate::domain::fnv1a(&key);
    // A final mix, so similar ids spread well.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_exactly_one_owner_and_shares_are_fair() {
        let live: Vec<String> = (0..3).map(|i| format!("worker-{i}")).collect();
        let shares: Vec<Vec<u16>> = live.iter().map(|w| owned(w, &live, 48)).collect();
        let mut all: Vec<u16> = shares.concat();
        all.sort();
        assert_eq!(all, (0..48).collect::<Vec<_>>());
        for s in &shares {
            assert!((8..=24).contains(&s.len()), "{shares:?}");
        }
    }

    #[test]
    fn a_death_moves_only_the_dead_workers_partitions() {
        let three: Vec<String> = (0..3).map(|i| format!("w{i}")).collect();
        let two = vec!["w0".to_owned(), "w1".to_owned()];
        for w in &two {
            let before = owned(w, &three, 64);
            let after = owned(w, &two, 64);
            assert!(
                before.iter().all(|p| after.contains(p)),
                "{w} keeps what it had"
            );
        }
        assert_eq!(owned("w0", &["w0".to_owned()], 16).len(), 16);
        assert!(owned("ghost", &three, 16).is_empty());
    }
}
