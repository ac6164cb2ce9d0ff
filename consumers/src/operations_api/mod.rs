//! The operations API: the dead-letter operations over HTTP (JSON), for
//! operators and the dashboard, served by `consumers operations-api` —
//! worker-side, apart from the producers' gateway. It calls the same
//! functions as `consumers dead-letters …`.
//!
//! Every `/api/v1` route needs `Authorization: Bearer syop_…`, an operator
//! token (see [`tokens`]): `viewer` reads, `operator` also replays, edits,
//! resolves and purges. A replay runs in the background: its progress is
//! read at `/api/v1/replays/{id}` and it can be cancelled.
//!
//! The routes are listed once, in [`ROUTES`]; the OpenAPI document
//! (`consumers/operations-openapi.json`, served at `/openapi.json`) is
//! checked against that list by a test, and against the server by
//! schemathesis.
//!
//! Here: the routes, the shared state, the router and the server. Beside:
//! `caller.rs` (who calls, and the failed-check allowance), `bodies.rs`
//! (bounded bodies, filters and options read from requests),
//! `dead_letter_handlers.rs` (reads and changes), `replays.rs` (replays
//! in the background and their slots), `error.rs`, `tokens.rs`,
//! `sessions.rs`, `ui.rs` (the dashboard).

mod bodies;
mod caller;
mod dead_letter_handlers;
pub mod error;
mod replays;
pub mod sessions;
pub mod tokens;
pub mod ui;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::database::within;
use shared::http_server::{ConnectionLimits, ServerOptions, serve_http};
use shared::settings::Settings;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::bodies::body_limit;
use self::bodies::{bounded_in_time, declared_within};
use self::caller::session_cookie;
pub use self::caller::{Caller, ClientAddress, Id, QueryPairs};
use self::dead_letter_handlers::{
    edit, export, history, list, purge, reopen, resolve, show, stats, summary, whoami,
};
use self::error::ApiError;
use self::replays::{RunningReplay, cancel_replay, preview, replay_status, start_replay};
use self::sessions::KnownSessions;
use self::tokens::{KnownTokens, OperatorToken, Role};
use crate::dead_letters::replay::{ReplayOptions, ReplayProgress};
use crate::dead_letters::{Actor, Filter, manage, operations, query, repair, replay};
use shared::credentials::FailedChecks;

/// The checked-in OpenAPI document.
pub const OPENAPI_DOCUMENT: &str = include_str!("../../operations-openapi.json");

/// Most replays running at once in one process.
pub const MAX_RUNNING_REPLAYS: usize = 4;
/// Longest a request may take (a replay runs in the background).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A route of the API.
#[derive(Debug, Clone)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path (axum syntax).
    pub path: &'static str,
}

const fn route(method: Method, path: &'static str) -> Route {
    Route { method, path }
}

/// Every route served.
pub const ROUTES: [Route; 17] = [
    route(Method::GET, "/healthz"),
    route(Method::GET, "/openapi.json"),
    route(Method::GET, "/api/v1/whoami"),
    route(Method::GET, "/api/v1/dead-letters"),
    route(Method::GET, "/api/v1/dead-letters/summary"),
    route(Method::GET, "/api/v1/dead-letters/export"),
    route(Method::GET, "/api/v1/dead-letters/{id}"),
    route(Method::PUT, "/api/v1/dead-letters/{id}/event"),
    route(Method::POST, "/api/v1/dead-letters/resolve"),
    route(Method::POST, "/api/v1/dead-letters/purge"),
    route(Method::POST, "/api/v1/dead-letters/reopen"),
    route(Method::POST, "/api/v1/replays"),
    route(Method::POST, "/api/v1/replays/preview"),
    route(Method::GET, "/api/v1/replays/{id}"),
    route(Method::POST, "/api/v1/replays/{id}/cancel"),
    route(Method::GET, "/api/v1/operations"),
    route(Method::GET, "/api/v1/stats"),
];

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pool: PgPool,
    settings: Settings,
    replays: Arc<Mutex<HashMap<i64, RunningReplay>>>,
    shutdown: CancellationToken,
    failed_checks: Arc<FailedChecks>,
    slots: Arc<std::sync::atomic::AtomicI64>,
    tokens: Arc<KnownTokens>,
    sessions: Arc<KnownSessions>,
}

/// How often the tokens and sessions held in memory are checked against
/// the database: a revoked token stops working within this.
pub const CREDENTIALS_POLL: Duration = Duration::from_secs(1);

/// Failed token checks one client address may make per second unless told
/// otherwise (see [`FailedChecks`]).
pub const TOKEN_FAILURES_PER_ADDRESS: u32 = 5;

impl ApiState {
    /// Longest one database step of dead-letter work waits
    /// (`SWITCHYARD_DEAD_LETTER_DATABASE_TIMEOUT_MS`, at most 25 s here: a
    /// request is bounded by [`REQUEST_TIMEOUT`]).
    fn patience(&self) -> Duration {
        // Under the request's own limit, so that a database that does not
        // answer (a lock held by a replay's batch, a silent server) gets
        // the promised 503, not the request timeout's 504.
        self.settings
            .dead_letters
            .database_timeout
            .min(REQUEST_TIMEOUT - Duration::from_secs(5))
    }

