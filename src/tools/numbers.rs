//! `coexist number list|show|add|set|unset|remove`, and the same operations for the admin API and
//! the console (docs/contract.md, "Numbers"): the registry read and changed, each settings
//! change checked as configuration is and published as `number.updated`.

use serde::Serialize;

use crate::adapters::broker::{self, Outgoing, Publisher, Topology};
use crate::adapters::redis::{Added, RedisStore};
use crate::core::domain::{stable_id, valid_phone_number_id, Customer, Scope};
use crate::core::engine::event::{By, ByKind, Event, Exchange, NumberUpdated, Outbound, Payload};
use crate::core::numbers::{effective, remedy, Change, Origin, Record, KEYS};
use crate::core::time::Millis;
use crate::runtime::config::Config;

/// Why a number command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: one line naming what is wrong (exit code 2).
    #[error("{0}")]
    Invalid(String),
    #[error("number {0} is not in the registry (coexist number list shows the numbers)")]
    Unknown(String),
    #[error("{0}")]
    Store(#[from] crate::core::store::Error),
    #[error("the settings changed, but number.updated could not be published: {0}")]
    Broker(#[from] broker::Error),
}

/// A number id as given, checked.
pub fn number_id(id: &str) -> Result<&str, Error> {
    match valid_phone_number_id(id) {
        true => Ok(id),
        false => Err(Error::Invalid(format!("{id:?} is not a phone_number_id"))),
    }
}

/// One line of `number list`.
#[derive(Debug, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Listed {
    pub phone_number_id: String,
    pub name: Option<String>,
    pub state: &'static str,
    /// Webhooks arrive but the App has sent nothing for `app_idle_warning`.
    pub app_idle: bool,
    pub last_webhook_at: Option<String>,
    pub last_app_message_at: Option<String>,
    /// Conversations whose AI agent is paused now.
    pub with_a_human: u64,
    /// Its onboarding, when it was onboarded through coexist or a history sync was seen.
    pub onboarding: Option<crate::core::onboarding::Onboarding>,
}

/// Every number, with how many of its conversations are with a human now (one pass over the
/// paused conversations, a page at a time).
pub async fn list(store: &RedisStore, config: &Config, now: Millis) -> Result<Vec<Listed>, Error> {
    let records = store.number_records().await?;
    let mut paused: std::collections::HashMap<String, u64> = Default::default();
    let mut after = None;
    loop {
        let (page, next) = store.paused_page(now, after, 1000).await?;
        for (scope, _) in page {
            *paused.entry(scope.phone_number_id).or_default() += 1;
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok(records
        .into_iter()
        .map(|r| Listed {
            app_idle: r.app_idle(now, config.app_idle_warning),
            with_a_human: paused.get(&r.phone_number_id).copied().unwrap_or(0),
            state: r.state.as_str(),
            phone_number_id: r.phone_number_id,
            name: r.name,
            last_webhook_at: r.last_webhook_at,
            last_app_message_at: r.last_app_message_at,
            onboarding: r.onboarding,
        })
        .collect())
}

/// `number list`'s table.
pub fn table(listed: &[Listed]) -> String {
    let shown = |s: &str| crate::tools::printable::escape(s).into_owned();
    let mut out = format!(
        "{:<20} {:<20} {:<22} {:<22} {:<22} {:>6}\n",
        "number", "name", "state", "last webhook", "last App message", "human"
    );
    for l in listed {
        let state = match l.app_idle {
            true => format!("{} app_idle", l.state),
            false => l.state.to_owned(),
        };
        out.push_str(&format!(
            "{:<20} {:<20} {:<22} {:<22} {:<22} {:>6}\n",
            shown(&l.phone_number_id),
            shown(l.name.as_deref().unwrap_or("-")),
            state,
            l.last_webhook_at.as_deref().unwrap_or("-"),
            l.last_app_message_at.as_deref().unwrap_or("-"),
            l.with_a_human
        ));
    }
    out
}

/// One effective setting of `number show`.
#[derive(Debug, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Setting {
    pub key: &'static str,
    pub value: serde_json::Value,
    /// `runtime`, `file` or `default`.
    pub from: Origin,
}

/// What `number show` prints.
#[derive(Debug, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Shown {
    #[serde(flatten)]
    pub record: Record,
    pub app_idle: bool,
    /// What to do about the number's state.
    pub remedy: &'static str,
    pub effective: Vec<Setting>,
}

