//! The partition layout's record: which epoch and count are in force, and where a change of
//! count stands (docs/operations.md, "Changing the partition count").
//!
//! | key | holds |
//! |---|---|
//! | `{ns}:{partitions}` | hash: `epoch`, `count`, `laid_out` (the epoch whose bindings are made); during a change also `from_epoch`, `from_count`, `stage` (`moving`, `sealing`), `since` (ms), `by` |
//! | `{ns}:{partitions}:sealed:{from_epoch}` | set of the old epoch's partitions drained and sealed |
//! | `{ns}:{partitions}:lock` | who changes bindings now (30 s lease) |
//!
//! The keys share a hash tag, so the scripts run on Redis Cluster too. None expires.

use redis::{AsyncCommands, Script};

use super::Conn;
use crate::adapters::broker::topology::Layout;
use crate::core::time::Millis;

/// Where a change of count stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Recorded: the slots are still bound to the old queues, or being moved.
    Moving,
    /// Every slot is bound to the new queues and each old queue has its seal at its end: the
    /// workers drain the old queues.
    Sealing,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Moving => "moving",
            Stage::Sealing => "sealing",
        }
    }
}

/// A change of count in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub from: Layout,
    pub stage: Stage,
    /// The old partitions drained and sealed so far.
    pub sealed: u16,
    pub since: Millis,
    pub by: String,
}

impl Change {
    /// Every old partition is drained: the new ones may be consumed.
    pub fn drained(&self) -> bool {
        self.stage == Stage::Sealing && self.sealed >= self.from.count
    }
}

/// The record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The layout publishers' items go to (once its bindings are made).
    pub layout: Layout,
    /// The epoch whose bindings are made.
    pub laid_out: Option<u32>,
    pub change: Option<Change>,
}

impl Record {
    /// No change is in progress and the layout in force has no bindings yet: its queues may not
    /// be declared, and publishes to it are returned.
    pub fn awaits_lay_out(&self) -> bool {
        self.change.is_none() && self.laid_out != Some(self.layout.epoch)
    }

    /// The layout whose partitions are decided now: during a change, the old one until every old
    /// partition is drained.
    pub fn serving(&self) -> Layout {
        match &self.change {
            Some(c) if !c.drained() => c.from,
            _ => self.layout,
        }
    }

    /// One line for logs, `/readyz` and `coexist partitions`.
    pub fn describe(&self) -> String {
        match &self.change {
            None => format!(
                "{} partitions (epoch {})",
                self.layout.count, self.layout.epoch
            ),
            Some(c) => format!(
                "changing from {} to {} partitions (epoch {} to {}), {}: {} of {} old partitions drained",
                c.from.count,
                self.layout.count,
                c.from.epoch,
                self.layout.epoch,
                c.stage.as_str(),
                c.sealed,
                c.from.count
            ),
        }
    }
}

/// Why a change was not begun.
#[derive(Debug, PartialEq, Eq)]
pub enum Began {
    /// Recorded: the workers carry it out.
    Started(Record),
    /// The count is already in force.
    Unchanged(Record),
    /// Another change is in progress; one at a time.
    Busy(Record),
}

const READ: &str = r#"
-- KEYS[1]: the record; KEYS[2..]: unused. ARGV[1]: the sealed set's prefix
local r = redis.call('HGETALL', KEYS[1])
if #r == 0 then return false end
local h = {}
for i = 1, #r, 2 do h[r[i]] = r[i + 1] end
local sealed = 0
if h['from_epoch'] then sealed = redis.call('SCARD', ARGV[1] .. h['from_epoch']) end
table.insert(r, 'sealed')
table.insert(r, tostring(sealed))
return r
"#;

const INIT: &str = r#"
-- KEYS[1]: the record; ARGV[1]: epoch, ARGV[2]: count
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'count', ARGV[2])
end
return 1
"#;

const BEGIN: &str = r#"
-- KEYS[1]: the record; ARGV[1]: new count, ARGV[2]: now (ms), ARGV[3]: by, ARGV[4]: sealed prefix
local h = redis.call('HMGET', KEYS[1], 'epoch', 'count', 'from_epoch')
if not h[1] then return 'missing' end
if h[3] then return 'busy' end
if h[2] == ARGV[1] then return 'unchanged' end
local next = tonumber(h[1]) + 1
redis.call('DEL', ARGV[4] .. h[1])
redis.call('HSET', KEYS[1], 'from_epoch', h[1], 'from_count', h[2], 'epoch', tostring(next),
  'count', ARGV[1], 'stage', 'moving', 'since', ARGV[2], 'by', ARGV[3])
return 'started'
"#;

const SEAL: &str = r#"
-- KEYS[1]: the record; ARGV[1]: the old epoch, ARGV[2]: the partition, ARGV[3]: sealed prefix
if redis.call('HGET', KEYS[1], 'from_epoch') ~= ARGV[1] then return 0 end
redis.call('SADD', ARGV[3] .. ARGV[1], ARGV[2])
return 1
"#;

const FINISH: &str = r#"
-- KEYS[1]: the record; ARGV[1]: the old epoch, ARGV[2]: sealed prefix
local h = redis.call('HMGET', KEYS[1], 'from_epoch', 'from_count', 'stage')
if h[1] ~= ARGV[1] or h[3] ~= 'sealing' then return 0 end
if redis.call('SCARD', ARGV[2] .. ARGV[1]) < tonumber(h[2]) then return 0 end
redis.call('HDEL', KEYS[1], 'from_epoch', 'from_count', 'stage', 'since', 'by')
redis.call('DEL', ARGV[2] .. ARGV[1])
return 1
"#;

