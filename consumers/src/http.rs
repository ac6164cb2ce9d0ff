//! The worker process's HTTP endpoints: `/healthz` (alive), `/readyz`
//! (broker and database reachable) and `/metrics` (Prometheus). They are
//! served from the start of the process, before the broker and the
//! database are reached, so a supervisor sees "alive, not ready" while the
//! process waits for them.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use runtime::Health;

/// What the endpoints look at.
#[derive(Clone)]
pub struct HttpState {
    /// The process's current broker connection, once it has one (replaced
    /// when the workers reconnect).
    broker: Arc<RwLock<Option<Arc<lapin::Connection>>>>,
    /// The database pool, once the database was reached and migrated.
    pool: Arc<OnceLock<PgPool>>,
    /// Flags the workers maintain.
    health: Health,
    /// Renders the metrics.
    metrics: PrometheusHandle,
}

impl HttpState {
    /// State for a process that has reached neither the broker nor the
    /// database yet (not ready until both are set).
    pub fn new(health: Health, metrics: PrometheusHandle) -> Self {
        Self {
            broker: Arc::default(),
            pool: Arc::default(),
            health,
            metrics,
        }
    }

    /// The broker connection the process now has.
    pub fn set_broker(&self, broker: Arc<lapin::Connection>) {
        *self
            .broker
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(broker);
    }

    /// The pool the process now has.
    pub fn set_pool(&self, pool: PgPool) {
        let _ = self.pool.set(pool);
    }
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({"status": "alive"})) }),
        )
        .route("/readyz", get(readiness))
        .route(
            "/metrics",
            get(|State(state): State<HttpState>| async move { state.metrics.render() }),
        )
        .with_state(state)
}

/// Serves on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn readiness(State(state): State<HttpState>) -> impl IntoResponse {
    let broker = state
        .broker
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .is_some_and(|broker| broker.status().connected());
    let database = match state.pool.get() {
        Some(pool) => {
            state.health.database_ready()
                && shared::database::responds(pool, Duration::from_secs(2)).await
        }
        None => false,
    };
    shared::http_server::readiness(broker, database)
}
