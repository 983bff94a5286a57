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
//! Five parts, and dependencies point one way: `tools` and `services` use `adapters`, `runtime`
//! and `core`; `adapters` use `core`; [`core::engine`] names nothing outside the core.
//!
//! - [`core`]: the pure core, no I/O of its own.
//!   - [`core::domain`]: customers, conversations ([`core::domain::Scope`]) and deterministic ids;
//!     [`core::time`]: instants (Unix ms), RFC 3339 and the injected clock.
//!   - [`core::meta`]: Meta's webhook bodies read into items, tolerant of unknown and odd fields
//!     ([`core::meta::wire`] the shapes, [`core::meta::lenient`] the tolerant readers, [`core::meta::items`] one
//!     change's items, [`core::meta::render`] the one `message.text`, [`core::meta::reply`] a
//!     Cloud API send as the reply gate reads it).
//!   - [`core::engine`]: **the rules R1-R19** as one pure function ([`core::engine::decide`]:
//!     state + input + clock -> decision), its input ([`core::engine::input`]), the events
//!     ([`core::engine::event`]: the header; [`core::engine::event::payload`] each type's fields), the
//!     conversation state ([`core::engine::state`]), the reply gate's judgement
//!     ([`core::engine::reply`]) and **why**: each decision in one sentence
//!     ([`core::engine::why`]).
//!   - [`core::numbers`]: the business numbers: settings in layers, lifecycle states, the book
//!     every decision reads; [`core::onboarding`]: Meta's onboarding rules (the two syncs).
//!   - [`core::store`]: the state store interface, and the in-memory store ([`core::store::memory`]).
//!   - [`core::apply`]: the one loop that applies the rules to stored state, exactly once per input.
//!   - [`core::unit`]: the inbound work unit (one number's items from one webhook).
//! - [`adapters`]: the outside systems.
//!   - [`adapters::broker`]: RabbitMQ: **every exchange and queue name** and their declaration
//!     ([`adapters::broker::topology`]), what is published on the wire ([`adapters::broker::message`]),
//!     confirms ([`adapters::broker::publisher`]), the self-reconnecting link ([`adapters::broker::link`]).
//!   - [`adapters::redis`]: the state in Redis, with **the table of every key**; the commit script
//!     ([`adapters::redis::commit`]), the gate's in-flight replies ([`adapters::redis::reply`]), the
//!     deadline schedule ([`adapters::redis::deadlines`]), the number registry
//!     ([`adapters::redis::numbers`]).
//!   - [`adapters::graph`]: the client to Meta's Graph API (the gate's sends, onboarding's calls).
//! - [`services`]: the long-running parts, each started as a [`services::Part`] (one start/stop
//!   skeleton) and serving its **routes** from its `start`:
//!   - [`services::ingress`]: `/webhook` (signatures, partitions, confirms);
//!   - [`services::worker`]: start and stop; [`services::worker::partitions`] which partitions it
//!     consumes, [`services::worker::membership`] how workers share them, [`services::worker::lanes`]
//!     a lane per business number, [`services::worker::handle`] one delivery,
//!     [`services::worker::marks`] published marks, [`services::worker::sweep`] due timeouts;
//!   - [`services::gate`]: the reply gate (R17), [`services::gate::events`] its events;
//!   - [`services::console`]: the operator console ([`services::console::signin`],
//!     [`services::console::held`], [`services::console::conversation`],
//!     [`services::console::dead`], [`services::console::live`], [`services::console::numbers`],
//!     [`services::console::api`] the admin API, [`services::console::pages`] the HTML);
//!   - [`services::numbers`]: how every process follows the number registry, and the numbers'
//!     activity.
//! - [`tools`]: what operators run by hand: [`tools::process`] and [`tools::summary`] (offline),
//!   [`tools::operator`] (one conversation), [`tools::explain`] (why), [`tools::numbers`],
//!   [`tools::onboard`], [`tools::check`] (the numbers), [`tools::dlq`], [`tools::tail`],
//!   [`tools::send`], [`tools::asyncapi`], [`tools::openapi`]; [`tools::printable`] escapes what
//!   a terminal would act on.
//! - [`runtime`]: what every process runs on: **every configuration key** ([`runtime::config`]),
//!   HTTP serving under limits ([`runtime::http`]), **every metric name** ([`runtime::metrics`]),
//!   traces ([`runtime::trace`]), supervised tasks ([`runtime::supervise`]), retrying
//!   ([`runtime::retry`]), secrets that never print ([`runtime::secret`]).
//!
//! The `coexist` binary's **commands** are in `src/cli/`, one file per subcommand with its
//! arguments.

pub mod adapters;
pub mod core;
pub mod runtime;
pub mod services;
pub mod tools;
