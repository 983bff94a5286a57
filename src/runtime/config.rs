//! Configuration (docs/contract.md, "Configuration"): built-in defaults (`config/default.toml`, compiled in), a file
//! holding any subset of the keys (`--config` / `COEXIST_CONFIG`), then environment variables.
//! [`ENV`] is the one list of keys and their variables; `Settings` reads them by type (serde),
//! each type checking its own values. A wrong value stops start-up with one line naming the key,
//! where the value came from, and what is wrong.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use redis::IntoConnectionInfo;
use serde::Deserialize;

use crate::adapters::redis::RedisTarget;
use crate::core::engine::{RuleBook, Rules};
use crate::core::numbers::{Layers, Overrides};
use crate::runtime::secret::Secret;

/// The built-in defaults.
pub const DEFAULTS: &str = include_str!("../../config/default.toml");

/// Every top-level key and the environment variable that overrides it.
pub const ENV: &[(&str, &str)] = &[
    ("amqp_url", "COEXIST_AMQP_URL"),
    ("redis_url", "COEXIST_REDIS_URL"),
    ("redis_cluster", "COEXIST_REDIS_CLUSTER"),
    ("redis_replicas", "COEXIST_REDIS_REPLICAS"),
    ("namespace", "COEXIST_NAMESPACE"),
    ("listen", "COEXIST_LISTEN"),
    ("admin_listen", "COEXIST_ADMIN_LISTEN"),
    ("app_secret", "COEXIST_APP_SECRET"),
    ("verify_token", "COEXIST_VERIFY_TOKEN"),
    ("reset_text", "COEXIST_RESET_TEXT"),
    ("timeout", "COEXIST_TIMEOUT"),
    ("session_timeout", "COEXIST_SESSION_TIMEOUT"),
    ("partitions", "COEXIST_PARTITIONS"),
    ("automated_texts", "COEXIST_AUTOMATED_TEXTS"),
    ("handback_messages", "COEXIST_HANDBACK_MESSAGES"),
    ("max_body_bytes", "COEXIST_MAX_BODY_BYTES"),
    ("http_header_timeout", "COEXIST_HTTP_HEADER_TIMEOUT"),
    ("http_body_timeout", "COEXIST_HTTP_BODY_TIMEOUT"),
    ("http_idle_timeout", "COEXIST_HTTP_IDLE_TIMEOUT"),
    ("http_max_connections", "COEXIST_HTTP_MAX_CONNECTIONS"),
    ("http_max_buffered_bytes", "COEXIST_HTTP_MAX_BUFFERED_BYTES"),
    ("http_max_pending", "COEXIST_HTTP_MAX_PENDING"),
    ("gate_listen", "COEXIST_GATE_LISTEN"),
    ("gate_token", "COEXIST_GATE_TOKEN"),
    ("gate_require_token", "COEXIST_GATE_REQUIRE_TOKEN"),
    ("graph_url", "COEXIST_GRAPH_URL"),
    ("graph_version", "COEXIST_GRAPH_VERSION"),
    ("graph_token", "COEXIST_GRAPH_TOKEN"),
    ("service_window", "COEXIST_SERVICE_WINDOW"),
    ("console_listen", "COEXIST_CONSOLE_LISTEN"),
    ("console_token", "COEXIST_CONSOLE_TOKEN"),
    ("api_token", "COEXIST_API_TOKEN"),
    ("log", "COEXIST_LOG"),
    ("log_format", "COEXIST_LOG_FORMAT"),
    ("log_content", "COEXIST_LOG_CONTENT"),
    ("app_idle_warning", "COEXIST_APP_IDLE_WARNING"),
    ("trail_entries", "COEXIST_TRAIL_ENTRIES"),
    ("publish_gather", "COEXIST_PUBLISH_GATHER"),
];

/// Keys a `[numbers."<phone_number_id>"]` table (and a number's runtime settings) may set.
const NUMBER_KEYS: &[&str] = crate::core::numbers::KEYS;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The whole configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub amqp_url: Secret,
    /// Where state lives: one server, or a Redis Cluster.
    pub redis: RedisTarget,
    /// Replicas that must acknowledge a commit before its events are published (`WAIT`).
    pub redis_replicas: u32,
    pub namespace: String,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Meta app secrets (several during rotation); empty when not configured.
    pub app_secrets: Vec<Secret>,
    pub verify_token: Option<Secret>,
    pub partitions: u16,
    pub max_body_bytes: usize,
    /// The HTTP limits of both addresses (docs/contract.md, "Configuration").
    pub http: HttpLimits,
    pub log: String,
    pub log_format: LogFormat,
    pub log_content: bool,
    /// The settings of numbers as configured: the global keys and `[numbers."…"]`; the registry's
    /// runtime settings go over them ([`crate::core::numbers`]).
    pub numbers: Layers,
    /// The rules of every number from the configuration alone (derived from `numbers`).
    pub rules: RuleBook,
    /// A number whose App sent nothing this long while webhooks arrive is flagged `app_idle`.
    pub app_idle_warning: Duration,
    /// Decisions kept per conversation for `explain` (0: no trail).
    pub trail_entries: usize,
    /// How long a publish waits for others to go to the broker with (zero: none waits).
    pub publish_gather: Duration,
    /// The Graph API version of coexist's own calls (onboarding), e.g. `v24.0`.
    pub graph_version: String,
    /// The business token for `number onboard` (never stored, never logged); `None`: not given.
    pub graph_token: Option<Secret>,
    /// The reply gate (docs/contract.md, "Reply gate").
    pub gate: GateConfig,
    /// The operator console (docs/contract.md, "Console").
    pub console: ConsoleConfig,
}

