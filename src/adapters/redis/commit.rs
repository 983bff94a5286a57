//! The commit: the script that stores a decision atomically, and its arguments by name.

use serde::Serialize;

use super::{json, RedisStore, Stored, DONE};
use crate::core::store::{Commit, Committed, Result, Seen, DEDUP_RETENTION};

/// The commit: one script, reading its arguments by name. `ARGV[1]` is [`CommitArgs`] as JSON
/// (every key it names is also passed in KEYS, which route it and declare what it touches);
/// `ARGV[2]` is the value of the input's dedup mark (`done`, or the events still to publish), apart
/// so that the events' JSON is not escaped into the arguments' JSON; `ARGV[3..]` are the trail
/// entries (JSON each), appended to the conversation's trail and trimmed to `trail_keep`.
pub(super) const COMMIT: &str = r#"
local c = cjson.decode(ARGV[1])
local conv = c.conversation
-- Checks: the version read, no mark yet, every link as read, every absorbed version as read.
if c.expect and (redis.call('GET', conv.v) or '0') ~= c.expect then return 0 end
if redis.call('EXISTS', c.seen) == 1 then return 0 end
for _, l in ipairs(c.links) do
  if (redis.call('GET', l.key) or '') ~= l.was then return 0 end
end
for _, a in ipairs(c.absorbed) do
  if (redis.call('GET', a.keys.v) or '0') ~= a.version then return 0 end
end
local w = c.write
if w then
  redis.call('INCR', conv.v)
  redis.call('PEXPIRE', conv.v, c.retain)
  if w.pause then redis.call('SET', conv.pause, w.pause, 'PXAT', w.pause_at) else redis.call('DEL', conv.pause) end
  if w.session then redis.call('SET', conv.session, w.session, 'PXAT', w.session_at) else redis.call('DEL', conv.session) end
  redis.call('SET', conv.state, w.state, 'PX', c.retain)
  if w.handback_unchanged then redis.call('PEXPIRE', conv.handback, c.retain)
  elseif w.handback then redis.call('SET', conv.handback, w.handback, 'PX', c.retain)
  else redis.call('DEL', conv.handback) end
end
for _, l in ipairs(c.links) do redis.call('SET', l.key, c.id, 'PX', c.retain) end
for _, k in ipairs(c.refresh) do redis.call('SET', k, c.id, 'PX', c.retain) end
for _, a in ipairs(c.absorbed) do
  redis.call('DEL', a.keys.v, a.keys.pause, a.keys.session, a.keys.state, a.keys.handback, a.keys.trail)
end
local keep = tonumber(c.trail_keep)
if keep > 0 and #ARGV > 2 then
  for i = 3, #ARGV do redis.call('RPUSH', conv.trail, ARGV[i]) end
  redis.call('LTRIM', conv.trail, -keep, -1)
  redis.call('PEXPIRE', conv.trail, c.retain)
end
redis.call('SET', c.seen, ARGV[2], 'PX', c.seen_ms)
return 1
"#;

/// A conversation's keys, by name.
#[derive(Debug, Serialize)]
pub(super) struct ConversationKeys {
    pub(super) v: String,
    pub(super) pause: String,
    pub(super) session: String,
    pub(super) state: String,
    pub(super) handback: String,
    pub(super) trail: String,
}

impl ConversationKeys {
    pub(super) fn all(&self) -> [&String; 6] {
        [
            &self.v,
            &self.pause,
            &self.session,
            &self.state,
            &self.handback,
            &self.trail,
        ]
    }
}