const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// The record of one namespace.
#[derive(Clone)]
pub struct Partitions {
    conn: Conn,
    key: String,
    sealed: String,
    lock: String,
}

impl Partitions {
    pub fn new(conn: Conn, namespace: &str) -> Self {
        let key = format!("{namespace}:{{partitions}}");
        Partitions {
            conn,
            sealed: format!("{key}:sealed:"),
            lock: format!("{key}:lock"),
            key,
        }
    }

    /// The record, if one was made.
    pub async fn read(&self) -> redis::RedisResult<Option<Record>> {
        let raw: Option<Vec<String>> = Script::new(READ)
            .key(&self.key)
            .arg(&self.sealed)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(raw.and_then(|r| parse(&r)))
    }

    /// The record, made with `first` when there is none.
    pub async fn read_or_init(&self, first: Layout) -> redis::RedisResult<Record> {
        if let Some(r) = self.read().await? {
            return Ok(r);
        }
        let _: i64 = Script::new(INIT)
            .key(&self.key)
            .arg(first.epoch)
            .arg(first.count)
            .invoke_async(&mut self.conn.clone())
            .await?;
        self.read().await?.ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "the partition record vanished"))
        })
    }

    /// Records a change to `count` partitions (the workers carry it out).
    pub async fn begin(
        &self,
        first: Layout,
        count: u16,
        by: &str,
        now: Millis,
    ) -> redis::RedisResult<Began> {
        self.read_or_init(first).await?;
        let answer: String = Script::new(BEGIN)
            .key(&self.key)
            .arg(count)
            .arg(now.0)
            .arg(by)
            .arg(&self.sealed)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let record = self.read_or_init(first).await?;
        Ok(match answer.as_str() {
            "started" => Began::Started(record),
            "unchanged" => Began::Unchanged(record),
            _ => Began::Busy(record),
        })
    }

    /// The bindings of `epoch` are made.
    pub async fn laid_out(&self, epoch: u32) -> redis::RedisResult<()> {
        let _: i64 = self.conn.clone().hset(&self.key, "laid_out", epoch).await?;
        Ok(())
    }

    /// Every old queue has its seal at its end.
    pub async fn sealing(&self) -> redis::RedisResult<()> {
        let _: i64 = self
            .conn
            .clone()
            .hset(&self.key, "stage", Stage::Sealing.as_str())
            .await?;
        Ok(())
    }

    /// Old partition `partition` of `epoch` is drained (its seal reached its worker after every
    /// item before it was decided); false when that change is over.
    pub async fn seal(&self, epoch: u32, partition: u16) -> redis::RedisResult<bool> {
        let n: i64 = Script::new(SEAL)
            .key(&self.key)
            .arg(epoch)
            .arg(partition)
            .arg(&self.sealed)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(n == 1)
    }

    /// Ends the change from `epoch` once every old partition is sealed.
    pub async fn finish(&self, epoch: u32) -> redis::RedisResult<bool> {
        let n: i64 = Script::new(FINISH)
            .key(&self.key)
            .arg(epoch)
            .arg(&self.sealed)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(n == 1)
    }

    /// Takes the lease on changing bindings for `ttl_ms`; false when someone else holds it.
    pub async fn lock(&self, me: &str, ttl_ms: u64) -> redis::RedisResult<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.lock)
            .arg(me)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(set.is_some())
    }

    pub async fn unlock(&self, me: &str) -> redis::RedisResult<()> {
        let _: i64 = Script::new(UNLOCK)
            .key(&self.lock)
            .arg(me)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

fn parse(raw: &[String]) -> Option<Record> {
    let get = |k: &str| {
        raw.chunks(2)
            .find(|kv| kv.len() == 2 && kv[0] == k)
            .map(|kv| kv[1].as_str())
    };
    let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
    let layout = Layout {
        epoch: num("epoch")? as u32,
        count: num("count")? as u16,
    };
    let change = match (num("from_epoch"), num("from_count")) {
        (Some(e), Some(c)) => Some(Change {
            from: Layout {
                epoch: e as u32,
                count: c as u16,
            },
            stage: if get("stage") == Some("sealing") {
                Stage::Sealing
            } else {
                Stage::Moving
            },
            sealed: num("sealed").unwrap_or(0) as u16,
            since: Millis(num("since").unwrap_or(0) as i64),
            by: get("by").unwrap_or_default().to_owned(),
        }),
        _ => None,
    };
    Some(Record {
        layout,
        laid_out: num("laid_out").map(|e| e as u32),
        change,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_with_its_change() {
        let raw: Vec<String> = [
            "epoch",
            "2",
            "count",
            "16",
            "laid_out",
            "2",
            "from_epoch",
            "1",
            "from_count",
            "8",
            "stage",
            "sealing",
            "since",
            "5",
            "by",
            "cli",
            "sealed",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = parse(&raw).unwrap();
        assert_eq!(
            r.layout,
            Layout {
                epoch: 2,
                count: 16
            }
        );
        let c = r.change.clone().unwrap();
        assert_eq!((c.from.count, c.sealed, c.stage), (8, 3, Stage::Sealing));
        assert!(!c.drained());
        assert!(
            r.describe().contains("3 of 8 old partitions drained"),
            "{}",
            r.describe()
        );
        assert_eq!(parse(&raw[..4]).unwrap().change, None);
        assert_eq!(parse(&raw[2..4]), None, "no epoch, no record");
    }
}
