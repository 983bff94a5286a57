//! Configuration (SPEC section 3): built-in defaults (`config/default.toml`, compiled in), a file
//! holding any subset of the keys (`--config` / `COEXIST_CONFIG`), then environment variables.
//! [`ENV`] is the one list of keys and their variables. A wrong value stops start-up with one
//! line naming the key, where the value came from, and what is wrong.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use redis::IntoConnectionInfo;

use crate::engine::Rules;
use crate::store::RuleBook;

/// The built-in defaults.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Every top-level key and the environment variable that overrides it.
pub const ENV: &[(&str, &str)] = &[
    ("amqp_url", "COEXIST_AMQP_URL"),
    ("redis_url", "COEXIST_REDIS_URL"),
    ("namespace", "COEXIST_NAMESPACE"),
    ("listen", "COEXIST_LISTEN"),
    ("admin_listen", "COEXIST_ADMIN_LISTEN"),
    ("app_secret", "COEXIST_APP_SECRET"),
    ("verify_token", "COEXIST_VERIFY_TOKEN"),
    ("reset_text", "COEXIST_RESET_TEXT"),
    ("timeout", "COEXIST_TIMEOUT"),
    ("session_timeout", "COEXIST_SESSION_TIMEOUT"),
    ("partitions", "COEXIST_PARTITIONS"),
    ("max_body_bytes", "COEXIST_MAX_BODY_BYTES"),
    ("log", "COEXIST_LOG"),
    ("log_format", "COEXIST_LOG_FORMAT"),
    ("log_content", "COEXIST_LOG_CONTENT"),
];

/// Keys a `[numbers."<phone_number_id>"]` table may set.
const NUMBER_KEYS: &[&str] = &["reset_text", "timeout", "session_timeout"];

/// A value that must not be printed (secrets, URLs with passwords).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The whole configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub amqp_url: Secret,
    pub redis_url: Secret,
    pub namespace: String,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Meta app secrets (several during rotation); empty when not configured.
    pub app_secrets: Vec<Secret>,
    pub verify_token: Option<Secret>,
    pub partitions: u16,
    pub max_body_bytes: usize,
    pub log: String,
    pub log_format: LogFormat,
    pub log_content: bool,
    /// reset_text, timeout and session_timeout: the defaults and per-number overrides.
    pub rules: RuleBook,
}

/// Why the configuration was refused: one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(String);

type Table = toml::map::Map<String, toml::Value>;

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
        let mut origin: HashMap<String, String> = HashMap::new();
        let mut numbers = Table::new();
        if let Some(path) = file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("{shown}: cannot read: {e}")))?;
            let parsed: Table = text.parse().map_err(|e: toml::de::Error| {
                let line = e.span().map(|s| text[..s.start].lines().count().max(1));
                let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
                ConfigError(format!(
                    "{shown}: not valid TOML{at}: {}",
                    e.message().replace('\n', " ")
                ))
            })?;
            for (key, value) in parsed {
                if key == "numbers" {
                    numbers = match value {
                        toml::Value::Table(t) => t,
                        _ => return Err(ConfigError(format!("numbers (from {shown}): expected tables [numbers.\"<phone_number_id>\"]"))),
                    };
                } else if ENV.iter().any(|(k, _)| *k == key) {
                    table.insert(key.clone(), value);
                    origin.insert(key, shown.clone());
                } else {
                    let known: Vec<&str> = ENV.iter().map(|(k, _)| *k).collect();
                    return Err(ConfigError(format!(
                        "{shown}: unknown key `{key}` (known: {}, numbers)",
                        known.join(", ")
                    )));
                }
            }
        }
        for (key, var) in ENV {
            if let Some(v) = env(var) {
                table.insert((*key).to_owned(), toml::Value::String(v));
                origin.insert((*key).to_owned(), (*var).to_owned());
            }
        }
        let r = Reader {
            table: &table,
            origin: &origin,
            prefix: String::new(),
        };
        let default_rules = Rules::new(
            &r.string("reset_text")?,
            r.duration("timeout")?,
            r.duration("session_timeout")?,
        );
        let file_shown = file.map(|p| p.display().to_string()).unwrap_or_default();
        let mut per_number = HashMap::new();
        for (pnid, t) in numbers {
            let at = |k: &str| format!("numbers.\"{pnid}\".{k}");
            if !crate::domain::valid_phone_number_id(&pnid) {
                return Err(ConfigError(format!(
                    "numbers.\"{pnid}\" (from {file_shown}): not a phone_number_id"
                )));
            }
            let toml::Value::Table(t) = t else {
                return Err(ConfigError(format!(
                    "numbers.\"{pnid}\" (from {file_shown}): expected a table"
                )));
            };
            if let Some(k) = t.keys().find(|k| !NUMBER_KEYS.contains(&k.as_str())) {
                return Err(ConfigError(format!(
                    "{} (from {file_shown}): unknown key (allowed: {})",
                    at(k),
                    NUMBER_KEYS.join(", ")
                )));
            }
            let mut o: HashMap<String, String> = HashMap::new();
            for k in t.keys() {
                o.insert(k.clone(), file_shown.clone());
            }
            let mut merged = t.clone();
            for k in NUMBER_KEYS {
                if !merged.contains_key(*k) {
                    merged.insert((*k).to_owned(), table[*k].clone());
                }
            }
            let nr = Reader {
                table: &merged,
                origin: &o,
                prefix: format!("numbers.\"{pnid}\"."),
            };
            let rules = Rules::new(
                &nr.string("reset_text")?,
                nr.duration("timeout")?,
                nr.duration("session_timeout")?,
            );
            per_number.insert(pnid, rules);
        }

        let namespace = r.string("namespace")?;
        if !valid_namespace(&namespace) {
            return Err(r.fail(
                "namespace",
                "use 1 to 64 of A-Z a-z 0-9 _ . - starting with a letter or digit",
            ));
        }
        let amqp_url = r.string("amqp_url")?;
        if !(amqp_url.starts_with("amqp://") || amqp_url.starts_with("amqps://")) {
            return Err(r.fail("amqp_url", "expected an amqp:// or amqps:// URL"));
        }
        let redis_url = r.string("redis_url")?;
        if let Err(e) = redis_url.as_str().into_connection_info() {
            return Err(r.fail(
                "redis_url",
                &format!("not a Redis URL ({})", e.to_string().replace('\n', " ")),
            ));
        }
        let app_secrets = match r.optional_string("app_secret")? {
            None => Vec::new(),
            Some(s) => {
                let parts: Vec<&str> = s.split(',').map(str::trim).collect();
                if parts.iter().any(|p| p.is_empty()) {
                    return Err(r.fail("app_secret", "an empty secret in the comma-separated list"));
                }
                parts.into_iter().map(|p| Secret(p.to_owned())).collect()
            }
        };
        let verify_token = r
            .optional_string("verify_token")?
            .filter(|t| !t.is_empty())
            .map(Secret);
        let log_format = match r.string("log_format")?.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(r.fail("log_format", "expected \"text\" or \"json\"")),
        };
        let log = r.string("log")?;
        if tracing_subscriber::EnvFilter::try_new(&log).is_err() {
            return Err(r.fail(
                "log",
                "not a log level or filter (e.g. info, debug, coexist=debug)",
            ));
        }
        Ok(Config {
            amqp_url: Secret(amqp_url),
            redis_url: Secret(redis_url),
            namespace,
            listen: r.addr("listen")?,
            admin_listen: r.addr("admin_listen")?,
            app_secrets,
            verify_token,
            partitions: r.integer("partitions", 1, 1024)? as u16,
            max_body_bytes: r.integer("max_body_bytes", 1024, 64 << 20)? as usize,
            log,
            log_format,
            log_content: r.boolean("log_content")?,
            rules: RuleBook {
                default: default_rules,
                numbers: per_number,
            },
        })
    }
}

