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
    #[error("the broker blocks publishers ({0})")]
    Blocked(String),
    #[error(
        "the broker returned an unroutable message: exchange {exchange}, routing key {routing_key}"
    )]
    Returned {
        exchange: String,
        routing_key: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The node URLs of `COEXIST_AMQP_URL`: one, or several comma-separated nodes of one cluster.
pub fn nodes(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// How long one node may take to accept a connection before the next is tried.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects to the first node of `urls` that answers, under a name the management UI shows.
pub async fn connect(urls: &str, name: &str) -> Result<Connection> {
    connect_from(urls, name, 0).await.map(|(conn, _)| conn)
}

/// Connects to the nodes of `urls` in turn, starting with the `first`th (wrapping around):
/// the connection and the index of the node that answered. lapin holds one host per
/// connection, so going on to another node of a cluster is this rotation.
pub async fn connect_from(urls: &str, name: &str, first: usize) -> Result<(Connection, usize)> {
    let nodes = nodes(urls);
    let mut last = Error::NotConnected;
    for k in 0..nodes.len() {
        let i = (first + k) % nodes.len();
        let props = ConnectionProperties::default().with_connection_name(name.into());
        match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(nodes[i], props)).await {
            Ok(Ok(conn)) => return Ok((conn, i)),
            Ok(Err(e)) => {
                tracing::debug!(node = i, error = %e, "a RabbitMQ node did not answer");
                last = e.into();
            }
            Err(_) => {
                tracing::debug!(node = i, "a RabbitMQ node did not answer in time");
                last = Error::NotConnected;
            }
        }
    }
    Err(last)
}

/// Declares a namespace's exchanges and queues on a connection of its own (`coexist topology`).
pub async fn declare(url: &str, topology: &Topology) -> Result<()> {
    let conn = connect(url, "coexist-topology").await?;
    topology.declare(&conn).await?;
    let _ = conn.close(200, "declared".into()).await;
    Ok(())
}