/// The operator console's settings.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub listen: SocketAddr,
    /// Who may sign in; empty when no token is configured (the console then refuses to start).
    pub operators: Vec<Operator>,
    /// Who may call the admin API (`/api/v1`, bearer tokens); empty: no admin API.
    pub api: Vec<Operator>,
}

/// The reply gate's settings.
#[derive(Debug, Clone)]
pub struct GateConfig {
    pub listen: SocketAddr,
    /// Required of every request (`X-Coexist-Gate-Token`) when set.
    pub token: Option<Secret>,
    /// Where replies let through go: Meta's Graph API (no trailing slash).
    pub graph_url: String,
    /// Whether every message must carry `X-Coexist-Reply-Token` (`400` without it).
    pub require_token: bool,
}

/// What a client may hold of an HTTP address (docs/contract.md, "Configuration").
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// A request's headers must arrive within this (also a new connection's first request).
    pub header_timeout: Duration,
    /// A request's body must arrive within this, or `408`.
    pub body_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub idle_timeout: Duration,
    /// Connections beyond this are closed at once.
    pub max_connections: usize,
    /// Request bodies held at once, in bytes; a body that would pass it gets `503`.
    pub max_buffered_bytes: usize,
    /// Webhooks waiting for broker confirms at once; beyond it `503` at once (load shedding).
    pub max_pending: usize,
}

/// An operator of the console or a caller of the admin API: a name, a token, and the numbers it
/// may see and act on (`None`: all).
#[derive(Debug, Clone)]
pub struct Operator {
    pub name: String,
    pub token: Secret,
    pub numbers: Option<Vec<String>>,
}

impl Operator {
    /// Whether it may see and act on the number `phone_number_id`.
    pub fn sees(&self, phone_number_id: &str) -> bool {
        self.numbers
            .as_ref()
            .is_none_or(|n| n.iter().any(|id| id == phone_number_id))
    }

    /// The one whose token is `given` (every token compared, in constant time).
    pub fn find<'a>(operators: &'a [Operator], given: &[u8]) -> Option<&'a Operator> {
        use subtle::ConstantTimeEq;
        operators.iter().fold(None, |found, o| {
            let matches = bool::from(o.token.expose().as_bytes().ct_eq(given));
            found.or(matches.then_some(o))
        })
    }
}

/// Why the configuration was refused: one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(String);

type Table = toml::map::Map<String, toml::Value>;

/// The keys as written (defaults, file, environment), each read and checked by its type; a
/// value from the environment is always a string, so every type also reads its string form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    amqp_url: AmqpUrl,
    redis_url: RedisUrl,
    redis_cluster: Option<RedisUrls>,
    redis_replicas: Whole<0, 16>,
    namespace: Namespace,
    listen: Address,
    admin_listen: Address,
    app_secret: Option<Secrets>,
    verify_token: Option<Token>,
    reset_text: String,
    timeout: Span,
    session_timeout: Span,
    partitions: Whole<1, 1024>,
    automated_texts: Texts,
    handback_messages: Whole<0, 1000>,
    max_body_bytes: Whole<1024, { 64 << 20 }>,
    http_header_timeout: Span,
    http_body_timeout: Span,
    http_idle_timeout: Span,
    http_max_connections: Whole<1, 1_000_000>,
    http_max_buffered_bytes: Whole<{ 1 << 20 }, { 1 << 40 }>,
    http_max_pending: Whole<1, 1_000_000>,
    gate_listen: Address,
    gate_token: Option<Token>,
    gate_require_token: Flag,
    graph_url: HttpUrl,
    graph_version: GraphVersion,
    graph_token: Option<Token>,
    service_window: Span,
    console_listen: Address,
    console_token: Option<Operators>,
    api_token: Option<Operators>,
    log: LogFilter,
    log_format: LogFormat,
    log_content: Flag,
    app_idle_warning: Span,
    trail_entries: Whole<0, 1000>,
    publish_gather: Gather,
    #[serde(default)]
    numbers: HashMap<String, NumberSettings>,
}

/// `[numbers."<phone_number_id>"]`, or a number's runtime settings: what one business number
/// sets for itself.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NumberSettings {
    reset_text: Option<String>,
    timeout: Option<Span>,
    session_timeout: Option<Span>,
    automated_texts: Option<Texts>,
    handback_messages: Option<Whole<0, 1000>>,
    service_window: Option<Span>,
    coexistence: Option<Flag>,
}

impl NumberSettings {
    fn overrides(self) -> Overrides {
        Overrides {
            reset_text: self.reset_text,
            timeout: self.timeout.map(|s| s.0),
            session_timeout: self.session_timeout.map(|s| s.0),
            automated_texts: self.automated_texts.map(|t| t.0),
            handback_messages: self.handback_messages.map(|n| n.0 as usize),
            service_window: self.service_window.map(|s| s.0),
            coexistence: self.coexistence.map(|f| f.0),
        }
    }
}

