//! `coexist tail`: the events as they are published, through a queue of its own (exclusive,
//! deleted when it disconnects), bound to the exchanges asked for. It never takes events from
//! the default queues.

use std::io::Write;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use crate::broker::message::{header, text};
use crate::broker::{self, Topology, CONVERSATION_HEADER};
use crate::domain::{CustomerKey, Scope};
use crate::engine::event::{Event, Exchange, Outbound};

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
    fn wants(&self, header: &str, event: &Event) -> bool {
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
    let conn = broker::connect(url, "coexist-tail").await?;
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
    let name = queue.name().as_str().to_owned();
    for e in &options.exchanges {
        let exchange = topology.exchange(*e);
        let bind = QueueBindOptions::default();
        ch.queue_bind(
            name.as_str().into(),
            exchange.into(),
            "#".into(),
            bind,
            FieldTable::default(),
        )
        .await?;
    }
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = ch
        .basic_consume(
            name.as_str().into(),
            "coexist-tail".into(),
            no_ack,
            FieldTable::default(),
        )
        .await?;
    let exchanges: Vec<&str> = options
        .exchanges
        .iter()
        .map(|e| topology.exchange(*e))
        .collect();
    ready(&exchanges.join(", "));
    let mut shown = 0;
    loop {
        let delivery = tokio::select! {
            d = consumer.next() => d,
            _ = stop.cancelled() => break,
        };
        let Some(delivery) = delivery else { break };
        let d = delivery?;
        let header = header(d.properties.headers(), CONVERSATION_HEADER)
            .and_then(text)
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&d.data);
        let exchange = match d.exchange.as_str() {
            x if x == topology.exchange(Exchange::HumanChat) => Exchange::HumanChat,
            _ => Exchange::Bot,
        };
        let line = match Event::from_json(&body) {
            Ok(event) if !options.wants(&header, &event) => continue,
            Ok(_) if options.json => body.trim().to_owned(),
            Ok(event) => {
                let at = event.occurred_at.clone();
                let o = Outbound::new(exchange, header, event);
                format!("{at}  {}", crate::summary::line(&o))
            }
            // A type this build does not know: shown as it came.
            Err(_) if options.conversation.is_some() => continue,
            Err(_) => body.trim().to_owned(),
        };
        writeln!(out, "{line}")?;
        out.flush()?;
        shown += 1;
    }
    let _ = ch.close(200, "tail ended".into()).await;
    let _ = conn.close(200, "tail ended".into()).await;
    Ok(shown)
}