    /// State over `pool`; replays stop when `shutdown` is cancelled.
    pub fn new(pool: PgPool, settings: Settings, shutdown: CancellationToken) -> Self {
        let patience = settings.dead_letters.database_timeout;
        Self {
            tokens: Arc::new(tokens::known(pool.clone(), patience)),
            sessions: Arc::new(sessions::known(pool.clone(), patience)),
            pool,
            settings,
            replays: Arc::default(),
            shutdown,
            failed_checks: Arc::new(FailedChecks::new(TOKEN_FAILURES_PER_ADDRESS)),
            slots: Arc::default(),
        }
    }

    /// Lets each client address fail at most `per_second` token checks per
    /// second, twice as many at once (see [`FailedChecks`]).
    #[must_use]
    pub fn with_token_failures_per_address(mut self, per_second: u32) -> Self {
        self.failed_checks = Arc::new(FailedChecks::new(per_second));
        self
    }

    /// A key for a replay that has not recorded its start yet (negative:
    /// operation ids are positive).
    fn next_slot(&self) -> i64 {
        -(self
            .slots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(1))
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<i64, RunningReplay>> {
        self.replays
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn handler_for(route: &Route) -> MethodRouter<ApiState> {
    match (route.method.as_str(), route.path) {
        ("GET", "/healthz") => get(|| async { Json(json!({"status": "alive"})) }),
        ("GET", "/openapi.json") => get(|| async {
            (
                [(header::CONTENT_TYPE, "application/json")],
                OPENAPI_DOCUMENT,
            )
        }),
        ("GET", "/api/v1/whoami") => get(whoami),
        ("GET", "/api/v1/dead-letters") => get(list),
        ("GET", "/api/v1/dead-letters/summary") => get(summary),
        ("GET", "/api/v1/dead-letters/export") => get(export),
        ("GET", "/api/v1/dead-letters/{id}") => get(show),
        ("PUT", "/api/v1/dead-letters/{id}/event") => put(edit),
        ("POST", "/api/v1/dead-letters/resolve") => post(resolve),
        ("POST", "/api/v1/dead-letters/purge") => post(purge),
        ("POST", "/api/v1/dead-letters/reopen") => post(reopen),
        ("POST", "/api/v1/replays") => post(start_replay),
        ("POST", "/api/v1/replays/preview") => post(preview),
        ("GET", "/api/v1/replays/{id}") => get(replay_status),
        ("POST", "/api/v1/replays/{id}/cancel") => post(cancel_replay),
        ("GET", "/api/v1/operations") => get(history),
        ("GET", "/api/v1/stats") => get(stats),
        (method, path) => unreachable!("no handler for {method} {path}"),
    }
}

/// The routes over `state`; anything else is a JSON 404, every request is
/// bounded in size and time.
pub fn router(state: ApiState) -> Router {
    let body_limit = body_limit(&state.settings);
    ROUTES
        .iter()
        .fold(Router::<ApiState>::new(), |router, route| {
            // Two methods on one path would need merging; the table has none.
            router.route(route.path, handler_for(route))
        })
        .merge(ui::routes())
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(bounded_in_time))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                declared_within(body_limit, request, next)
            },
        ))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` with `limits` on connections and
/// header time (the same server as the producers' gateway); running
/// replays are cancelled (each stops after the batch in flight is
/// confirmed and marked).
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    limits: ConnectionLimits,
    trusted_proxies: shared::http_server::TrustedProxies,
) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let replays = Arc::clone(&state.replays);
    let failed_checks = Arc::clone(&state.failed_checks);
    let forget = tokio::spawn(async move {
        let mut every_minute = tokio::time::interval(Duration::from_secs(60));
        loop {
            every_minute.tick().await;
            failed_checks.forget_recovered();
        }
    });
    // The credentials are read before the first request, then kept
    // current: a revoked token stops working within a second.
    let asked = tokio::time::Instant::now();
    if let Err(error) = state.tokens.check_since(asked).await {
        tracing::warn!(%error, "operator tokens could not be read yet; tried again each second");
    }
    let _ = state.sessions.check_since(asked).await;
    tokio::spawn(Arc::clone(&state.tokens).poll(CREDENTIALS_POLL, shutdown.clone()));
    tokio::spawn(Arc::clone(&state.sessions).poll(CREDENTIALS_POLL, shutdown.clone()));
    let options = ServerOptions {
        trusted_proxies: Arc::new(trusted_proxies),
        limits,
        panic_message: "the operations API failed on this request; check the operation history for what it did",
        // Logged by the server; this process exports no metrics.
        on_refused: || {},
    };
    let served = serve_http(listener, router(state), options, shutdown).await;
    forget.abort();
    let mut waiting: Vec<watch::Receiver<ReplayProgress>> = replays
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .map(|replay| replay.progress.clone())
        .collect();
    for progress in &mut waiting {
        let _ = tokio::time::timeout(
            Duration::from_secs(60),
            progress.wait_for(|state| state.outcome != "running"),
        )
        .await;
    }
    served
}
