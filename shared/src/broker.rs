//! Connecting to RabbitMQ: TLS, automatic recovery with jittered backoff,
//! and start-up retries.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use crate::retry::RetryPolicy;
use crate::settings::Settings;
use crate::tls::install_crypto_provider;

/// lapin's reconnection after a network failure: 100 ms growing to 3 s,
/// jittered, eight times.
const RECONNECT: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    initial_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(3),
    multiplier: 2.0,
    jitter: 0.5,
};

/// The connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach RabbitMQ at {address}: {error}. Start it, or set AMQP_URL to a broker that \
     runs (the main job and the tests start a private one when nothing answers on the stock \
     port and the server package is installed: see the README)"
)]
pub struct ConnectError {
    /// The host and port tried (never the user or password).
    pub address: String,
    /// What the client said.
    #[source]
    pub error: lapin::Error,
}

/// The host and port of the broker URL `url`, for messages.
fn address_of(url: &str) -> String {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(uri) => format!("{}:{}", uri.authority.host, uri.authority.port),
        Err(_) => "the address in AMQP_URL".to_owned(),
    }
}

/// Opens one connection named `name` (shown in the management UI) with
/// lapin's automatic recovery: after a network failure lapin reconnects with
/// exponential backoff and jitter and replays channels, confirms, QoS,
/// queues, bindings and consumers. When its attempts run out the connection
/// is left errored and callers open a new one.
pub async fn connect(settings: &Settings, name: &str) -> Result<Connection, ConnectError> {
    open(
        settings,
        ConnectionProperties::default()
            .with_connection_name(name.into())
            .enable_auto_recover()
            .with_backoff(RECONNECT.for_lapin()),
    )
    .await
}

/// Opens one connection named `name` without lapin's recovery: a failure
/// ends it (and every channel, consumer and acker on it) and the caller
/// opens a new one. The workers use this: lapin's recovery restarts
/// delivery tags and, after failed handshakes, has left a recovered
/// consumer that received nothing; a fresh connection has neither problem.
pub async fn connect_once(settings: &Settings, name: &str) -> Result<Connection, ConnectError> {
    open(
        settings,
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
}

async fn open(
    settings: &Settings,
    properties: ConnectionProperties,
) -> Result<Connection, ConnectError> {
    install_crypto_provider();
    Connection::connect(settings.expose_amqp_url(), properties)
        .await
        .map_err(|error| ConnectError {
            address: address_of(settings.expose_amqp_url()),
            error,
        })
}

/// Like [`connect`], retried with `policy`'s backoff for at most `patience`:
/// for processes that start before the broker is up.
pub async fn connect_with_retry(
    settings: &Settings,
    name: &str,
    policy: &RetryPolicy,
    patience: Duration,
) -> Result<Connection, ConnectError> {
    policy
        .retry_for(patience, "broker", || connect(settings, name), |_| true)
        .await
}

/// Like [`connect_once`], retried with `policy`'s backoff for at most
/// `patience`.
pub async fn connect_once_with_retry(
    settings: &Settings,
    name: &str,
    policy: &RetryPolicy,
    patience: Duration,
) -> Result<Connection, ConnectError> {
    policy
        .retry_for(
            patience,
            "broker",
            || connect_once(settings, name),
            |_| true,
        )
        .await
}