/// A number's record and effective settings (a number never seen or added: its settings as the
/// configuration gives them, and `unregistered`).
pub async fn show(store: &RedisStore, config: &Config, id: &str) -> Result<Shown, Error> {
    let id = number_id(id)?;
    let record = store.number(id).await?.unwrap_or_else(|| Record {
        phone_number_id: id.to_owned(),
        ..Record::default()
    });
    let runtime = crate::runtime::config::read_settings(&record.settings)
        .map_err(|e| Error::Invalid(format!("number {id}: stored settings: {e}")))?;
    let file = config.numbers.file.get(id).cloned().unwrap_or_default();
    let effective = effective(&runtime, &file, &config.numbers.global)
        .into_iter()
        .map(|(key, value, from)| Setting { key, value, from })
        .collect();
    Ok(Shown {
        app_idle: record.app_idle(Millis::now(), config.app_idle_warning),
        remedy: remedy(record.state, record.state_reason_meta()),
        effective,
        record,
    })
}

/// `number add`.
pub async fn add(store: &RedisStore, id: &str, added: &Added) -> Result<Record, Error> {
    let id = number_id(id)?;
    for (what, v) in [
        ("--waba-id", &added.waba_id),
        ("--display-number", &added.display_phone_number),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !valid_phone_number_id(v)) {
            return Err(Error::Invalid(format!(
                "{what} {v:?} is not an id of digits"
            )));
        }
    }
    store.add_number(id, added, Millis::now()).await?;
    Ok(store.number(id).await?.unwrap_or_default())
}

/// A settings change as given: each key with a value as typed (`None`: unset).
pub type Asked = Vec<(String, Option<serde_json::Value>)>;

/// Reads `KEY=VALUE` pairs as typed on the command line: a value is text (`7d`, `20`, `false`),
/// or for `automated_texts` a JSON list (`["Hi!", "Away"]`) or one text.
pub fn pairs(given: &[String]) -> Result<Asked, Error> {
    given
        .iter()
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                Error::Invalid(format!(
                    "{p:?}: write KEY=VALUE (keys: {})",
                    KEYS.join(", ")
                ))
            })?;
            let k = k.trim();
            let value = match (k, serde_json::from_str::<serde_json::Value>(v)) {
                ("automated_texts", Ok(list @ serde_json::Value::Array(_))) => list,
                _ => serde_json::Value::String(v.to_owned()),
            };
            Ok((k.to_owned(), Some(value)))
        })
        .collect()
}

/// Changes a number's runtime settings (a number not yet in the registry is added as seen):
/// checked as configuration is (one line naming the key), written, and published as
/// `number.updated` by `by`. The event published, or `None` when nothing changed.
pub async fn change(
    store: &RedisStore,
    config: &Config,
    id: &str,
    asked: &Asked,
    by: Option<String>,
) -> Result<Option<Outbound>, Error> {
    let id = number_id(id)?;
    if asked.is_empty() {
        return Err(Error::Invalid(format!(
            "name at least one setting ({})",
            KEYS.join(", ")
        )));
    }
    if let Some((k, _)) = asked.iter().find(|(k, _)| !KEYS.contains(&k.as_str())) {
        return Err(Error::Invalid(format!(
            "{k}: not a number setting (settings: {})",
            KEYS.join(", ")
        )));
    }
    let record = store.number(id).await?.unwrap_or_default();
    let mut merged = record.settings.clone();
    for (k, v) in asked {
        match v {
            Some(v) => merged.insert(k.clone(), v.clone()),
            None => merged.remove(k),
        };
    }
    let invalid = |e: String| Error::Invalid(format!("number {id}: {e}"));
    let runtime = crate::runtime::config::read_settings(&merged).map_err(invalid)?;
    config.numbers.check(id, &runtime).map_err(invalid)?;
    let written = runtime.to_json();
    let mut changed = serde_json::Map::new();
    for (k, _) in asked {
        let now = written.get(k).cloned().unwrap_or(serde_json::Value::Null);
        if record.settings.get(k).unwrap_or(&serde_json::Value::Null) != &now {
            changed.insert(k.clone(), now);
        }
    }
    if changed.is_empty() {
        return Ok(None);
    }
    let by = By {
        kind: ByKind::Operator,
        name: by,
    };
    let at = Millis::now();
    let entry = Change {
        at: at.rfc3339(),
        by: by.clone(),
        changed: changed.clone(),
    };
    let version = store.change_number_settings(id, &entry).await?;
    let event = Event {
        event_id: stable_id(&[id, "number.updated", &version.to_string()]),
        occurred_at: at.rfc3339(),
        phone_number_id: id.to_owned(),
        customer: Customer::default(),
        session_id: None,
        group_id: None,
        payload: Payload::NumberUpdated(NumberUpdated { changed, by }),
    };
    let outbound = Outbound::new(Exchange::HumanChat, Scope::number(id).to_string(), event);
    publish(config, std::slice::from_ref(&outbound)).await?;
    Ok(Some(outbound))
}

