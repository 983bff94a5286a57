//! What operators run by hand: offline processing ([`process`], [`summary`]), one
//! conversation's view and control ([`operator`]) and why ([`explain`]), the numbers ([`numbers`], [`onboard`], [`check`]), dead letters ([`dlq`]), following events
//! ([`tail`]), posting signed webhooks ([`send`]) and the AsyncAPI document ([`asyncapi`]); outside
//! text made safe for a terminal ([`printable`]).

pub mod asyncapi;
pub mod check;
pub mod dlq;
pub mod explain;
pub mod numbers;
pub mod onboard;
pub mod openapi;
pub mod operator;
pub mod printable;
pub mod process;
pub mod send;
pub mod summary;
pub mod tail;