/// The commit script's arguments (`ARGV[1]`), named as the script reads them. Numbers travel as
/// strings: Lua would print large ones in exponent form.
#[derive(Debug, Serialize)]
struct CommitArgs {
    conversation: ConversationKeys,
    /// The version read (absent: the decision read no state, no check).
    #[serde(skip_serializing_if = "Option::is_none")]
    expect: Option<String>,
    /// The new state (absent: unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    write: Option<Write>,
    /// How long the conversation's keys and links live after this change, ms.
    retain: String,
    /// The input's dedup mark, and how long it lives (ms).
    seen: String,
    seen_ms: String,
    /// The conversation's id: what its links point to.
    id: String,
    /// Links checked as read, then pointed at this conversation.
    links: Vec<CheckedLink>,
    /// The state's other names' links, kept alive.
    refresh: Vec<String>,
    /// Conversations merged into this one: deleted if still at the version read.
    absorbed: Vec<Absorbed>,
    /// How many entries the trail keeps (0: none is written).
    trail_keep: String,
}

/// The state a commit writes.
#[derive(Debug, Serialize)]
struct Write {
    /// The pause in force (JSON) and its deadline; absent: none (the key is deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pause: Option<String>,
    pause_at: String,
    /// The live session (JSON) and its end; absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    session_at: String,
    /// What `state` holds ([`Stored`]).
    state: String,
    /// R16's stretch (JSON); absent: none, unless `handback_unchanged`.
    #[serde(skip_serializing_if = "Option::is_none")]
    handback: Option<String>,
    handback_unchanged: bool,
}

#[derive(Debug, Serialize)]
struct CheckedLink {
    key: String,
    /// The conversation it pointed at when read ('' for none).
    was: String,
}

#[derive(Debug, Serialize)]
struct Absorbed {
    keys: ConversationKeys,
    version: String,
}

impl CommitArgs {
    /// Every key the arguments name, the conversation's first (EVALSHA routes by the first key).
    fn keys(&self) -> Vec<&String> {
        let mut keys: Vec<&String> = self.conversation.all().to_vec();
        keys.push(&self.seen);
        keys.extend(self.links.iter().map(|l| &l.key));
        keys.extend(self.refresh.iter());
        for a in &self.absorbed {
            keys.extend(a.keys.all());
        }
        keys
    }
}

impl RedisStore {
    /// A conversation's keys, by name.
    pub(super) fn conversation_keys(&self, scope: &crate::core::domain::Scope) -> ConversationKeys {
        ConversationKeys {
            v: self.key(scope, "v"),
            pause: self.key(scope, "pause"),
            session: self.key(scope, "session"),
            state: self.key(scope, "state"),
            handback: self.key(scope, "handback"),
            trail: self.key(scope, "trail"),
        }
    }

