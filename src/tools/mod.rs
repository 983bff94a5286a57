//! What operators run by hand: offline processing ([`process`], [`summary`]), one
//! conversation's view and control ([`operator`]), dead letters ([`dlq`]), following events
//! ([`tail`]), posting signed webhooks ([`send`]) and the AsyncAPI document ([`asyncapi`]).

pub mod asyncapi;
pub mod dlq;
pub mod operator;
pub mod process;
pub mod send;
pub mod summary;
pub mod tail;
