//! The outside systems, each behind one module: RabbitMQ ([`broker`]), Redis ([`redis`]: the
//! conversation state store) and Meta's Graph API ([`graph`]: the client the reply gate
//! forwards through).

pub mod broker;
pub mod graph;
pub mod redis;