    /// Stores a decision (see [`crate::core::store::StateStore::commit`]).
    pub(super) async fn commit_decision(&self, c: Commit<'_>) -> Result<Committed> {
        let pnid = &c.scope.phone_number_id;
        let id = c.scope.customer.as_ref();
        let retain = c.retain.as_millis().to_string();
        // The state's other names, beside the links checked as read: their links are kept alive.
        let refresh: Vec<String> = match (c.state, id) {
            (Some(state), Some(id)) => state
                .names
                .iter()
                .filter(|n| *n != id && !c.links.iter().any(|l| l.name == **n))
                .map(|n| self.link_key(pnid, n))
                .collect(),
            _ => Vec::new(),
        };
        let write = c.state.map(|state| {
            let live_pause = state.pause.as_ref().filter(|p| p.until > c.now);
            let live_session = state.session.as_ref().filter(|s| s.expires > c.now);
            Write {
                pause: live_pause.map(json),
                pause_at: live_pause.map_or(0, |p| p.until.0).to_string(),
                session: live_session.map(json),
                session_at: live_session.map_or(0, |s| s.expires.0).to_string(),
                state: json(&Stored {
                    pause: state.pause.clone(),
                    last_reset: state.last_reset,
                    names: state.names.clone(),
                    hand: state.hand,
                    last_customer_at: state.last_customer_at,
                }),
                handback: state.handback.as_ref().map(json),
                handback_unchanged: !c.handback_changed,
            }
        });
        let args = CommitArgs {
            conversation: self.conversation_keys(c.scope),
            expect: c.expected_version.map(|v| v.to_string()),
            write,
            retain,
            seen: self.seen_key(pnid, c.key),
            seen_ms: DEDUP_RETENTION.as_millis().to_string(),
            id: id.map_or("", |id| id.as_str()).to_owned(),
            links: c
                .links
                .iter()
                .map(|l| CheckedLink {
                    key: self.link_key(pnid, &l.name),
                    was: l.was.as_ref().map_or("", |w| w.as_str()).to_owned(),
                })
                .collect(),
            refresh,
            absorbed: c
                .absorbed
                .iter()
                .map(|(scope, version)| Absorbed {
                    keys: self.conversation_keys(scope),
                    version: version.to_string(),
                })
                .collect(),
            trail_keep: c.trail_keep.to_string(),
        };
        let mut inv = self.commit.prepare_invoke();
        for key in args.keys() {
            inv.key(key);
        }
        inv.arg(json(&args));
        match c.seen {
            Seen::Done => inv.arg(DONE),
            Seen::Pending(events) => inv.arg(json(events)),
        };
        if c.trail_keep > 0 {
            for entry in c.trail {
                inv.arg(json(entry));
            }
        }
        let ok: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        if ok != 1 {
            return Ok(Committed::Conflict);
        }
        self.replicated().await?;
        Ok(Committed::Yes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn keys(prefix: &str) -> ConversationKeys {
        ConversationKeys {
            v: format!("{prefix}:v"),
            pause: format!("{prefix}:pause"),
            session: format!("{prefix}:session"),
            state: format!("{prefix}:state"),
            handback: format!("{prefix}:handback"),
            trail: format!("{prefix}:trail"),
        }
    }

    /// Every argument with every optional part present.
    fn full() -> CommitArgs {
        CommitArgs {
            conversation: keys("c"),
            expect: Some("3".into()),
            write: Some(Write {
                pause: Some("{}".into()),
                pause_at: "1".into(),
                session: Some("{}".into()),
                session_at: "1".into(),
                state: "{}".into(),
                handback: Some("{}".into()),
                handback_unchanged: false,
            }),
            retain: "1".into(),
            seen: "seen".into(),
            seen_ms: "1".into(),
            id: "id".into(),
            links: vec![CheckedLink {
                key: "n:a".into(),
                was: String::new(),
            }],
            refresh: vec!["n:b".into()],
            absorbed: vec![Absorbed {
                keys: keys("x"),
                version: "1".into(),
            }],
            trail_keep: "50".into(),
        }
    }

    /// The names the script reads from each table it decodes: `c.name`, `w.name`, ...
    fn read_by_script(table: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let pattern = format!("{table}.");
        for (i, _) in COMMIT.match_indices(&pattern) {
            let before = COMMIT[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                continue; // part of a longer name (`a.keys.v` read as `keys.`)
            }
            let name: String = COMMIT[i + pattern.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
        names
    }

    fn fields(v: &serde_json::Value) -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn the_commit_script_reads_every_argument_by_the_name_it_is_written_under() {
        let args = serde_json::to_value(full()).unwrap();
        // Tables as the script names them, and what the Rust side writes there.
        let tables = [
            ("c", &args),
            ("conv", &args["conversation"]),
            ("w", &args["write"]),
            ("l", &args["links"][0]),
            ("a", &args["absorbed"][0]),
            ("a.keys", &args["absorbed"][0]["keys"]),
        ];
        for (table, written) in tables {
            let mut read = read_by_script(table);
            if table == "a" {
                read.remove("keys"); // read through `a.keys.*`
                read.insert("keys".into());
            }
            assert_eq!(read, fields(written), "table `{table}`");
        }
        // Every key named in the arguments is declared in KEYS, the conversation's first.
        let full = full();
        let declared: Vec<&String> = full.keys();
        assert_eq!(declared[0], "c:v");
        for key in [
            "c:v",
            "c:handback",
            "seen",
            "n:a",
            "n:b",
            "x:v",
            "x:handback",
        ] {
            assert!(declared.iter().any(|k| *k == key), "{key} declared");
        }
        assert_eq!(declared.len(), 6 + 1 + 1 + 1 + 6);
    }
}
