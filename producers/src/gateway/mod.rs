//! The CloudEvents HTTP ingestion gateway (`producers serve`).
//!
//! - [`cloudevents`]: the HTTP protocol binding (structured, binary, batch).
//! - [`api_keys`], [`grants`], [`authentication`]: who may publish what.
//! - [`rate_limit`]: per-key events per second.
//! - [`accepted_events`]: idempotent acceptance within a window.
//! - [`ingest`]: `POST /events`, from request to broker confirm.
//! - [`error`]: every non-202 answer.
//! - [`server`]: HTTP/1.1 with header deadlines and connection limits.
//!
//! The routes are listed once, in [`ROUTES`]; the OpenAPI document
//! (`producers/openapi.json`, served at `/openapi.json`) is checked against
//! that list by a test.

pub mod accepted_events;
pub mod api_keys;
pub mod authentication;
pub mod cloudevents;
pub mod error;
pub mod grants;
pub mod ingest;
pub mod metrics;
pub mod rate_limit;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use shared::publish::Publisher;
use shared::settings::Settings;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::authentication::Authenticator;
use self::rate_limit::RateLimits;

/// The OpenAPI 3 document of the gateway, as checked in.
pub const OPENAPI_DOCUMENT: &str = include_str!("../../openapi.json");

/// The gateway's limits and timings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most events in one batched request.
    pub max_batch_events: usize,
    /// Longest a request may take, body and broker confirms included.
    pub request_timeout: Duration,
    /// How long an accepted event id is remembered.
    pub idempotency_window: Duration,
    /// How long an authentication answer is cached (and so how long a
    /// revoked key may still work).
    pub key_cache_ttl: Duration,
    /// Key-store lookups (keys not in the cache) one client address may
    /// cause per second; twice as many at once.
    pub key_lookups_per_address: u32,
    /// Header deadline and connection limits.
    pub connections: server::ConnectionLimits,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            max_batch_events: 500,
            request_timeout: Duration::from_secs(10),
            idempotency_window: Duration::from_secs(24 * 3600),
            key_cache_ttl: Duration::from_secs(5),
            key_lookups_per_address: 20,
            connections: server::ConnectionLimits {
                header_timeout: Duration::from_secs(10),
                max_connections: 1024,
                max_connections_per_address: 256,
            },
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct GatewayState {
    /// Process settings (event size limit, publish timeouts).
    pub settings: Settings,
    /// Limits and timings.
    pub config: GatewayConfig,
    /// Keys and accepted ids.
    pub pool: PgPool,
    /// Publishes with confirms to the events exchange.
    pub publisher: Publisher,
    /// Checks API keys.
    pub authenticator: Arc<Authenticator>,
    /// Per-key rates.
    pub rate_limits: Arc<RateLimits>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

impl GatewayState {
    /// State over an open pool and publisher.
    pub fn new(
        settings: Settings,
        config: GatewayConfig,
        pool: PgPool,
        publisher: Publisher,
    ) -> Self {
        Self {
            authenticator: Arc::new(Authenticator::new(
                pool.clone(),
                config.key_cache_ttl,
                config.key_lookups_per_address,
            )),
            rate_limits: Arc::new(RateLimits::default()),
            metrics: shared::metrics_recorder::install(),
            settings,
            config,
            pool,
            publisher,
        }
    }
}

/// One route: method, path, what it does (for the OpenAPI drift test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path.
    pub path: &'static str,
}

/// Every route the gateway serves.
pub const ROUTES: [Route; 5] = [
    Route {
        method: Method::POST,
        path: "/events",
    },
    Route {
        method: Method::GET,
        path: "/healthz",
    },
    Route {
        method: Method::GET,
        path: "/readyz",
    },
    Route {
        method: Method::GET,
        path: "/metrics",
    },
    Route {
        method: Method::GET,
        path: "/openapi.json",
    },
];

fn handler_for(route: &Route) -> MethodRouter<GatewayState> {
    match route.path {
        "/events" => post(ingest::post_events),
        "/healthz" => get(|| async { Json(json!({"status": "alive"})) }),
        "/readyz" => get(readiness),
        "/metrics" => {
            get(|State(state): State<GatewayState>| async move { state.metrics.render() })
        }
        "/openapi.json" => get(|| async {
            (
                [(header::CONTENT_TYPE, "application/json")],
                OPENAPI_DOCUMENT,
            )
        }),
        other => unreachable!("no handler for route {other}"),
    }
}

/// The gateway's routes over `state`; anything else is a JSON 404.
pub fn router(state: GatewayState) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path, handler_for(route))
        })
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "not_found", "message": "no such route; see /openapi.json"})),
            )
        })
        .with_state(state)
}

async fn readiness(State(state): State<GatewayState>) -> impl IntoResponse {
    let patience = Duration::from_secs(2);
    let (broker, database) = tokio::join!(
        state.publisher.ready(patience),
        shared::database::responds(&state.pool, patience),
    );
    let status = if broker && database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"broker": broker, "database": database})),
    )
}

/// Serves until `shutdown`, then stops accepting connections and lets the
/// requests in flight finish (each is bounded by the request timeout).
/// Accepted ids older than the window are purged every minute meanwhile.
pub async fn serve(
    listener: TcpListener,
    state: GatewayState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let housekeeping = tokio::spawn(housekeeping(state.clone(), shutdown.clone()));
    let limits = state.config.connections;
    let served = server::serve_http(listener, router(state), limits, shutdown).await;
    housekeeping.abort();
    served
}

/// Every minute: purge accepted ids older than the window, and forget
/// client addresses whose key-lookup allowance has recovered.
async fn housekeeping(state: GatewayState, shutdown: CancellationToken) {
    let mut every_minute = tokio::time::interval(Duration::from_secs(60));
    let (pool, window) = (&state.pool, state.config.idempotency_window);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every_minute.tick() => {}
        }
        state.authenticator.forget_idle_addresses();
        let purged = shared::database::delete_in_chunks(|limit| {
            accepted_events::purge_expired(pool, window, limit)
        })
        .await;
        if let Err(error) = purged {
            tracing::warn!(%error, "could not purge expired accepted event ids");
        }
    }
}
