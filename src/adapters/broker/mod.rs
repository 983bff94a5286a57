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

use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties};

pub use link::Link;
pub use message::{
    Outgoing, Seal, Stage, ANSWER_TYPE, ATTEMPTS_HEADER, COMMAND_TYPE, CONVERSATION_HEADER,
    ITEM_TYPE, REASON_HEADER, REPLY_TO, SEAL_TYPE, STAGE_HEADER, UNIT_TYPE, WEBHOOK_TYPE,
};
pub use publisher::Publisher;
pub use topology::{Layout, Topology, DELIVERY_LIMIT, SLOTS};

/// A broker failure.
#[derive(Debug, Clone, thiserror::Error)]
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
    #[error("TLS: {0}")]
    Tls(String),
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
        let tls = tls(nodes[i])?;
        let runtime = lapin::runtime::default_runtime()?;
        let connecting = Connection::connect_with_config(nodes[i], props, tls, runtime);
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
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

/// The query parameter of a node URL that names a PEM file of CA certificates to trust for
/// `amqps://` beside the Web PKI roots (RabbitMQ's own URI parameter of that name).
pub const CA_FILE_PARAMETER: &str = "cacertfile";

/// The TLS settings of a node URL: `amqps://` checks the broker's certificate against the Web PKI
/// roots (rustls), and against the certificates of `cacertfile` when the URL names one.
pub fn tls(url: &str) -> Result<OwnedTLSConfig> {
    let Some(path) = ca_file(url) else {
        return Ok(OwnedTLSConfig::default());
    };
    let pem = std::fs::read_to_string(&path)
        .map_err(|e| Error::Tls(format!("{CA_FILE_PARAMETER} {path}: {e}")))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::Tls(format!(
            "{CA_FILE_PARAMETER} {path}: holds no PEM certificate"
        )));
    }
    Ok(OwnedTLSConfig {
        identity: None,
        cert_chain: Some(pem),
    })
}

/// The `cacertfile` a node URL names, if it names one (percent-decoded).
fn ca_file(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == CA_FILE_PARAMETER).then(|| percent_decoded(v))
    })
}

fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap() * 16 + hex(l).unwrap()) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_url_names_its_ca_file_and_an_unreadable_one_is_said_in_one_line() {
        assert_eq!(ca_file("amqps://u:p@h:5671/%2f"), None);
        assert_eq!(
            ca_file("amqps://u:p@h:5671/%2f?heartbeat=10&cacertfile=%2Fetc%2Fca%20x.pem")
                .as_deref(),
            Some("/etc/ca x.pem")
        );
        assert!(tls("amqps://h/%2f").unwrap().cert_chain.is_none());
        let e = tls("amqps://h/%2f?cacertfile=/nonexistent/ca.pem").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("TLS: cacertfile /nonexistent/ca.pem: "),
            "{e}"
        );
    }
}
