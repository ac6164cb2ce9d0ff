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
    let statuses: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["duplicate", "published", "duplicate"]);

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
    let mut gateway = Gateway::start().await;
    let key = gateway.checkout_key().await;
    let bytes = order_placed("/checkout").to_json_bytes();
    let (first_half, second_half) = bytes.split_at(bytes.len() / 2);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    sender.send(Ok(first_half.to_vec())).await.unwrap();
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let request = gateway
        .post(&key)
        .header("content-type", "application/cloudevents+json")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let in_flight = tokio::spawn(request);
    // Let the gateway start reading the body, then ask it to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    sender.send(Ok(second_half.to_vec())).await.unwrap();
    drop(sender);

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    gateway.served.take().unwrap().await.unwrap().unwrap();
    assert!(
        reqwest::get(format!("{}/healthz", gateway.base))
            .await
            .is_err()
    );
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 1);
}
