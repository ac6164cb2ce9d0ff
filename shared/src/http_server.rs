//! The HTTP/1.1 server of every Switchyard endpoint open to clients (the
//! producers' gateway, the operations API): hyper under the axum router,
//! with what `axum::serve` does not give — a deadline for each request's headers
//! (which also closes kept-alive connections left idle), a limit on open
//! connections in all and per client address, the client's address for
//! the handlers, a JSON 500 instead of a dropped connection if a handler
//! ever panics, and a graceful drain.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Limits on connections and how long a client may take to send headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest wait for a request's headers, from the first byte awaited —
    /// on a new connection or on a kept-alive idle one — to the last.
    pub header_timeout: Duration,
    /// Most connections open at once; past it the gateway stops accepting
    /// (new clients wait in the listen backlog) until one closes.
    pub max_connections: usize,
    /// Most connections open at once from one client address; past it a new
    /// connection from that address is closed at once.
    pub max_connections_per_address: usize,
}

/// Declares `$name`, a server's command-line arguments for its
/// [`ConnectionLimits`] and [`TrustedProxies`] (flattened into the
/// gateway's and the operations API's arguments), read from the
/// environment variables `<prefix>_HEADER_TIMEOUT_MS`,
/// `<prefix>_MAX_CONNECTIONS` and `<prefix>_MAX_CONNECTIONS_PER_ADDRESS`
/// and `SWITCHYARD_TRUSTED_PROXIES`. The calling crate depends on `clap`.
#[macro_export]
macro_rules! server_limit_args {
    (
        $(#[$meta:meta])*
        $name:ident,
        env_prefix: $prefix:literal,
        max_connections: $max:literal,
        max_connections_per_address: $per:literal $(,)?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, clap::Args)]
        pub struct $name {
            /// Longest wait for a request's headers, on a new connection or an
            /// idle kept-alive one (the connection is closed after).
            #[arg(
                long,
                env = concat!($prefix, "_HEADER_TIMEOUT_MS"),
                default_value_t = 10_000,
                value_parser = clap::value_parser!(u64).range(1..=3_600_000)
            )]
            pub header_timeout_ms: u64,
            /// Most connections open at once (new ones wait in the listen backlog).
            #[arg(
                long,
                env = concat!($prefix, "_MAX_CONNECTIONS"),
                default_value_t = $max,
                value_parser = clap::value_parser!(u32).range(1..)
            )]
            pub max_connections: u32,
            /// Most connections open at once from one client address (more are
            /// closed on arrival).
            #[arg(
                long,
                env = concat!($prefix, "_MAX_CONNECTIONS_PER_ADDRESS"),
                default_value_t = $per,
                value_parser = clap::value_parser!(u32).range(1..)
            )]
            pub max_connections_per_address: u32,
            /// Proxies (addresses or CIDR networks, comma-separated) whose
            /// `X-Forwarded-For` names the client: the per-address limits then
            /// count the real client, not the proxy. Read from no one else.
            #[arg(
                long,
                env = "SWITCHYARD_TRUSTED_PROXIES",
                default_value = "",
                value_parser = $crate::http_server::TrustedProxies::parse
            )]
            pub trusted_proxies: $crate::http_server::TrustedProxies,
        }

        impl $name {
            /// The header deadline and connection limits these arguments describe.
            pub fn limits(&self) -> $crate::http_server::ConnectionLimits {
                $crate::http_server::ConnectionLimits {
                    header_timeout: ::std::time::Duration::from_millis(self.header_timeout_ms),
                    max_connections: self.max_connections as usize,
                    max_connections_per_address: self.max_connections_per_address as usize,
                }
            }
        }
    };
}

/// What a server says and counts beside its limits.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Proxies whose `X-Forwarded-For` names the client (see
    /// [`TrustedProxies`]).
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Connection limits and the header deadline.
    pub limits: ConnectionLimits,
    /// The `message` of the JSON 500 answered when a handler panics (what
    /// the client may conclude about its request).
    pub panic_message: &'static str,
    /// Called for each connection closed on arrival (per-address limit),
    /// to count it.
    pub on_refused: fn(),
}

