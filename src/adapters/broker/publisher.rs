//! Publishing with confirms: every message persistent and mandatory, the confirms awaited
//! together (pipelined), a nack an error. A message the broker returns (no queue bound to its
//! routing key) is published again for a while: while the partition count changes, a slot is
//! unbound from its old queue for a moment before it is bound to its new one.

use futures_util::future::try_join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::Confirmation;
use lapin::{Channel, Connection};

use super::message::Outgoing;
use super::{Error, Result};

/// How long a publish waits for the broker's confirms before it counts as failed.
pub const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long returned messages are published again before the publish fails.
pub const RETURNED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);
/// The pause before a returned message is published again.
const RETURNED_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Publishes with confirms on one channel.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    /// Opens a channel in confirm mode.
    pub async fn open(conn: &Connection) -> Result<Self> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher { channel })
    }

    /// Puts a channel of one's own in confirm mode and publishes on it (a command's sender,
    /// which consumes its answers on the same channel).
    pub async fn on(channel: Channel) -> Result<Self> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher { channel })
    }

    /// Publishes one message without waiting for its confirm and without `mandatory`: for an
    /// answer to a command's sender, which may be gone (then the broker drops it).
    pub async fn send(&self, m: &Outgoing) -> Result<()> {
        let _confirm = self
            .channel
            .basic_publish(
                ShortString::from(m.exchange.as_str()),
                ShortString::from(m.routing_key.as_str()),
                BasicPublishOptions::default(),
                &m.body,
                m.properties.clone(),
            )
            .await?;
        Ok(())
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes every message (persistent, mandatory) and waits until the broker has confirmed
    /// all of them; the confirms are awaited together, not one by one, for at most
    /// [`CONFIRM_TIMEOUT`] (confirms pending on a connection that died may never resolve).
    pub async fn publish_all(&self, messages: &[Outgoing]) -> Result<()> {
        tokio::time::timeout(CONFIRM_TIMEOUT, self.publish_and_confirm(messages))
            .await
            .map_err(|_| Error::ConfirmTimeout)?
    }

    async fn publish_and_confirm(&self, messages: &[Outgoing]) -> Result<()> {
        let started = std::time::Instant::now();
        let mut waiting: Vec<&Outgoing> = messages.iter().collect();
        loop {
            let returned = self.publish_once(&waiting).await?;
            if returned.is_empty() {
                return Ok(());
            }
            if started.elapsed() >= RETURNED_PATIENCE {
                let m = returned[0];
                return Err(Error::Returned {
                    exchange: m.exchange.clone(),
                    routing_key: m.routing_key.clone(),
                });
            }
            tracing::debug!(
                returned = returned.len(),
                "messages returned unroutable; publishing them again"
            );
            tokio::time::sleep(RETURNED_PAUSE).await;
            waiting = returned;
        }
    }

    /// Publishes each message and awaits the confirms together: the messages the broker
    /// returned.
    async fn publish_once<'m>(&self, messages: &[&'m Outgoing]) -> Result<Vec<&'m Outgoing>> {
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let confirm = self
                .channel
                .basic_publish(
                    ShortString::from(m.exchange.as_str()),
                    ShortString::from(m.routing_key.as_str()),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &m.body,
                    m.properties.clone(),
                )
                .await?;
            confirms.push(confirm);
        }
        let results = try_join_all(confirms).await?;
        let mut returned = Vec::new();
        for (confirmation, m) in results.into_iter().zip(messages) {
            if confirmation.is_nack() {
                return Err(Error::Nack);
            }
            // Not in confirm mode (a channel that lost it): nothing says the broker has it.
            if confirmation == Confirmation::NotRequested {
                return Err(Error::NotConfirmed);
            }
            if confirmation.take_message().is_some() {
                returned.push(*m);
            }
        }
        Ok(returned)
    }
}
