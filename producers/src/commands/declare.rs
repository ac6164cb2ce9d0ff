//! `producers declare`: declare the topology, refusing unsafe existing queues.

use shared::settings::Settings;

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let (connection, topology) =
        shared::startup::prepare_broker(settings, "switchyard-declare").await?;
    let _ = connection.close(200, "OK".into()).await;
    println!(
        "topology declared: {} exchanges, {} queues, {} bindings (namespace {:?})",
        topology.exchanges.len(),
        topology.queues.len(),
        topology.bindings.len(),
        topology.namespace
    );
    Ok(())
}
