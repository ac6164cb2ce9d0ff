//! Connecting to RabbitMQ: TLS, automatic recovery with jittered backoff,
//! and start-up retries.

use std::time::Duration;

use backon::ExponentialBuilder;
use lapin::{Connection, ConnectionProperties};

use crate::retry::RetryPolicy;
use crate::settings::Settings;
use crate::tls::install_crypto_provider;

/// The connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the broker: {0}")]
pub struct ConnectError(#[source] pub lapin::Error);

/// Opens one connection named `name` (shown in the management UI) with
/// lapin's automatic recovery: after a network failure lapin reconnects with
/// exponential backoff and jitter and replays channels, confirms, QoS,
/// queues, bindings and consumers. When its attempts run out the connection
/// is left errored and callers open a new one.
pub async fn connect(settings: &Settings, name: &str) -> Result<Connection, ConnectError> {
    install_crypto_provider();
    let reconnect = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(3))
        .with_jitter()
        .with_max_times(8);
    let properties = ConnectionProperties::default()
        .with_connection_name(name.into())
        .enable_auto_recover()
        .with_backoff(reconnect);
    Connection::connect(settings.expose_amqp_url(), properties)
        .await
        .map_err(ConnectError)
}

/// Like [`connect`], retried with `policy`'s backoff for at most `patience`:
/// for processes that start before the broker is up.
pub async fn connect_with_retry(
    settings: &Settings,
    name: &str,
    policy: &RetryPolicy,
    patience: Duration,
) -> Result<Connection, ConnectError> {
    let mut schedule = policy.backoff();
    schedule.max_elapsed_time = Some(patience);
    backoff::future::retry_notify(
        schedule,
        || async { connect(settings, name).await.map_err(backoff::Error::transient) },
        |error: ConnectError, wait: Duration| {
            tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "broker not reachable yet");
        },
    )
    .await
}
