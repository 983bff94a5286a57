//! # coexist
//!
//! Lets a business run the WhatsApp Business App (people on a phone) and the WhatsApp Cloud API
//! (an AI agent) on one number without the two talking over each other. Meta posts every event
//! to one webhook; coexist decides, per customer, whether the AI agent or a human handles each
//! message, and publishes the resulting events to two exchanges, `{ns}.bot` and `{ns}.human_chat`.
//! The contract is `docs/contract.md`; the README shows how to run it.
//!
//! ## Layout
//!
//! - [`meta`]: Meta's webhook bodies read into items (tolerant of unknown and odd fields).
//! - [`render`]: the one rendering of a message into `message.text`.
//! - [`domain`]: customers, conversations (scopes) and deterministic ids.
//! - [`engine`]: the rules R1-R16 as a pure function (state + input + clock -> decision), the
//!   event types ([`engine::event`]: a header and one payload variant per type) and the
//!   conversation state ([`engine::state`]).
//! - [`store`]: conversation state behind one trait, in memory or in Redis, and the [`store::Engine`]
//!   loop that applies the rules atomically and exactly once per input.
//! - [`config`]: the configuration (defaults, file, environment) and its checks.
//! - [`process`]: the offline `coexist process` command; [`summary`]: one readable line per event.
//! - [`operator`]: `coexist conversation show|pause|release`.
//! - [`time`]: instants (Unix ms) and RFC 3339.
//! - [`broker`]: RabbitMQ, one job per file: names and declaration ([`broker::topology`]), the
//!   wire form of what is published ([`broker::message`]), confirms ([`broker::publisher`]), the
//!   self-reconnecting [`broker::Link`].
//! - [`unit`]: the inbound work unit (one conversation's items from one webhook).
//! - [`ingress`]: the webhook endpoint (signatures, partitions, confirms).
//! - [`worker`]: start and stop, the partition manager, a lane per business number, item handling,
//!   the timeout sweeper, partition sharing ([`worker::membership`]).
//! - [`dlq`]: listing and replaying dead letters; [`tail`]: following the events live; [`send`]:
//!   posting signed webhook bodies to a deployment.
//! - [`http`], [`metrics`], [`retry`]: health/metrics endpoints, metric names, retrying until
//!   success or shutdown (shutdown is a `tokio_util` cancellation token; handles stop on drop).

pub mod adapters;
pub mod core;
pub mod runtime;
pub mod services;
pub mod tools;