/// Reads a number's runtime settings (their written form, [`Overrides::to_json`], or values as
/// a person types them: `"7d"`, `"20"`, `"false"`), checked as configuration is: the error is
/// one line naming the key.
pub fn read_settings(
    settings: &serde_json::Map<String, serde_json::Value>,
) -> Result<Overrides, String> {
    let json = serde_json::Value::Object(settings.clone());
    let read: NumberSettings = serde_path_to_error::deserialize(json).map_err(|e| {
        let key = e.path().iter().next().map(|k| k.to_string());
        let problem = e.inner().to_string().replace('\n', " ");
        match key.filter(|k| !k.is_empty() && k != "?") {
            Some(key) => format!("{key}: {problem}"),
            None => format!("{problem} (settings: {})", NUMBER_KEYS.join(", ")),
        }
    })?;
    Ok(read.overrides())
}

impl Config {
    /// The defaults alone.
    pub fn defaults() -> Self {
        Self::load(None, |_| None).expect("the built-in defaults are valid")
    }

    /// Defaults, then the file (if any), then the environment (read through `env`).
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut table: Table = DEFAULTS.parse().expect("config/default.toml parses");
        let mut origin = Origins::default();
        if let Some(path) = file {
            origin.file = path.display().to_string();
            for (key, value) in read_file(path)? {
                origin.check_key(&key, &value)?;
                origin.by_key.insert(key.clone(), origin.file.clone());
                table.insert(key, value);
            }
        }
        for (key, var) in ENV {
            if let Some(v) = env(var) {
                table.insert((*key).to_owned(), toml::Value::String(v));
                origin.by_key.insert((*key).to_owned(), (*var).to_owned());
            }
        }
        let json = serde_json::to_value(&table).expect("TOML is JSON");
        let s: Settings = serde_path_to_error::deserialize(json).map_err(|e| {
            let problem = e.inner().to_string();
            origin.fail(
                &e.path().iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &problem,
            )
        })?;
        let global = Overrides {
            reset_text: Some(s.reset_text.clone()),
            timeout: Some(s.timeout.0),
            session_timeout: Some(s.session_timeout.0),
            automated_texts: Some(s.automated_texts.0.clone()),
            handback_messages: Some(s.handback_messages.0 as usize),
            service_window: Some(s.service_window.0),
            coexistence: Some(true),
        };
        check_automated(&global.rules(), || {
            origin.fail(&["automated_texts".into()], "")
        })?;
        let mut layers = Layers {
            global,
            file: HashMap::new(),
        };
        for (pnid, n) in s.numbers {
            let at = |key: &str| vec!["numbers".to_owned(), pnid.clone(), key.to_owned()];
            if !crate::core::domain::valid_phone_number_id(&pnid) {
                return Err(origin.fail(&["numbers".into(), pnid], "not a phone_number_id"));
            }
            let overrides = n.overrides();
            check_automated(&overrides.over(&layers.global).rules(), || {
                origin.fail(&at("automated_texts"), "")
            })?;
            layers.file.insert(pnid, overrides);
        }
        let rules = layers.book(&[], 0).rules;
        Ok(Config {
            amqp_url: Secret::new(s.amqp_url.0),
            redis: match s.redis_cluster {
                Some(RedisUrls(seeds)) if !seeds.is_empty() => RedisTarget::Cluster(seeds),
                _ => RedisTarget::Server(Secret::new(s.redis_url.0)),
            },
            redis_replicas: s.redis_replicas.0 as u32,
            namespace: s.namespace.0,
            listen: s.listen.0,
            admin_listen: s.admin_listen.0,
            app_secrets: s.app_secret.map(|s| s.0).unwrap_or_default(),
            verify_token: s
                .verify_token
                .map(|t| t.0)
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            partitions: s.partitions.0 as u16,
            max_body_bytes: s.max_body_bytes.0 as usize,
            http: HttpLimits {
                header_timeout: s.http_header_timeout.0,
                body_timeout: s.http_body_timeout.0,
                idle_timeout: s.http_idle_timeout.0,
                max_connections: s.http_max_connections.0 as usize,
                max_buffered_bytes: s.http_max_buffered_bytes.0 as usize,
                max_pending: s.http_max_pending.0 as usize,
            },
            log: s.log.0,
            log_format: s.log_format,
            log_content: s.log_content.0,
            numbers: layers,
            rules,
            app_idle_warning: s.app_idle_warning.0,
            trail_entries: s.trail_entries.0 as usize,
            publish_gather: s.publish_gather.0,
            graph_version: s.graph_version.0,
            graph_token: s
                .graph_token
                .map(|t| t.0)
                .filter(|t| !t.trim().is_empty())
                .map(|t| Secret::new(t.trim().to_owned())),
            gate: GateConfig {
                listen: s.gate_listen.0,
                token: s
                    .gate_token
                    .map(|t| t.0)
                    .filter(|t| !t.is_empty())
                    .map(Secret::new),
                graph_url: s.graph_url.0.trim_end_matches('/').to_owned(),
                require_token: s.gate_require_token.0,
            },
            console: ConsoleConfig {
                listen: s.console_listen.0,
                operators: s.console_token.map(|o| o.0).unwrap_or_default(),
                api: s.api_token.map(|o| o.0).unwrap_or_default(),
            },
        })
    }
}

