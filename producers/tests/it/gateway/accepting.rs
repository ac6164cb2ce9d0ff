//! What the gateway accepts: the three CloudEvents modes, idempotent re-sends.

use std::time::Duration;

use reqwest::StatusCode;
use shared::events::Event;
use shared::groups::ConsumerGroup;

use super::support::{Gateway, json, order_placed};

#[tokio::test]
async fn structured_binary_and_batched_events_are_published_after_their_confirms() {
    let gateway = Gateway::start().await;
    let key = gateway.checkout_key().await;

    let structured = gateway
        .post_structured(&key, &order_placed("/checkout"))
        .await;
    assert_eq!(structured.status(), StatusCode::ACCEPTED);
    let body = json(structured).await;
    assert_eq!(body["published"], 1);
    assert_eq!(body["events"][0]["status"], "published");

    let binary_event = order_placed("/checkout");
    let envelope = binary_event.to_envelope();
    let binary = gateway
        .post(&key)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", envelope.id.as_str())
        .header("ce-source", "%2Fcheckout")
        .header("ce-type", envelope.event_type.as_str())
        .header("ce-time", envelope.time.as_str())
        .body(serde_json::to_vec(&envelope.data).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(binary.status(), StatusCode::ACCEPTED);
    assert_eq!(json(binary).await["events"][0]["id"], envelope.id);

    let batch: Vec<Event> = (0..3).map(|_| order_placed("/checkout")).collect();
    let batched = gateway.post_batch(&key, &batch).await;
    assert_eq!(batched.status(), StatusCode::ACCEPTED);
    let body = json(batched).await;
    assert_eq!(body["published"], 3);
    for (index, event) in batch.iter().enumerate() {
        assert_eq!(body["events"][index]["index"], index);
        assert_eq!(body["events"][index]["id"], event.id.to_string());
    }

    for group in ConsumerGroup::ALL {
        assert_eq!(gateway.queued(group).await, 5, "{group:?}");
    }
}

#[tokio::test]
async fn an_event_sent_again_within_the_window_is_acknowledged_and_not_published_again() {
    let gateway = Gateway::start().await;
    let key = gateway.checkout_key().await;
    let event = order_placed("/checkout");
    let fresh = order_placed("/checkout");

    assert_eq!(
        gateway.post_structured(&key, &event).await.status(),
        StatusCode::ACCEPTED
    );
    let again = gateway.post_structured(&key, &event).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let body = json(again).await;
    assert_eq!(body["published"], 0);
    assert_eq!(body["duplicates"], 1);
    assert_eq!(body["events"][0]["status"], "duplicate");

    // In a batch: the earlier event, a new one, and the new one twice.
    let batch = [event.clone(), fresh.clone(), fresh.clone()];
    let body = json(gateway.post_batch(&key, &batch).await).await;
    assert_eq!(
        super::support::statuses(&body),
        ["duplicate", "published", "duplicate"]
    );

    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 2);
}

#[tokio::test]
async fn concurrent_re_sends_of_one_event_publish_it_once() {
    let gateway = Gateway::start().await;
    let key = gateway.checkout_key().await;
    let event = order_placed("/checkout");
    let sends = (0..8).map(|_| gateway.post_structured(&key, &event));
    let responses = futures_util::future::join_all(sends).await;
    let mut published = 0;
    for response in responses {
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        published += json(response).await["published"].as_u64().unwrap();
    }
    assert_eq!(published, 1);
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 1);
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let gateway = Gateway::start().await;
    let key = gateway.checkout_key().await;
    gateway
        .post_structured(&key, &order_placed("/checkout"))
        .await;
    let get = |path: &str| gateway.client.get(format!("{}{path}", gateway.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(
        json(ready).await,
        serde_json::json!({"broker": true, "database": true})
    );
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("switchyard_gateway_events_total"),
        "{metrics}"
    );
    assert!(metrics.contains("switchyard_gateway_publish_confirm_seconds"));
}

#[tokio::test]
async fn shutdown_drains_a_request_in_flight_and_then_refuses_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut gateway = Gateway::start().await;
    let key = gateway.checkout_key().await;
    let bytes = order_placed("/checkout").to_json_bytes();
    let (first_half, second_half) = bytes.split_at(bytes.len() / 2);
    let address = gateway.base.trim_start_matches("http://").to_owned();
    let mut client = tokio::net::TcpStream::connect(&address).await.unwrap();
    // `Expect: 100-continue`: the server answers `100 Continue` once the
    // handler starts reading the body, so we know the request is in flight.
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/cloudevents+json\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        bytes.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = client.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the gateway closed the connection");
        answer.extend_from_slice(&buffer[..read]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    client.write_all(first_half).await.unwrap();

    // Stop, and wait until the gateway refuses new connections.
    gateway.shutdown.cancel();
    let refusing = shared::testing::eventually(Duration::from_secs(30), || async {
        reqwest::get(format!("{}/healthz", gateway.base))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(refusing.is_some(), "the gateway stopped accepting");

    // The request in flight is still finished and answered.
    client.write_all(second_half).await.unwrap();
    let mut response = Vec::new();
    client.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    gateway.served.take().unwrap().await.unwrap().unwrap();
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 1);
}