/// Publishes events with confirms on a connection of their own.
pub(crate) async fn publish(config: &Config, events: &[Outbound]) -> Result<(), broker::Error> {
    let topology = Topology::new(&config.namespace, config.partitions);
    let conn = broker::connect(config.amqp_url.expose(), "coexist-number").await?;
    topology.declare(&conn).await?;
    let publisher = Publisher::on(conn.create_channel().await?).await?;
    let messages: Vec<Outgoing> = events
        .iter()
        .map(|e| Outgoing::event(&topology, e))
        .collect();
    let published = publisher.publish_all(&messages).await;
    let _ = conn.close(200, "done".into()).await;
    published
}

/// `number remove`: forgets the record and its runtime settings (conversations stay).
pub async fn remove(store: &RedisStore, id: &str) -> Result<(), Error> {
    let id = number_id(id)?;
    match store.remove_number(id).await? {
        true => Ok(()),
        false => Err(Error::Unknown(id.to_owned())),
    }
}

/// `number show`'s text: the record, then each effective setting and where it comes from.
pub fn show_text(s: &Shown) -> String {
    let shown = |v: &Option<String>| {
        v.as_deref().map_or("-".to_owned(), |v| {
            crate::tools::printable::escape(v).into_owned()
        })
    };
    let r = &s.record;
    let mut state = r.state.as_str().to_owned();
    if let Some(reason) = &r.state_reason {
        state.push_str(&format!(" ({})", crate::tools::printable::escape(reason)));
    }
    if s.app_idle {
        state.push_str(", app_idle: the Business App has sent nothing for a long time while webhooks arrive; open the App on the phone before Meta disconnects the number (about 14 days)");
    }
    let mut out = format!(
        "number            {}\nname              {}\nwaba_id           {}\ndisplay number    {}\nstate             {state}\n                  {}\nfirst seen        {}\nlast webhook      {}\nlast App message  {}\n\nsettings\n",
        r.phone_number_id,
        shown(&r.name),
        shown(&r.waba_id),
        shown(&r.display_phone_number),
        s.remedy,
        shown(&r.first_seen_at),
        shown(&r.last_webhook_at),
        shown(&r.last_app_message_at),
    );
    for setting in &s.effective {
        let from = match setting.from {
            Origin::Runtime => "runtime",
            Origin::File => "file",
            Origin::Default => "default",
        };
        let value = crate::tools::printable::escape(&setting.value.to_string()).into_owned();
        out.push_str(&format!("  {:<18} {:<40} {from}\n", setting.key, value));
    }
    if !r.changes.is_empty() {
        out.push_str("\nchanges (newest first)\n");
        for c in &r.changes {
            let by = crate::tools::operator::by_text(&c.by);
            let what = serde_json::Value::Object(c.changed.clone()).to_string();
            let what = crate::tools::printable::escape(&what).into_owned();
            out.push_str(&format!("  {}  {by}  {what}\n", c.at));
        }
    }
    out
}
