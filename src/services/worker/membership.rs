//! Which worker consumes which partition. Workers heartbeat into `{ns}:workers` (a sorted set of
//! worker id by last heartbeat); a worker silent for [`EXPIRY`] is gone. Heartbeats are scored
//! with Redis's clock (`TIME` inside the script), never a worker's own: liveness never depends
//! on two hosts' clocks agreeing. Each partition belongs
//! to the live worker with the highest rendezvous score for it, so with W workers each owns about
//! N/W partitions, and a join or a death moves only the partitions that must move. The queues'
//! single-active-consumer flag keeps one consumer per partition while ownership changes hands.

use std::time::Duration;

use redis::{AsyncCommands, Script};

use crate::adapters::redis::Conn;

/// A heartbeat: scored with the server's time; forgets the silent; answers the live.
const BEAT: &str = r#"
-- KEYS[1]: {ns}:workers; ARGV[1]: this worker's id, ARGV[2]: expiry in ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff)
return redis.call('ZRANGEBYSCORE', KEYS[1], cutoff, '+inf')
"#;

/// How often a worker heartbeats and recomputes its partitions.
pub const TICK: Duration = Duration::from_secs(1);
/// A worker not heard from for this long is taken for dead (its partitions move).
pub const EXPIRY: Duration = Duration::from_secs(10);

/// One worker's view of the membership.
pub struct Membership {
    conn: Conn,
    key: String,
    pub id: String,
    beat: Script,
}

impl Membership {
    pub fn new(conn: Conn, namespace: &str, id: String) -> Self {
        Membership {
            conn,
            key: format!("{namespace}:workers"),
            id,
            beat: Script::new(BEAT),
        }
    }

    /// Heartbeats, forgets silent workers, and returns the live ones (sorted).
    pub async fn beat(&self) -> redis::RedisResult<Vec<String>> {
        let mut live: Vec<String> = self
            .beat
            .key(&self.key)
            .arg(&self.id)
            .arg(EXPIRY.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        live.sort();
        Ok(live)
    }

    /// Leaves at once (on shutdown), so the others take over without waiting for the expiry.
    pub async fn leave(&self) -> redis::RedisResult<()> {
        let _: i64 = self.conn.clone().zrem(&self.key, &self.id).await?;
        Ok(())
    }
}

/// The partitions `me` owns among `live` workers: rendezvous hashing with bounded loads. Each
/// partition, in order, goes to the worker that scores highest for it among those with room:
/// every worker takes `N/W` (rounded down), and `N mod W` of them one more. So shares differ by
/// at most one (plain rendezvous hashing leaves a worker with none now and then: with 2 workers
/// and 4 partitions, one run in eight), and a join or a death moves few partitions beyond the
/// ones that must move. Every worker computes the same answer from the same live set.
pub fn owned(me: &str, live: &[String], partitions: u16) -> Vec<u16> {
    if live.is_empty() {
        return Vec::new();
    }
    let (floor, extra) = (
        partitions as usize / live.len(),
        partitions as usize % live.len(),
    );
    let mut load = vec![0usize; live.len()];
    let mut with_extra = 0;
    let mut mine = Vec::new();
    for p in 0..partitions {
        let room = |w: usize| load[w] < floor || (load[w] == floor && with_extra < extra);
        let owner = (0..live.len())
            .filter(|&w| room(w))
            .max_by_key(|&w| (score(&live[w], p), &live[w]))
            .expect("the rooms add up to N");
        load[owner] += 1;
        if load[owner] > floor {
            with_extra += 1;
        }
        if live[owner] == me {
            mine.push(p);
        }
    }
    mine
}

fn score(worker: &str, partition: u16) -> u64 {
    let mut key = Vec::with_capacity(worker.len() + 3);
    key.extend_from_slice(worker.as_bytes());
    key.push(b'|');
    key.extend_from_slice(&partition.to_le_bytes());
    let mut h = crate::core::domain::fnv1a(&key);
    // A final mix, so similar ids spread well.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(n: usize, seed: u64) -> Vec<String> {
        (0..n).map(|i| format!("host-{seed:x}-{i}")).collect()
    }

    #[test]
    fn every_partition_has_exactly_one_owner_and_shares_differ_by_at_most_one() {
        for seed in 0..200 {
            for (w, n) in [(2, 4), (2, 6), (3, 16), (4, 16), (5, 16), (20, 16)] {
                let live = workers(w, seed);
                let shares: Vec<Vec<u16>> = live.iter().map(|me| owned(me, &live, n)).collect();
                let mut all: Vec<u16> = shares.concat();
                all.sort();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "{seed} {w} {n}");
                let (min, max) = (n as usize / w, (n as usize).div_ceil(w));
                for s in &shares {
                    assert!((min..=max).contains(&s.len()), "{seed} {w} {n}: {shares:?}");
                }
            }
        }
    }

    #[test]
    fn a_join_or_a_death_moves_few_partitions() {
        let mut moved_total = 0;
        for seed in 0..200 {
            let three = workers(3, seed);
            let two = three[..2].to_vec();
            let owner = |live: &[String], p: u16| {
                live.iter()
                    .find(|w| owned(w, live, 48).contains(&p))
                    .cloned()
            };
            let moved = (0..48)
                .filter(|&p| owner(&three, p) != owner(&two, p))
                .count();
            // The dead worker's 16 must move; a few more may, to keep the shares even.
            assert!((16..=26).contains(&moved), "{seed}: {moved} moved");
            moved_total += moved;
        }
        eprintln!(
            "a death of one worker of three moved {:.1} of 48 partitions on average",
            moved_total as f64 / 200.0
        );
        assert_eq!(owned("w0", &["w0".to_owned()], 16).len(), 16);
        assert!(owned("ghost", &workers(3, 0), 16).is_empty());
        assert!(owned("w0", &[], 16).is_empty());
    }
}
