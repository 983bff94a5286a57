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

/// `topology`: declares the namespace's exchanges and queues, lays out the partitions in force
/// again (unless a change of their count is in progress), and prints them.
pub async fn topology(config: &Config) -> Result<(), Failure> {
    use coexist::services::layout::{tend, Role};
    let topology = Topology::new(&config.namespace, config.partitions);
    let partitions = super::partitions::record(config).await?;
    let conn = coexist::adapters::broker::connect(config.amqp_url.expose(), "coexist-topology")
        .await
        .map_err(|e| failed(&e))?;
    let declared = async {
        topology.declare(&conn).await.map_err(|e| e.to_string())?;
        tend(&partitions, &topology, &conn, "topology", Role::Repair)
            .await
            .map_err(|e| e.to_string())
    };
    let record = declared.await;
    let _ = conn.close(200, "declared".into()).await;
    let record = record.map_err(|e| failed(&e))?;
    print!("{}", topology.describe(&record.layout));
    if record.change.is_some() {
        println!("{}", record.describe());
    }
    Ok(())
}
