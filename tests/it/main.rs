//! The integration tests: one binary, one module per concern.

mod support;

mod cli;
mod parse;
mod pipeline;
mod redis_store;
mod rules;
