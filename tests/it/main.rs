//! The integration tests: one binary, one module per concern.

#[macro_use]
mod support;

mod cli;
mod cluster;
mod hardening;
mod identity;
mod invariants;
mod parse;
mod pipeline;
mod redis_store;
mod rules;
mod supervision;
mod traffic;