/// A duration as an operator types it (`30m`, `2h`, `7d`): longer than zero, at most ten years,
/// as the configuration's durations.
pub fn duration(s: &str) -> Result<Duration, String> {
    const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 86_400);
    match humantime::parse_duration(s.trim()) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".into()),
        Ok(d) if d > TEN_YEARS => Err("must be at most ten years".into()),
        Ok(d) => Ok(d),
        Err(_) => Err(format!("{s:?} is not a duration (write e.g. 30m, 2h, 7d)")),
    }
}

/// Refuses an automated text that is the reset command (R15 would hide every reset). `at` names
/// the key and its origin.
fn check_automated(rules: &Rules, at: impl Fn() -> ConfigError) -> Result<(), ConfigError> {
    match rules.automated_reset() {
        None => Ok(()),
        Some(text) => Err(ConfigError(format!(
            "{}{text:?} is the reset command (reset_text): as an automated text it would never reset",
            at().0
        ))),
    }
}

/// Reads the file named by `--config` as a TOML table.
fn read_file(path: &Path) -> Result<Table, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{shown}: cannot read: {e}")))?;
    text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| text[..s.start].lines().count().max(1));
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        ConfigError(format!(
            "{shown}: not valid TOML{at}: {}",
            e.message().replace('\n', " ")
        ))
    })
}

/// Where each value came from, for errors.
#[derive(Default)]
struct Origins {
    /// The file's name as given (empty without a file).
    file: String,
    /// Top-level key -> the file or the variable that set it (absent: the built-in default).
    by_key: HashMap<String, String>,
}

impl Origins {
    /// Refuses a key of the file that is not a configuration key.
    fn check_key(&self, key: &str, value: &toml::Value) -> Result<(), ConfigError> {
        let file = &self.file;
        if key == "numbers" {
            let toml::Value::Table(numbers) = value else {
                return Err(ConfigError(format!(
                    "numbers (from {file}): expected tables [numbers.\"<phone_number_id>\"]"
                )));
            };
            for (pnid, t) in numbers {
                let toml::Value::Table(t) = t else {
                    return Err(ConfigError(format!(
                        "numbers.\"{pnid}\" (from {file}): expected a table"
                    )));
                };
                if let Some(k) = t.keys().find(|k| !NUMBER_KEYS.contains(&k.as_str())) {
                    return Err(ConfigError(format!(
                        "numbers.\"{pnid}\".{k} (from {file}): unknown key (allowed: {})",
                        NUMBER_KEYS.join(", ")
                    )));
                }
            }
            return Ok(());
        }
        if ENV.iter().any(|(k, _)| *k == key) {
            return Ok(());
        }
        let known: Vec<&str> = ENV.iter().map(|(k, _)| *k).collect();
        Err(ConfigError(format!(
            "{file}: unknown key `{key}` (known: {}, numbers)",
            known.join(", ")
        )))
    }

    /// One line naming the key at `path`, where its value came from, and the problem.
    fn fail(&self, path: &[String], problem: &str) -> ConfigError {
        let (key, from) = match path {
            [numbers, pnid, rest @ ..] if numbers == "numbers" => {
                let rest: String = rest.iter().map(|k| format!(".{k}")).collect();
                (format!("numbers.\"{pnid}\"{rest}"), self.file.as_str())
            }
            [key, ..] => (
                key.clone(),
                self.by_key
                    .get(key)
                    .map_or("built-in default", String::as_str),
            ),
            [] => (String::from("?"), "built-in default"),
        };
        ConfigError(format!(
            "{key} (from {from}): {}",
            problem.replace('\n', " ")
        ))
    }
}

/// Reads a value from its string form (the environment's) or, for types TOML has, natively.
fn from_text<'de, D, T>(d: D, what: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => {
            parse(&s).ok_or_else(|| D::Error::custom(format!("{s:?} is not {what}")))
        }
        serde_json::Value::Number(n) => {
            parse(&n.to_string()).ok_or_else(|| D::Error::custom(format!("{n} is not {what}")))
        }
        serde_json::Value::Bool(b) => {
            parse(&b.to_string()).ok_or_else(|| D::Error::custom(format!("{b} is not {what}")))
        }
        other => Err(D::Error::custom(format!("expected {what}, got {other}"))),
    }
}

/// A duration written like `30s`, `15m`, `24h`, `7d`: longer than zero, at most ten years.
#[derive(Clone, Copy)]
struct Span(Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let s = String::deserialize(d).map_err(|_| {
            D::Error::custom("expected a duration written as a string, e.g. \"7d\"")
        })?;
        let d = humantime::parse_duration(s.trim()).map_err(|_| {
            D::Error::custom(format!(
                "{s:?} is not a duration (write e.g. 30s, 15m, 24h, 7d)"
            ))
        })?;
        if d.is_zero() {
            return Err(D::Error::custom("must be longer than zero"));
        }
        if d > Duration::from_secs(10 * 365 * 86_400) {
            return Err(D::Error::custom("must be at most ten years"));
        }
        Ok(Span(d))
    }
}

