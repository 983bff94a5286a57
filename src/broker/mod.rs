//! RabbitMQ, one job per file:
//!
//! - [`topology`]: every exchange and queue name (the table is there) and their declaration;
//! - [`message`]: what is published, encoded for the wire (events, units, dead letters);
//! - [`publisher`]: confirmed publishing on one channel;
//! - [`link`]: a connection and publisher that re-establish themselves.

pub mod link;
pub mod message;
pub mod publisher;
pub mod topology;

use lapin::{Connection, ConnectionProperties};

pub use link::Link;
pub use message::{
    Outgoing, Stage, ATTEMPTS_HEADER, CONVERSATION_HEADER, ITEM_TYPE, REASON_HEADER, STAGE_HEADER,
    UNIT_TYPE, WEBHOOK_TYPE,
};
pub use publisher::Publisher;
pub use topology::{Topology, DELIVERY_LIMIT};

/// A broker failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("not connected to RabbitMQ")]
    NotConnected,
    #[error("the broker refused a message (nack)")]
    Nack,
    #[error("the broker did not confirm a message (the channel is not in confirm mode)")]
    NotConfirmed,
    #[error("the broker did not confirm in time")]
    ConfirmTimeout,
    #[error(
        "the broker returned an unroutable message: exchange {exchange}, routing key {routing_key}"
    )]
    Returned {
        exchange: String,
        routing_key: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Connects to RabbitMQ under a name the management UI shows.
pub async fn connect(url: &str, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(url, props).await?)
}

/// Declares a namespace's exchanges and queues on a connection of its own (`coexist topology`).
pub async fn declare(url: &str, topology: &Topology) -> Result<()> {
    let conn = connect(url, "coexist-topology").await?;
    let ch = conn.create_channel().await?;
    topology.declare(&ch).await?;
    let _ = conn.close(200, "declared".into()).await;
    Ok(())
}
