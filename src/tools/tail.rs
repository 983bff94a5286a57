//! `coexist tail`: the events as they are published, through a queue of its own (exclusive,
//! deleted when it disconnects), bound to the exchanges asked for. It never takes events from
//! the default queues.

use std::io::Write;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use crate::adapters::broker::message::{header, text};
use crate::adapters::broker::{self, Topology, CONVERSATION_HEADER};
use crate::core::domain::{CustomerKey, Scope};
use crate::core::engine::event::{Event, Exchange, Outbound};

/// What to show.
#[derive(Debug, Clone)]
pub struct Options {
    /// The exchanges to follow.
    pub exchanges: Vec<Exchange>,
    /// Only this conversation: `{phone_number_id}:{customer}`, the customer by any of its names.
    pub conversation: Option<Scope>,
    /// Each event's body as one JSON line, instead of a readable line.
    pub json: bool,
}

impl Options {
    /// Whether an event is one to show.
    pub fn wants(&self, header: &str, event: &Event) -> bool {
        let Some(scope) = &self.conversation else {
            return true;
        };
        if header == scope.to_string() {
            return true;
        }
        let names: Vec<CustomerKey> = event.customer.names();
        event.phone_number_id == scope.phone_number_id
            && scope.customer.as_ref().is_some_and(|c| names.contains(c))
    }
}

/// Why tailing stopped early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Broker(#[from] broker::Error),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<lapin::Error> for Error {
    fn from(e: lapin::Error) -> Self {
        Error::Broker(e.into())
    }
}

/// An event as it was published, taken from a queue of one's own.
#[derive(Debug, Clone)]
pub struct Shown {
    pub exchange: Exchange,
    /// Its `type` (empty for a body that is not an event this build knows).
    pub kind: String,
    /// Its body, as published.
    pub json: String,
    /// One readable line: its time, then [`crate::tools::summary::line`] (or the body as it came).
    pub line: String,
    /// Its business number (`None` for a body that is not an event this build knows).
    pub number: Option<String>,
}

/// A queue of one's own (exclusive, deleted when it disconnects) bound to the exchanges asked
/// for, consumed: `coexist tail`, and the console's live view.
pub struct Follow {
    conn: lapin::Connection,
    consumer: lapin::Consumer,
    human_chat: String,
    /// The exchanges followed, by name.
    pub exchanges: Vec<String>,
}

impl Follow {
    /// Connects, declares the queue and binds it with `#` to each exchange.
    pub async fn open(
        url: &str,
        topology: &Topology,
        exchanges: &[Exchange],
        name: &str,
    ) -> Result<Follow, Error> {
        let conn = broker::connect(url, name).await?;
        topology.declare(&conn).await?;
        let ch = conn.create_channel().await?;
        let own = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let queue = ch
            .queue_declare("".into(), own, FieldTable::default())
            .await?;
        let queue = queue.name().as_str().to_owned();
        for e in exchanges {
            ch.queue_bind(
                queue.as_str().into(),
                topology.exchange(*e).into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let consumer = ch
            .basic_consume(
                queue.as_str().into(),
                name.into(),
                no_ack,
                FieldTable::default(),
            )
            .await?;
        Ok(Follow {
            conn,
            consumer,
            human_chat: topology.exchange(Exchange::HumanChat).to_owned(),
            exchanges: exchanges
                .iter()
                .map(|e| topology.exchange(*e).to_owned())
                .collect(),
        })
    }

    /// The next event `options` want; `None` when the stream ends (the connection was lost).
    pub async fn next(&mut self, options: &Options) -> Option<Result<Shown, Error>> {
        loop {
            let d = match self.consumer.next().await? {
                Ok(d) => d,
                Err(e) => return Some(Err(e.into())),
            };
            let header = header(d.properties.headers(), CONVERSATION_HEADER)
                .and_then(text)
                .unwrap_or_default();
            let json = String::from_utf8_lossy(&d.data).trim().to_owned();
            let exchange = match d.exchange.as_str() == self.human_chat {
                true => Exchange::HumanChat,
                false => Exchange::Bot,
            };
            let shown = match Event::from_json(&json) {
                Ok(event) if !options.wants(&header, &event) => continue,
                Ok(event) => {
                    let at = event.occurred_at.clone();
                    let kind = event.name().to_owned();
                    let number = Some(event.phone_number_id.clone());
                    let o = Outbound::new(exchange, header, event);
                    let line = format!("{at}  {}", crate::tools::summary::line(&o));
                    Shown {
                        exchange,
                        kind,
                        json,
                        line,
                        number,
                    }
                }
                // A type this build does not know: shown as it came.
                Err(_) if options.conversation.is_some() => continue,
                Err(_) => Shown {
                    exchange,
                    kind: String::new(),
                    line: crate::tools::printable::escape(&json).into_owned(),
                    json,
                    number: None,
                },
            };
            return Some(Ok(shown));
        }
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "followed".into()).await;
    }
}

/// Follows the events until `stop`; writes one line per event shown. `ready` is told the queue
/// is bound (events published from then on are shown). Returns how many were shown.
pub async fn run(
    url: &str,
    topology: &Topology,
    options: &Options,
    stop: CancellationToken,
    ready: impl FnOnce(&str),
    out: &mut impl Write,
) -> Result<usize, Error> {
    let mut follow = Follow::open(url, topology, &options.exchanges, "coexist-tail").await?;
    ready(&follow.exchanges.join(", "));
    let mut shown = 0;
    loop {
        let next = tokio::select! {
            n = follow.next(options) => n,
            _ = stop.cancelled() => break,
        };
        let Some(event) = next else { break };
        let event = event?;
        let line = match options.json {
            true => event.json,
            false => event.line,
        };
        writeln!(out, "{line}")?;
        out.flush()?;
        shown += 1;
    }
    follow.close().await;
    Ok(shown)
}