/// How long a publish may wait for company: `0` (none) or a duration of at most 100 ms.
#[derive(Clone, Copy)]
struct Gather(Duration);

impl<'de> Deserialize<'de> for Gather {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let s = String::deserialize(d).map_err(|_| {
            D::Error::custom("expected a duration written as a string, e.g. \"5ms\"")
        })?;
        let d = match s.trim() {
            "0" => Duration::ZERO,
            t => humantime::parse_duration(t).map_err(|_| {
                D::Error::custom(format!("{s:?} is not a duration (write e.g. 0, 2ms, 5ms)"))
            })?,
        };
        if d > Duration::from_millis(100) {
            return Err(D::Error::custom("must be at most 100ms"));
        }
        Ok(Gather(d))
    }
}

/// A whole number from `MIN` to `MAX`.
#[derive(Clone, Copy)]
struct Whole<const MIN: i64, const MAX: i64>(i64);

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Whole<MIN, MAX> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let what = format!("a whole number from {MIN} to {MAX}");
        from_text(d, &what, |s| {
            s.trim().parse().ok().filter(|i| (MIN..=MAX).contains(i))
        })
        .map_err(|_| serde::de::Error::custom(format!("expected {what}")))
        .map(Whole)
    }
}

/// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`, and empty for false).
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let parse = |s: &str| match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" | "" => Some(false),
            _ => None,
        };
        from_text(d, "true or false", parse)
            .map_err(|_| serde::de::Error::custom("expected true or false"))
            .map(Flag)
    }
}

/// An address like `127.0.0.1:8080`.
struct Address(SocketAddr);

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, "an address like 127.0.0.1:8080", |s| {
            s.trim().parse().ok()
        })
        .map(Address)
    }
}

/// 1 to 64 of `A-Z a-z 0-9 _ . -`, starting with a letter or digit.
struct Namespace(String);

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let valid = (1..=64).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        match valid {
            true => Ok(Namespace(s)),
            false => Err(serde::de::Error::custom(
                "use 1 to 64 of A-Z a-z 0-9 _ . - starting with a letter or digit",
            )),
        }
    }
}

/// An `amqp://` or `amqps://` URL (several comma-separated for a cluster); a `cacertfile` it
/// names must hold PEM certificates.
struct AmqpUrl(String);

impl<'de> Deserialize<'de> for AmqpUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let nodes = crate::adapters::broker::nodes(&s);
        match nodes
            .iter()
            .find(|u| !u.starts_with("amqp://") && !u.starts_with("amqps://"))
        {
            _ if nodes.is_empty() => Err(serde::de::Error::custom(
                "expected an amqp:// or amqps:// URL (several comma-separated for a cluster)",
            )),
            Some(bad) => Err(serde::de::Error::custom(format!(
                "{:?} is not an amqp:// or amqps:// URL",
                bad.split('@').next_back().unwrap_or(bad)
            ))),
            None => match nodes
                .iter()
                .find_map(|u| crate::adapters::broker::tls(u).err())
            {
                Some(e) => Err(serde::de::Error::custom(e)),
                None => Ok(AmqpUrl(s)),
            },
        }
    }
}

/// An `http://` or `https://` URL.
struct HttpUrl(String);

/// A Graph API version as Meta writes it: `v` and a number (`v24.0`).
struct GraphVersion(String);

impl<'de> Deserialize<'de> for GraphVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match crate::core::domain::valid_graph_version(s.trim()) {
            true => Ok(GraphVersion(s.trim().to_owned())),
            false => Err(serde::de::Error::custom(format!(
                "{s:?} is not a Graph API version (write e.g. v24.0)"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.parse::<axum::http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.host().is_some()
                    && uri.query().is_none() =>
            {
                Ok(HttpUrl(s))
            }
            _ => Err(serde::de::Error::custom(format!(
                "{s:?} is not an http:// or https:// URL"
            ))),
        }
    }
}

/// A URL the Redis client accepts.
struct RedisUrl(String);

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str().into_connection_info() {
            Ok(_) => Ok(RedisUrl(s)),
            Err(e) => Err(serde::de::Error::custom(format!(
                "not a Redis URL ({})",
                e.to_string().replace('\n', " ")
            ))),
        }
    }
}

/// Comma-separated Redis URLs (the seeds of a cluster); empty for none.
struct RedisUrls(Vec<Secret>);

impl<'de> Deserialize<'de> for RedisUrls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut seeds = Vec::new();
        for url in s.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            if let Err(e) = url.into_connection_info() {
                return Err(serde::de::Error::custom(format!(
                    "not a Redis URL ({})",
                    e.to_string().replace('\n', " ")
                )));
            }
            seeds.push(Secret::new(url));
        }
        Ok(RedisUrls(seeds))
    }
}

/// Values the documentation shows in place of a real secret or token: anyone who read it could
/// sign webhooks, so none of them is accepted.
pub const PLACEHOLDERS: &[&str] = &[
    "change-me",
    "changeme",
    "your-meta-app-secret",
    "your-token",
    "your-gate-token",
    "your-console-token",
    "secret",
    "token",
];

