//! Connecting to RabbitMQ: TLS, automatic recovery with jittered backoff,
//! and start-up retries.

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lapin::tcp::{AMQPUriTcpExt, OwnedTLSConfig};
use lapin::uri::AMQPUri;
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
    match url.parse::<AMQPUri>() {
        Ok(uri) => host_and_port(&uri),
        Err(_) => "the address in AMQP_URL".to_owned(),
    }
}

fn host_and_port(uri: &AMQPUri) -> String {
    format!("{}:{}", uri.authority.host, uri.authority.port)
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
    let urls: Vec<&str> = settings.expose_amqp_urls().collect();
    if let [url] = urls[..] {
        return Connection::connect(url, properties)
            .await
            .map_err(|error| ConnectError {
                address: address_of(url),
                error,
            });
    }
    let addresses = urls
        .iter()
        .map(|url| address_of(url))
        .collect::<Vec<_>>()
        .join(", ");
    let uris = urls
        .iter()
        .map(|url| url.parse::<AMQPUri>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| ConnectError {
            address: addresses.clone(),
            error: lapin::Error::from(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                reason,
            )),
        })?;
    // A node may take the socket and then fail the handshake (it is
    // stopping, or not yet part of the cluster): the next try starts at
    // the next address.
    let mut tries = uris.len();
    loop {
        tries -= 1;
        match connect_to_any(uris.clone(), properties.clone()).await {
            Ok(connection) => return Ok(connection),
            Err(error) if tries == 0 => {
                return Err(ConnectError {
                    address: format!("any of {addresses}"),
                    error,
                });
            }
            Err(error) => {
                tracing::warn!(%error, "broker handshake failed; trying the next address of AMQP_URL");
            }
        }
    }
}

/// Where the next connection to a list of nodes starts: each connection
/// (and each reconnection of lapin's recovery) starts at the address after
/// the previous one's start, so connections spread over the nodes, and a
/// node that takes the socket but fails the handshake is not tried first
/// again.
static NEXT_ADDRESS: AtomicUsize = AtomicUsize::new(0);

/// Opens a connection to the first of `uris` (the nodes of one cluster,
/// one set of credentials) that accepts a socket, in turn from
/// [`NEXT_ADDRESS`]. lapin calls the connector again for each
/// reconnection, so its recovery fails over too.
async fn connect_to_any(
    uris: Vec<AMQPUri>,
    properties: ConnectionProperties,
) -> lapin::Result<Connection> {
    let runtime = lapin::runtime::default_runtime()?;
    let first = uris[0].clone();
    let uris = Arc::new(uris);
    let connector = async move |_: AMQPUri, runtime| {
        let count = uris.len();
        let start = NEXT_ADDRESS.fetch_add(1, Ordering::Relaxed) % count;
        let mut failure = None;
        for step in 0..count {
            let index = (start + step) % count;
            let uri = &uris[index];
            let tls = OwnedTLSConfig::default();
            match AMQPUriTcpExt::connect_with_config_async(uri, tls.as_ref(), &runtime).await {
                Ok(stream) => return Ok(stream),
                Err(error) => {
                    tracing::warn!(address = %host_and_port(uri), %error,
                        "broker node not reachable; trying the next address of AMQP_URL");
                    failure = Some(error);
                }
            }
        }
        Err(lapin::Error::from(failure.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "AMQP_URL lists no address")
        })))
    };
    Connection::connector(first, runtime, connector, properties).await
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