fn valid_namespace(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

struct Reader<'a> {
    table: &'a Table,
    origin: &'a HashMap<String, String>,
    /// Written before the key in errors (`numbers."<id>".` for per-number keys).
    prefix: String,
}

impl Reader<'_> {
    fn fail(&self, key: &str, problem: &str) -> ConfigError {
        let from = self
            .origin
            .get(key)
            .map(String::as_str)
            .unwrap_or("built-in default");
        ConfigError(format!("{}{key} (from {from}): {problem}", self.prefix))
    }

    fn optional_string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => {
                Err(self.fail(key, &format!("expected a string, got {}", other.type_str())))
            }
        }
    }

    fn string(&self, key: &str) -> Result<String, ConfigError> {
        self.optional_string(key)?
            .ok_or_else(|| self.fail(key, "missing"))
    }

    fn duration(&self, key: &str) -> Result<Duration, ConfigError> {
        let s = self.string(key)?;
        let d = humantime::parse_duration(s.trim()).map_err(|_| {
            self.fail(
                key,
                &format!("{s:?} is not a duration (write e.g. 30s, 15m, 24h, 7d)"),
            )
        })?;
        if d.is_zero() {
            return Err(self.fail(key, "must be longer than zero"));
        }
        if d > Duration::from_secs(10 * 365 * 86_400) {
            return Err(self.fail(key, "must be at most ten years"));
        }
        Ok(d)
    }

    fn integer(&self, key: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
        let v = match self.table.get(key) {
            Some(toml::Value::Integer(i)) => Some(*i),
            Some(toml::Value::String(s)) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        match v {
            Some(i) if (min..=max).contains(&i) => Ok(i),
            _ => Err(self.fail(key, &format!("expected a whole number from {min} to {max}"))),
        }
    }

    fn boolean(&self, key: &str) -> Result<bool, ConfigError> {
        match self.table.get(key) {
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(toml::Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" | "" => Ok(false),
                _ => Err(self.fail(key, "expected true or false")),
            },
            _ => Err(self.fail(key, "expected true or false")),
        }
    }

    fn addr(&self, key: &str) -> Result<SocketAddr, ConfigError> {
        let s = self.string(key)?;
        s.trim()
            .parse()
            .map_err(|_| self.fail(key, &format!("{s:?} is not an address like 127.0.0.1:8080")))
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
        assert_eq!(c.redis_url.expose(), "redis://127.0.0.1:6379");
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
        assert_eq!(c.app_secrets, vec![Secret("a".into()), Secret("b".into())]);
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
            (&[("COEXIST_AMQP_URL", "http://x")], "config: amqp_url (from COEXIST_AMQP_URL): expected an amqp://"),
            (&[("COEXIST_REDIS_URL", "nope")], "config: redis_url (from COEXIST_REDIS_URL): not a Redis URL"),
            (&[("COEXIST_LISTEN", "localhost")], "config: listen (from COEXIST_LISTEN):"),
            (&[("COEXIST_LOG_FORMAT", "xml")], "config: log_format (from COEXIST_LOG_FORMAT):"),
            (&[("COEXIST_LOG_CONTENT", "maybe")], "config: log_content (from COEXIST_LOG_CONTENT): expected true or false"),
            (&[("COEXIST_APP_SECRET", "a,,b")], "config: app_secret (from COEXIST_APP_SECRET): an empty secret"),
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
            e.contains("timeout (from ") && e.contains("expected a string, got integer"),
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
        let e = Config::load(Some(Path::new("/nonexistent/coexist.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
