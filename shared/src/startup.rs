//! What every Switchyard process does before its own work: connect to the
//! broker and declare (and so check) the topology, and prepare the database.

use std::time::Duration;

use lapin::Connection;
use sqlx::PgPool;

use crate::broker::{ConnectError, connect_with_retry};
use crate::database::{DatabaseError, connect_and_migrate};
use crate::settings::Settings;
use crate::topology::{Topology, TopologyError};

/// How long a starting process waits for the broker (or the database) to come up.
pub const BROKER_PATIENCE: Duration = Duration::from_secs(60);

/// Why a process could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The broker stayed unreachable.
    #[error(transparent)]
    Broker(#[from] ConnectError),
    /// The topology could not be declared, or an existing queue is unsafe.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The database could not be prepared.
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

/// Connects to the broker (retrying while it starts) and declares the
/// topology, refusing to continue when an existing queue is unsafe.
pub async fn prepare_broker(
    settings: &Settings,
    process_name: &str,
) -> Result<(Connection, Topology), StartupError> {
    let connection =
        connect_with_retry(settings, process_name, &settings.retry, BROKER_PATIENCE).await?;
    let topology = Topology::new(settings);
    topology.declare(&connection).await?;
    Ok((connection, topology))
}

/// [`prepare_database`], retrying with the broker's backoff while the
/// server cannot be reached, for at most `patience` (a worker started
/// before its database waits instead of exiting into a restart loop). A bad
/// URL or a failed migration is not retried.
pub async fn prepare_database_with_retry(
    settings: &Settings,
    max_connections: u32,
    patience: Duration,
) -> Result<PgPool, StartupError> {
    let pool = settings
        .retry
        .retry_for(
            patience,
            "database",
            || connect_and_migrate(settings, max_connections),
            |error| matches!(error, DatabaseError::Unreachable { .. }),
        )
        .await?;
    Ok(pool)
}

/// Creates the database if missing and applies the migrations.
pub async fn prepare_database(
    settings: &Settings,
    max_connections: u32,
) -> Result<PgPool, StartupError> {
    Ok(connect_and_migrate(settings, max_connections).await?)
}