fn placeholder<E: serde::de::Error>(value: &str) -> Result<(), E> {
    match PLACEHOLDERS.contains(&value.to_ascii_lowercase().as_str()) {
        true => Err(E::custom(format!(
            "{value:?} is a placeholder from the documentation, not a secret: set the real one"
        ))),
        false => Ok(()),
    }
}

/// A secret's text: a string, or an error that never shows the value (a secret written as a
/// TOML number or list would otherwise be echoed in the one line that refuses it).
fn secret_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        _ => Err(serde::de::Error::custom(
            "expected a string (the value is not shown: it may be a secret); write it in quotes",
        )),
    }
}

/// App secrets, comma-separated (several during rotation), none of them empty or a placeholder.
struct Secrets(Vec<Secret>);

impl<'de> Deserialize<'de> for Secrets {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = secret_text(d)?;
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(serde::de::Error::custom(
                "an empty secret in the comma-separated list",
            ));
        }
        for p in &parts {
            placeholder(p)?;
        }
        Ok(Secrets(parts.into_iter().map(Secret::new).collect()))
    }
}

/// The console's operators: `name:token` pairs, comma-separated, or one token alone (its
/// operator is then called `operator`); no token empty or a placeholder (empty means none).
struct Operators(Vec<Operator>);

impl<'de> Deserialize<'de> for Operators {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let s = secret_text(d)?;
        let mut out: Vec<Operator> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (who, token) = match part.split_once(':') {
                Some((who, token)) => (who.trim(), token.trim()),
                None => ("operator", part),
            };
            // `name@ID+ID`: limited to those numbers.
            let (name, numbers) = match who.split_once('@') {
                Some((name, ids)) => {
                    let ids: Vec<String> = ids.split('+').map(|i| i.trim().to_owned()).collect();
                    if let Some(bad) = ids
                        .iter()
                        .find(|i| !crate::core::domain::valid_phone_number_id(i))
                    {
                        return Err(D::Error::custom(format!(
                            "{name:?} is limited to {bad:?}, which is not a phone_number_id (write name@ID+ID:token)",
                            name = name.trim()
                        )));
                    }
                    (name.trim(), Some(ids))
                }
                None => (who, None),
            };
            if name.is_empty() || token.is_empty() {
                return Err(D::Error::custom(
                    "expected name:token pairs (or name@ID+ID:token), comma-separated (or one token)",
                ));
            }
            if token.len() < 8 {
                return Err(D::Error::custom(format!(
                    "the token of {name:?} is shorter than 8 characters"
                )));
            }
            placeholder(token)?;
            if out.iter().any(|o| o.name == name) {
                return Err(D::Error::custom(format!("{name:?} is named twice")));
            }
            out.push(Operator {
                name: name.to_owned(),
                token: Secret::new(token),
                numbers,
            });
        }
        Ok(Operators(out))
    }
}

/// The verify token of the handshake: not a placeholder (empty means none).
struct Token(String);

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = secret_text(d)?;
        placeholder(s.trim())?;
        Ok(Token(s))
    }
}

/// Texts: a TOML list of strings, or (from the environment) one text per line; blank lines are
/// skipped, an empty text in a list is refused.
struct Texts(Vec<String>);

impl<'de> Deserialize<'de> for Texts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wrong = "expected a list of texts (TOML) or one text per line (environment)";
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Texts(
                s.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            serde_json::Value::Array(items) => {
                let mut texts = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        serde_json::Value::String(t) if !t.trim().is_empty() => texts.push(t),
                        serde_json::Value::String(_) => {
                            return Err(D::Error::custom("an empty text in the list"))
                        }
                        other => return Err(D::Error::custom(format!("{wrong}; got {other}"))),
                    }
                }
                Ok(Texts(texts))
            }
            other => Err(D::Error::custom(format!("{wrong}; got {other}"))),
        }
    }
}

/// A log level or tracing filter.
struct LogFilter(String);

