//! What every process runs on: configuration ([`config`]), HTTP serving under limits
//! ([`http`]), metric names ([`metrics`]), traces ([`trace`]), supervised tasks
//! ([`supervise`]), retrying ([`retry`]) and secrets that never print ([`secret`]).

pub mod config;
pub mod http;
pub mod metrics;
pub mod retry;
pub mod secret;
pub mod supervise;
pub mod trace;
