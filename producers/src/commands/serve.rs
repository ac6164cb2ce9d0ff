//! `producers serve`: the CloudEvents HTTP gateway.

use shared::publish::Publisher;
use shared::settings::Settings;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::gateway::{GatewayState, serve};

/// Database connections: a request holds one while the broker confirms.
const POOL_SIZE: u32 = 32;

pub async fn run(args: ServeArgs, settings: &Settings) -> anyhow::Result<()> {
    let config = args.config();
    let (connection, topology) =
        shared::startup::prepare_broker(settings, "switchyard-gateway").await?;
    let _ = connection.close(200, "OK".into()).await;
    let pool = shared::startup::prepare_database(settings, POOL_SIZE).await?;
    let publisher =
        Publisher::connect(settings, topology.events_exchange(), "switchyard-gateway").await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, exchange = topology.events_exchange(), "gateway listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(shared::shutdown::stop_on_signals(
        shutdown.clone(),
        "draining in-flight requests",
    ));
    let state = GatewayState::new(settings.clone(), config, pool.clone(), publisher.clone());
    serve(listener, state, shutdown).await?;
    publisher.close().await;
    shared::database::close(&pool).await;
    tracing::info!("gateway stopped");
    Ok(())
}