impl<'de> Deserialize<'de> for LogFilter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match tracing_subscriber::EnvFilter::try_new(&s) {
            Ok(_) => Ok(LogFilter(s)),
            Err(_) => Err(serde::de::Error::custom(
                "not a log level or filter (e.g. info, debug, coexist=debug)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn file(text: &str) -> tempfile_path::TempPath {
        tempfile_path::write(text)
    }

    /// A tiny temp-file helper (no extra crate for a few test files).
    mod tempfile_path {
        use super::*;
        pub struct TempPath(pub std::path::PathBuf);
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        pub fn write(text: &str) -> TempPath {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("coexist-config-{}-{n}.toml", std::process::id()));
            std::fs::File::create(&p)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            TempPath(p)
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::defaults();
        assert_eq!(c.amqp_url.expose(), "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(
            c.redis,
            RedisTarget::Server(Secret::new("redis://127.0.0.1:6379"))
        );
        assert_eq!(c.namespace, "coexist");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9090");
        assert!(c.app_secrets.is_empty());
        assert!(c.verify_token.is_none());
        assert_eq!(c.rules.default.reset_text.as_deref(), Some("/reset"));
        assert_eq!(c.rules.default.timeout, Duration::from_secs(7 * 86_400));
        assert_eq!(c.rules.default.session_timeout, Duration::from_secs(86_400));
        assert_eq!(c.partitions, 16);
        assert_eq!(c.max_body_bytes, 4 << 20);
        assert!(!c.log_content);
        assert_eq!(c.redis_replicas, 0);
        assert_eq!(c.http.header_timeout, Duration::from_secs(10));
        assert_eq!(c.http.body_timeout, Duration::from_secs(30));
        assert_eq!(c.http.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.http.max_connections, 4096);
        assert_eq!(c.http.max_buffered_bytes, 256 << 20);
    }

    #[test]
    fn a_redis_cluster_replaces_the_single_server() {
        let seeds = "redis://10.0.0.1:6379, redis://10.0.0.2:6379";
        let c = Config::load(None, env(&[("COEXIST_REDIS_CLUSTER", seeds)])).unwrap();
        assert_eq!(
            c.redis,
            RedisTarget::Cluster(vec![
                Secret::new("redis://10.0.0.1:6379"),
                Secret::new("redis://10.0.0.2:6379")
            ])
        );
        let c = Config::load(None, env(&[("COEXIST_REDIS_CLUSTER", "")])).unwrap();
        assert!(matches!(c.redis, RedisTarget::Server(_)), "empty: none");
    }

    #[test]
    fn file_subset_then_environment() {
        let f = file("namespace = \"acme\"\ntimeout = \"2d\"\npartitions = 4\n[numbers.\"410\"]\nreset_text = \"#BOT\"\n");
        let c = Config::load(
            Some(&f.0),
            env(&[("COEXIST_TIMEOUT", "36h"), ("COEXIST_APP_SECRET", "a, b")]),
        )
        .unwrap();
        assert_eq!(c.namespace, "acme");
        assert_eq!(c.partitions, 4);
        assert_eq!(
            c.rules.default.timeout,
            Duration::from_secs(36 * 3600),
            "environment beats the file"
        );
        assert_eq!(c.app_secrets, vec![Secret::new("a"), Secret::new("b")]);
        let n = c.rules.for_number("410");
        assert_eq!(n.reset_text.as_deref(), Some("#bot"));
        assert_eq!(
            n.timeout,
            Duration::from_secs(36 * 3600),
            "unset per-number keys inherit"
        );
        assert_eq!(
            c.rules.for_number("999").reset_text.as_deref(),
            Some("/reset")
        );
        assert!(
            !format!("{c:?}").contains("guest:guest"),
            "secrets never print"
        );
    }

    #[test]
    fn automated_texts_and_handback_globally_and_per_number() {
        let f = file(concat!(
            "automated_texts = [\"Hola, gracias por escribir\", \"Fuera   de horario\"]\n",
            "handback_messages = 5\n",
            "[numbers.\"410\"]\nautomated_texts = [\"Bienvenido\"]\nhandback_messages = 0\n",
        ));
        let c = Config::load(Some(&f.0), env(&[])).unwrap();
        assert_eq!(
            c.rules.default.automated_texts,
            ["hola, gracias por escribir", "fuera de horario"]
        );
        assert_eq!(c.rules.default.handback_messages, 5);
        assert_eq!(c.rules.for_number("410").automated_texts, ["bienvenido"]);
        assert_eq!(c.rules.for_number("410").handback_messages, 0);
        // The environment: one text per line, blank lines skipped.
        let c = Config::load(
            None,
            env(&[
                (
                    "COEXIST_AUTOMATED_TEXTS",
                    "Hola\r\n\n  Fuera de horario  \n",
                ),
                ("COEXIST_HANDBACK_MESSAGES", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.rules.default.automated_texts,
            ["hola", "fuera de horario"]
        );
        assert_eq!(c.rules.default.handback_messages, 7);
        let d = Config::defaults();
        assert!(d.rules.default.automated_texts.is_empty());
        assert_eq!(d.rules.default.handback_messages, 20);
    }

    #[test]
    fn automated_texts_errors_are_one_line_naming_the_key() {
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(&str, Vars, &str)] = &[
            ("automated_texts = \"Hola\"\n", &[], ""),
            ("automated_texts = 5\n", &[], "automated_texts (from "),
            ("automated_texts = [\"ok\", 3]\n", &[], "automated_texts (from "),
            ("automated_texts = [\"ok\", \"  \"]\n", &[], "an empty text"),
            ("", &[("COEXIST_AUTOMATED_TEXTS", "Hola\n /RESET ")], "automated_texts (from COEXIST_AUTOMATED_TEXTS): \"/reset\" is the reset command"),
            ("reset_text = \"#bot\"\nautomated_texts = [\"#BOT\"]\n", &[], "is the reset command"),
            ("[numbers.\"410\"]\nreset_text = \"listo\"\nautomated_texts = [\"Listo\"]\n", &[], "numbers.\"410\".automated_texts (from "),
            ("handback_messages = -1\n", &[], "handback_messages (from "),
            ("", &[("COEXIST_HANDBACK_MESSAGES", "lots")], "handback_messages (from COEXIST_HANDBACK_MESSAGES): expected a whole number from 0 to 1000"),
        ];
        for (text, vars, want) in cases {
            let f = file(text);
            let result = Config::load(Some(&f.0), env(vars));
            if want.is_empty() {
                assert!(result.is_ok(), "{text:?}: a single string is one text");
                continue;
            }
            let e = result.unwrap_err().to_string();
            assert!(e.contains(want), "{text:?} {vars:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn empty_reset_text_turns_reset_off() {
        let c = Config::load(None, env(&[("COEXIST_RESET_TEXT", "")])).unwrap();
        assert_eq!(c.rules.default.reset_text, None);
    }

    #[test]
    fn errors_name_the_key_and_its_origin_in_one_line() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("COEXIST_TIMEOUT", "7x")], "config: timeout (from COEXIST_TIMEOUT): \"7x\" is not a duration"),
            (&[("COEXIST_TIMEOUT", "0s")], "config: timeout (from COEXIST_TIMEOUT): must be longer than zero"),
            (&[("COEXIST_PARTITIONS", "0")], "config: partitions (from COEXIST_PARTITIONS): expected a whole number from 1 to 1024"),
            (&[("COEXIST_NAMESPACE", "a b")], "config: namespace (from COEXIST_NAMESPACE):"),
            (&[("COEXIST_NAMESPACE", "{x}")], "config: namespace (from COEXIST_NAMESPACE):"),
            (&[("COEXIST_AMQP_URL", "http://x")], "config: amqp_url (from COEXIST_AMQP_URL): \"http://x\" is not an amqp://"),
            (&[("COEXIST_AMQP_URL", "amqp://a, http://user:pw@b")], "config: amqp_url (from COEXIST_AMQP_URL): \"b\" is not an amqp://"),
            (&[("COEXIST_AMQP_URL", " , ")], "config: amqp_url (from COEXIST_AMQP_URL): expected an amqp://"),
            (&[("COEXIST_REDIS_CLUSTER", "redis://a:1,nope")], "config: redis_cluster (from COEXIST_REDIS_CLUSTER): not a Redis URL"),
            (&[("COEXIST_REDIS_REPLICAS", "-1")], "config: redis_replicas (from COEXIST_REDIS_REPLICAS): expected a whole number from 0 to 16"),
            (&[("COEXIST_HTTP_IDLE_TIMEOUT", "0s")], "config: http_idle_timeout (from COEXIST_HTTP_IDLE_TIMEOUT): must be longer than zero"),
            (&[("COEXIST_HTTP_MAX_BUFFERED_BYTES", "1000")], "config: http_max_buffered_bytes (from COEXIST_HTTP_MAX_BUFFERED_BYTES): expected a whole number from 1048576"),
            (&[("COEXIST_HTTP_MAX_CONNECTIONS", "0")], "config: http_max_connections (from COEXIST_HTTP_MAX_CONNECTIONS): expected a whole number from 1"),
            (&[("COEXIST_REDIS_URL", "nope")], "config: redis_url (from COEXIST_REDIS_URL): not a Redis URL"),
            (&[("COEXIST_LISTEN", "localhost")], "config: listen (from COEXIST_LISTEN):"),
            (&[("COEXIST_LOG_FORMAT", "xml")], "config: log_format (from COEXIST_LOG_FORMAT):"),
            (&[("COEXIST_LOG_CONTENT", "maybe")], "config: log_content (from COEXIST_LOG_CONTENT): expected true or false"),
            (&[("COEXIST_APP_SECRET", "a,,b")], "config: app_secret (from COEXIST_APP_SECRET): an empty secret"),
            (&[("COEXIST_APP_SECRET", "real,change-me")], "config: app_secret (from COEXIST_APP_SECRET): \"change-me\" is a placeholder"),
            (&[("COEXIST_VERIFY_TOKEN", "Your-Token")], "config: verify_token (from COEXIST_VERIFY_TOKEN): \"Your-Token\" is a placeholder"),
        ];
        for (vars, want) in cases {
            let err = Config::load(None, env(vars)).unwrap_err().to_string();
            assert!(err.starts_with(want), "{vars:?}: got {err:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn file_errors_are_one_line_too() {
        let f = file("timeout = 5\n");
        let e = Config::load(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("timeout (from ") && e.contains("expected a duration written as a string"),
            "{e}"
        );
        let f = file("tiemout = \"5d\"\n");
        let e = Config::load(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(e.contains("unknown key `tiemout`"), "{e}");
        let f = file("timeout = \"5d\n");
        let e = Config::load(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("not valid TOML (line 1)") && !e.contains('\n'),
            "{e}"
        );
        let f = file("[numbers.\"410\"]\npartitions = 3\n");
        let e = Config::load(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("numbers.\"410\".partitions") && e.contains("unknown key"),
            "{e}"
        );
        let f = file("[numbers.\"410\"]\ntimeout = \"soon\"\n");
        let e = Config::load(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(
            e.starts_with("config: numbers.\"410\".timeout (from ") && e.contains("not a duration"),
            "{e}"
        );
        let f = file("[numbers.\"41 0\"]\ntimeout = \"2d\"\n");
        let e = Config::load(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(
            e.starts_with("config: numbers.\"41 0\" (from ") && e.contains("not a phone_number_id"),
            "{e}"
        );
        let f = file("partitions = \"many\"\n");
        let e = Config::load(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("partitions (from ") && e.contains("expected a whole number from 1 to 1024"),
            "{e}"
        );
        let e = Config::load(Some(Path::new("/nonexistent/coexist.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
