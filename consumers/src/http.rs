//! The worker process's HTTP endpoints: `/healthz` (alive), `/readyz`
//! (broker and database reachable) and `/metrics` (Prometheus).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::runtime::Health;

/// What the endpoints look at.
#[derive(Clone)]
pub struct HttpState {
    /// The process's broker connection.
    pub broker: Arc<lapin::Connection>,
    /// The database pool.
    pub pool: PgPool,
    /// Flags the workers maintain.
    pub health: Health,
    /// Renders the metrics.
    pub metrics: PrometheusHandle,
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
    let broker = state.broker.status().connected();
    let database = state.health.database_ready()
        && shared::database::responds(&state.pool, Duration::from_secs(2)).await;
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
