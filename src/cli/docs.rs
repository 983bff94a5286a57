//! `coexist schema`, `coexist asyncapi`, `coexist openapi` and `coexist topology`: what coexist publishes, written
//! out, and its exchanges and queues declared.

use coexist::adapters::broker::Topology;
use coexist::runtime::config::Config;

use super::{failed, Failure};

/// `schema`: the JSON Schema of every event body (docs/events.schema.json is its output).
pub fn schema() -> Result<(), Failure> {
    let schema = coexist::core::engine::event::schema();
    println!(
        "{}",
        serde_json::to_string_pretty(&schema).expect("serialises")
    );
    Ok(())
}

/// `asyncapi`: the AsyncAPI 3.0 document (docs/asyncapi.yaml is its output).
pub fn asyncapi() -> Result<(), Failure> {
    print!(
        "{}",
        coexist::tools::asyncapi::yaml(&coexist::tools::asyncapi::document())
    );
    Ok(())
}

/// `openapi`: the OpenAPI 3.1 document of the gate and the admin API (docs/openapi.yaml is its
/// output).
pub fn openapi() -> Result<(), Failure> {
    print!(
        "{}",
        coexist::tools::asyncapi::yaml(&coexist::tools::openapi::document())
    );
    Ok(())
}

/// `topology`: declares the namespace's exchanges and queues and prints them.
pub async fn topology(config: &Config) -> Result<(), Failure> {
    let topology = Topology::new(&config.namespace, config.partitions);
    coexist::adapters::broker::declare(config.amqp_url.expose(), &topology)
        .await
        .map_err(|e| failed(&e))?;
    print!("{}", topology.describe());
    Ok(())
}
