//! Publishing with confirms: every message persistent and mandatory, the confirms awaited
//! together (pipelined), a nack an error. A message the broker returns (no queue bound to its
//! routing key) is published again for a while: while the partition count changes, a slot is
//! unbound from its old queue for a moment before it is bound to its new one.
//!
//! **Gathering.** A publisher opened with a gathering time (`publish_gather`) does not publish
//! each caller's messages alone: the first caller's messages wait up to that long for others', and
//! all go to the broker together, their confirms awaited together; each caller is answered when
//! the gathering is confirmed (a failure answers every caller of the gathering). Every message is
//! still its own message, confirmed before its caller hears so. While one gathering waits for its
//! confirms the next gathers; a gathering that has enough company closes at once. At a low rate
//! the broker's cost is mostly per wake-up, not per message (docs/benchmarks.md): messages that
//! arrive together share them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::Confirmation;
use lapin::{Channel, Connection};
use tokio::sync::{mpsc, oneshot};

use super::message::Outgoing;
use super::{Error, Result};

/// How long a publish waits for the broker's confirms before it counts as failed.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// How long returned messages are published again before the publish fails.
pub const RETURNED_PATIENCE: Duration = Duration::from_secs(3);
/// The pause before a returned message is published again.
const RETURNED_PAUSE: Duration = Duration::from_millis(20);

/// A gathering holding this many messages closes at once.
const GATHER_ENOUGH: usize = 8;

/// Publishes with confirms on one channel.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    /// Where callers' messages go to be gathered, when gathering.
    gather: Option<mpsc::UnboundedSender<Gathered>>,
    /// Gatherings published so far.
    gatherings: Arc<AtomicU64>,
}

/// One caller's messages waiting in a gathering.
struct Gathered {
    messages: Vec<Outgoing>,
    at: Instant,
    done: oneshot::Sender<Result<()>>,
}

impl Publisher {
    /// Opens a channel in confirm mode.
    pub async fn open(conn: &Connection) -> Result<Self> {
        Self::on(conn.create_channel().await?).await
    }

    /// [`Publisher::open`], gathering callers' messages for up to `within` before publishing
    /// them together (no gathering when it is zero). The gathering ends with the last clone.
    pub async fn open_gathering(conn: &Connection, within: Duration) -> Result<Self> {
        let mut publisher = Self::open(conn).await?;
        if !within.is_zero() {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(gathering(publisher.clone(), rx, within));
            publisher.gather = Some(tx);
        }
        Ok(publisher)
    }

    /// Puts a channel of one's own in confirm mode and publishes on it (a command's sender,
    /// which consumes its answers on the same channel).
    pub async fn on(channel: Channel) -> Result<Self> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            channel,
            gather: None,
            gatherings: Arc::default(),
        })
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

    /// How many gatherings this publisher (and its clones) published.
    pub fn gatherings(&self) -> u64 {
        self.gatherings.load(Ordering::Relaxed)
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes every message (persistent, mandatory) and waits until the broker has confirmed
    /// all of them; the confirms are awaited together, not one by one, for at most
    /// [`CONFIRM_TIMEOUT`] (confirms pending on a connection that died may never resolve).
    /// Gathering, the messages join the current gathering and the answer is the gathering's.
    pub async fn publish_all(&self, messages: &[Outgoing]) -> Result<()> {
        if let Some(gather) = &self.gather {
            let (done, answer) = oneshot::channel();
            let request = Gathered {
                messages: messages.to_vec(),
                at: Instant::now(),
                done,
            };
            gather.send(request).map_err(|_| Error::NotConnected)?;
            // The gathering's own publish is bounded by the same timeout; this bounds the wait
            // behind an earlier gathering as well.
            return match tokio::time::timeout(2 * CONFIRM_TIMEOUT, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(Error::NotConnected),
                Err(_) => Err(Error::ConfirmTimeout),
            };
        }
        tokio::time::timeout(CONFIRM_TIMEOUT, self.publish_and_confirm(messages))
            .await
            .map_err(|_| Error::ConfirmTimeout)?
    }

    async fn publish_and_confirm(&self, messages: &[Outgoing]) -> Result<()> {
        let started = Instant::now();
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

/// Whether company is to be expected: the time between callers, averaged over the last few. A
/// gathering waits only when callers come closer together than the gathering time; at a rate
/// that low that nobody would come meanwhile, waiting would add latency and a timer's wake-up and
/// save nothing.
pub struct Company {
    within: Duration,
    last: Option<Instant>,
    gap: Duration,
}

impl Company {
    pub fn new(within: Duration) -> Self {
        Company {
            within,
            last: None,
            // Company expected until callers show otherwise (a few far apart are enough).
            gap: within,
        }
    }

    /// A caller arrived at `at`.
    pub fn arrived(&mut self, at: Instant) {
        if let Some(last) = self.last {
            let gap = at.saturating_duration_since(last);
            self.gap = (self.gap * 3 + gap) / 4;
        }
        self.last = Some(at);
    }

    /// How long the next gathering waits: the gathering time when company is expected, else
    /// nothing.
    pub fn wait(&self) -> Duration {
        if self.gap <= self.within {
            self.within
        } else {
            Duration::ZERO
        }
    }

    /// When a gathering that closes at `until` stops waiting for its next caller: about two
    /// gaps after the last arrived. When every caller there is waits in it (callers that wait for
    /// their answers), nobody else is coming, and waiting on would only add their latency.
    pub fn next_by(&self, until: Instant) -> Instant {
        match self.last {
            Some(last) => until.min(last + 2 * self.gap),
            None => until,
        }
    }
}

/// Gathers callers' messages and publishes them together: a gathering starts with the first
/// caller waiting and closes `within` after it arrived (at once when callers come further apart
/// than that, and sooner when the next caller is overdue, [`Company`]), or as soon as it holds
/// [`GATHER_ENOUGH`] messages (under load company comes at once, and waiting longer would only
/// slow callers that wait for their answers); it is published while the next gathers, several
/// awaiting their confirms at once. Ends when every gathering publisher is dropped.
async fn gathering(
    direct: Publisher,
    mut callers: mpsc::UnboundedReceiver<Gathered>,
    within: Duration,
) {
    let mut company = Company::new(within);
    while let Some(first) = callers.recv().await {
        company.arrived(first.at);
        // A caller who waited while the last gathering was published has waited already.
        let until = first.at + company.wait();
        let mut count = first.messages.len();
        let mut gathered = vec![first];
        while count < GATHER_ENOUGH {
            let by = company.next_by(until);
            match tokio::time::timeout_at(by.into(), callers.recv()).await {
                Ok(Some(caller)) => {
                    company.arrived(caller.at);
                    count += caller.messages.len();
                    gathered.push(caller);
                }
                Ok(None) | Err(_) => break,
            }
        }
        metrics::histogram!(crate::runtime::metrics::PUBLISH_GATHERED).record(count as f64);
        direct.gatherings.fetch_add(1, Ordering::Relaxed);
        let messages: Vec<Outgoing> = gathered
            .iter_mut()
            .flat_map(|c| std::mem::take(&mut c.messages))
            .collect();
        let direct = direct.clone();
        // Each caller's messages keep their order (published in turn within the gathering);
        // callers of different gatherings were never ordered (they publish side by side).
        tokio::spawn(async move {
            let result = direct.publish_all(&messages).await;
            for caller in gathered {
                let _ = caller.done.send(result.clone());
            }
        });
    }
}
