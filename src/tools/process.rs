//! `coexist process`: webhook bodies through the engine with in-memory state, offline.
//!
//! The clock is the items' own timestamps (never going backwards; an item without one is dated
//! the latest time seen, else now), so a run is deterministic,
//! and a pause deadline that falls between two items is released before the later one.

use std::io::Write;
use std::sync::Arc;

use crate::core::apply::{Applied, Applier};
use crate::core::engine::event::{Outbound, Payload, ReleaseReason};
use crate::core::engine::Input;
use crate::core::engine::RuleBook;
use crate::core::meta::parse_body;
use crate::core::store::memory::MemoryStore;
use crate::core::time::Millis;

/// How many due deadlines are released per step.
const RELEASE_BATCH: usize = 1000;

/// Why processing stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{source_name}: {reason}")]
    BadBody { source_name: String, reason: String },
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
    #[error("writing output: {0}")]
    Write(#[from] std::io::Error),
    #[error("{0}")]
    Store(#[from] crate::core::store::Error),
}

/// One input: a name for messages (a path and line, or `stdin`) and its bytes.
pub struct Source {
    pub name: String,
    pub text: String,
}

/// Splits a source into bodies: the whole text when it is one JSON value, otherwise one body
/// per non-empty line. Each body comes with its name for error messages.
pub fn bodies(source: &Source) -> Vec<(String, &str)> {
    let trimmed = source.text.trim();
    if trimmed.is_empty() {
        return Vec::new();
    }
    if serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_ok() {
        return vec![(source.name.clone(), trimmed)];
    }
    source
        .text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (format!("{}:{}", source.name, i + 1), l))
        .collect()
}

/// How `process` prints events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// One JSON line per event: `{"exchange", "routing_key", "event"}`.
    #[default]
    Json,
    /// One aligned, readable line per event ([`crate::tools::summary::line`]).
    Summary,
}

impl Format {
    /// An input's events; with `explain`, each with the sentence of the decision that made it
    /// (JSON: a `why` field; summary: a line under them), and a decision that made no event as
    /// its sentence alone.
    fn write(self, out: &mut impl Write, applied: &Applied, explain: bool) -> std::io::Result<()> {
        let why_of = |e: &Outbound| -> Option<&str> {
            let timeout = matches!(&e.event.payload, Payload::Released(r) if r.reason == ReleaseReason::Timeout);
            let entry = match timeout {
                true => applied.trail.iter().find(|t| t.rule == "R7"),
                false => applied.trail.iter().rfind(|t| t.rule != "R7"),
            };
            entry.or(applied.trail.last()).map(|t| t.why.as_str())
        };
        let mut said: Option<&str> = None;
        for e in &applied.events {
            let why = why_of(e).filter(|_| explain);
            match self {
                Format::Json => {
                    let mut line = e.to_line();
                    if let Some(w) = why {
                        line = format!(
                            "{},\"why\":{}}}",
                            &line[..line.len() - 1],
                            serde_json::Value::from(w)
                        );
                    }
                    writeln!(out, "{line}")?;
                }
                Format::Summary => {
                    writeln!(out, "{}", crate::tools::summary::line(e))?;
                    if let Some(w) = why.filter(|w| said != Some(*w)) {
                        writeln!(
                            out,
                            "           why: {}",
                            crate::tools::printable::escape(w)
                        )?;
                        said = Some(w);
                    }
                }
            }
        }
        if explain && applied.events.is_empty() {
            for t in &applied.trail {
                match self {
                    Format::Json => writeln!(
                        out,
                        "{}",
                        serde_json::json!({"item": t.item, "rule": t.rule, "why": t.why})
                    )?,
                    Format::Summary => writeln!(
                        out,
                        "           why: {}",
                        crate::tools::printable::escape(&t.why)
                    )?,
                }
            }
        }
        Ok(())
    }
}

/// The offline processor: one engine over memory, and the clock.
pub struct Processor {
    engine: Applier<MemoryStore>,
    format: Format,
    /// Print why beside each event (`--explain`).
    explain: bool,
    /// The latest time seen (none before the first item with a timestamp).
    clock: Option<Millis>,
}

impl Processor {
    pub fn new(rules: Arc<RuleBook>, format: Format) -> Self {
        Processor {
            engine: Applier::new(MemoryStore::new(), rules),
            format,
            explain: false,
            clock: None,
        }
    }

    /// The same processor printing why beside each event.
    pub fn explaining(mut self, explain: bool) -> Self {
        self.explain = explain;
        self
    }

    pub fn engine(&self) -> &Applier<MemoryStore> {
        &self.engine
    }

    /// Processes one body, writing a line per event. A body that is not a webhook is an error
    /// (and nothing of it is processed).
    pub async fn body(
        &mut self,
        name: &str,
        body: &str,
        out: &mut impl Write,
    ) -> Result<(), Error> {
        let parsed = parse_body(body.as_bytes()).map_err(|e| Error::BadBody {
            source_name: name.to_owned(),
            reason: e.to_string(),
        })?;
        crate::core::meta::report(&parsed);
        for part in &parsed.unreadable {
            tracing::warn!(
                source = name,
                reason = part.reason,
                "a part that cannot be placed was kept aside"
            );
        }
        for mut item in parsed.items {
            // An item without a time (nor its entry's) is dated the latest time seen, else now.
            let at = item
                .timestamp
                .unwrap_or_else(|| self.clock.unwrap_or_else(Millis::now));
            item.timestamp = Some(at);
            let clock = self.clock.map_or(at, |c| c.max(at));
            self.clock = Some(clock);
            self.release_due(clock, out).await?;
            let applied = self.engine.apply(&Input::Item(&item), clock).await?;
            self.format.write(out, &applied, self.explain)?;
            self.engine.acknowledge(&applied).await?;
        }
        Ok(())
    }

    /// Processes every body of a source, in order.
    pub async fn source(&mut self, source: &Source, out: &mut impl Write) -> Result<(), Error> {
        for (name, body) in bodies(source) {
            self.body(&name, body, out).await?;
        }
        Ok(())
    }

    async fn release_due(&mut self, clock: Millis, out: &mut impl Write) -> Result<(), Error> {
        loop {
            let released = self.engine.release_due(clock, RELEASE_BATCH).await?;
            if released.is_empty() {
                return Ok(());
            }
            for applied in &released {
                self.format.write(out, applied, self.explain)?;
                self.engine.acknowledge(applied).await?;
            }
        }
    }
}

/// Runs `coexist process` over the named files (stdin when none is named), each read when its
/// turn comes: stops at the first bad body or unreadable file, after every good body before it
/// has been processed and printed.
pub async fn run(
    rules: Arc<RuleBook>,
    format: Format,
    explain: bool,
    files: &[std::path::PathBuf],
    out: &mut impl Write,
) -> Result<(), Error> {
    let mut p = Processor::new(rules, format).explaining(explain);
    let result = async {
        if files.is_empty() {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| Error::Read("stdin".into(), e))?;
            return p
                .source(
                    &Source {
                        name: "stdin".into(),
                        text,
                    },
                    out,
                )
                .await;
        }
        for path in files {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| Error::Read(name.clone(), e))?;
            p.source(&Source { name, text }, out).await?;
        }
        Ok(())
    }
    .await;
    out.flush()?;
    result
}
