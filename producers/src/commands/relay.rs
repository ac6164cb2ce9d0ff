//! `producers relay`: publish the outbox of `DATABASE_URL`'s database.

use std::time::Duration;

use shared::publish::Publisher;
use shared::settings::Settings;
use tokio_util::sync::CancellationToken;

use crate::cli::RelayArgs;
use crate::relay::{Relay, RelayConfig};

pub async fn run(args: RelayArgs, settings: &Settings) -> anyhow::Result<()> {
    let (connection, topology) =
        shared::startup::prepare_broker(settings, "switchyard-relay").await?;
    let _ = connection.close(200, "OK".into()).await;
    // One connection for the pass's transaction, one for LISTEN, one spare.
    let pool = shared::startup::prepare_database(settings, 3).await?;
    let publisher =
        Publisher::connect(settings, topology.events_exchange(), "switchyard-relay").await?;
    let config = RelayConfig {
        batch_size: args.batch_size,
        poll_interval: Duration::from_millis(args.poll_interval_ms),
        retention: Duration::from_secs(args.retention_hours * 3600),
        ..RelayConfig::default()
    };
    tracing::info!(batch_size = config.batch_size, poll_interval = ?config.poll_interval, "outbox relay running");
    let shutdown = CancellationToken::new();
    tokio::spawn(shared::shutdown::stop_on_signals(
        shutdown.clone(),
        "finishing the current pass",
    ));
    Relay::new(pool.clone(), publisher.clone(), config)
        .run(shutdown)
        .await;
    publisher.close().await;
    // Bounded: a connection still in a statement the database does not
    // answer is dropped with the process.
    shared::database::close(&pool).await;
    tracing::info!("outbox relay stopped");
    Ok(())
}
