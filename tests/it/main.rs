//! The integration tests: one binary, one module per concern.

#[macro_use]
mod support;

mod api;
mod cli;
mod cluster;
mod console;
mod deploy;
mod faults;
mod foundations;
mod gate;
mod hardening;
mod identity;
mod invariants;
mod numbers;
mod observability;
mod onboarding;
mod parse;
mod partitions;
mod pipeline;
mod processes;
mod readme;
mod redis_store;
mod reliability;
mod routing;
mod rules;
mod security;
mod supervision;
mod tracing;
mod traffic;
mod why;