/// Serves `app` on `listener` until `shutdown`, then stops accepting and
/// waits for the requests in flight (idle connections are closed at once).
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    options: ServerOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = options.limits;
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_address = PerAddress::new(limits.max_connections_per_address.max(1));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&open).acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, typically: wait, do not spin.
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(address_slot) = per_address.enter(peer.ip()) else {
            tracing::info!(client = %peer.ip(), "too many connections from one address; closed");
            (options.on_refused)();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper::service::service_fn(with_client(
            app.clone(),
            peer,
            Arc::clone(&options.trusted_proxies),
            options.panic_message,
        ));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors here are the client's (reset, header timeout): nothing to answer.
            if let Err(error) = connection.await {
                tracing::debug!(%error, client = %peer, "connection ended");
            }
            drop((slot, address_slot));
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A per-request service: the router, told the client's address, with a
/// panic turned into a 500.
fn with_client(
    app: Router,
    peer: SocketAddr,
    trusted: Arc<TrustedProxies>,
    panic_message: &'static str,
) -> impl Fn(
    Request<Incoming>,
) -> futures_util::future::BoxFuture<'static, Result<Response<Body>, Infallible>>
+ Clone {
    move |mut request: Request<Incoming>| {
        let client = trusted.client_of(peer.ip(), request.headers());
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(client, peer.port())));
        let app = app.clone();
        async move {
            let answer = AssertUnwindSafe(app.oneshot(request.map(Body::new)))
                .catch_unwind()
                .await;
            let response = match answer {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_panic) => {
                    tracing::error!(client = %peer, "a request handler panicked");
                    internal_error(panic_message)
                }
            };
            Ok(response)
        }
        .boxed()
    }
}

/// The answer to a request whose handler panicked (a bug): JSON, not a
/// dropped connection.
fn internal_error(message: &'static str) -> Response<Body> {
    let body = serde_json::json!({
        "error": "internal",
        "message": message,
    });
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}

/// Open connections per client address.
#[derive(Clone)]
struct PerAddress {
    limit: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open connection from an address; counted down when dropped.
struct AddressSlot {
    address: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Arc::default(),
        }
    }

    fn enter(&self, address: IpAddr) -> Option<AddressSlot> {
        let mut open = lock(&self.open);
        let count = open.entry(address).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            address,
            open: Arc::clone(&self.open),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The proxies in front of a server (a TLS terminator, a load balancer)
/// that may say who the client is. A request whose TCP peer is one of them
/// is taken to come from the address `X-Forwarded-For` names: the nearest
/// entry, reading from the right, that is not itself a trusted proxy. The
/// header is never read from anyone else (a client could name any address),
/// and without trusted proxies it is ignored: the client is the TCP peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// No proxy is trusted.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads a comma-separated list of addresses and networks
    /// (`10.0.0.7, 10.1.0.0/16, ::1`); empty for none.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.parse::<ipnet::IpNet>()
                    .or_else(|_| part.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{part:?} is not an IP address or network (CIDR)"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client of a request from `peer` with `headers`.
    pub fn client_of(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        // Every X-Forwarded-For header, in order, as one list.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            let Ok(address) = hop.parse::<IpAddr>() else {
                // Unreadable: the last proxy trusted is as far as we know.
                return client;
            };
            client = address;
            if !self.trusts(address) {
                return address;
            }
        }
        client
    }
}

/// The answer of a `/readyz` endpoint: 200 when both the broker and the
/// database answered, 503 otherwise, with each one's state as JSON
/// (`{"broker": true, "database": false}`) so a supervisor or a person sees
/// which one is missing.
pub fn readiness(broker: bool, database: bool) -> Response<Body> {
    let status = if broker && database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({"broker": broker, "database": database})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_own_allowance_and_gets_it_back() {
        let per_address = PerAddress::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = per_address.enter(a).unwrap();
        let _second = per_address.enter(a).unwrap();
        assert!(per_address.enter(a).is_none());
        assert!(per_address.enter(b).is_some());
        drop(first);
        assert!(per_address.enter(a).is_some());
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies_and_only_as_far_as_they_go() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7").unwrap();
        let headers = |values: &[&str]| {
            let mut headers = axum::http::HeaderMap::new();
            for value in values {
                headers.append("x-forwarded-for", value.parse().unwrap());
            }
            headers
        };
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let client: IpAddr = "198.51.100.4".parse().unwrap();
        // From the proxy: the nearest untrusted hop, whatever the client
        // put further left.
        let forged = headers(&["1.2.3.4, 198.51.100.4", "10.0.0.3"]);
        assert_eq!(trusted.client_of(proxy, &forged), client);
        // From anyone else the header is ignored.
        assert_eq!(trusted.client_of(stranger, &forged), stranger);
        assert_eq!(TrustedProxies::none().client_of(proxy, &forged), proxy);
        // An unreadable hop stops the walk at the last trusted one.
        let garbled = headers(&["198.51.100.4, nonsense"]);
        assert_eq!(trusted.client_of(proxy, &garbled), proxy);
        assert_eq!(trusted.client_of(proxy, &headers(&[])), proxy);
        // IPv4 seen as IPv6 (a dual-stack listener) is still trusted.
        let mapped: IpAddr = "::ffff:192.168.1.7".parse().unwrap();
        assert_eq!(
            trusted.client_of(mapped, &headers(&["198.51.100.4"])),
            client
        );
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.local").is_err());
        assert_eq!(TrustedProxies::parse(" ").unwrap(), TrustedProxies::none());
    }
}
