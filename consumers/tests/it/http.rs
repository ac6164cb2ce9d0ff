use std::sync::Arc;

use consumers::http::{HttpState, serve};
use consumers::runtime::Health;
use shared::groups::ConsumerGroup;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::processing::order_placed;
use crate::support::Stack;

async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served_and_readiness_follows_the_database() {
    let stack = Stack::new().await;
    let metrics = consumers::metrics::install_recorder();
    let broker = Arc::new(shared::testing::connect(&stack.settings).await);
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let state = HttpState {
        broker,
        pool: stack.database.pool.clone(),
        health: health.clone(),
        metrics,
    };
    let server = tokio::spawn(serve(listener, state, shutdown.clone()));
    let workers = stack.start(&[ConsumerGroup::Orders], 1);
    stack.publish(&[order_placed(Uuid::now_v7())]).await;
    stack.wait_for("SELECT count(*) FROM orders", 1, 30).await;

    let alive = get(address, "/healthz").await;
    let ready = get(address, "/readyz").await;
    let metrics = get(address, "/metrics").await;
    health.set_database_ready(false);
    let not_ready = get(address, "/readyz").await;
    workers.stop().await;
    shutdown.cancel();
    server.await.unwrap().unwrap();

    assert_eq!(alive.0, 200);
    assert_eq!(
        ready,
        (200, r#"{"broker":true,"database":true}"#.to_owned())
    );
    assert_eq!(metrics.0, 200);
    assert!(
        metrics.1.contains("switchyard_events_total"),
        "{}",
        metrics.1
    );
    assert!(metrics.1.contains(r#"outcome="applied""#), "{}", metrics.1);
    assert!(metrics.1.contains("switchyard_batch_size"), "{}", metrics.1);
    // A lone order.placed is applied in one statement.
    assert!(
        metrics
            .1
            .contains(r#"switchyard_batches_total{group="orders",path="one_statement"}"#),
        "{}",
        metrics.1
    );
    assert!(
        metrics.1.contains("switchyard_end_to_end_lag_seconds"),
        "{}",
        metrics.1
    );
    assert_eq!(not_ready.0, 503);
}
