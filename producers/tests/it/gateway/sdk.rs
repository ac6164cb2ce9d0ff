//! The official CloudEvents SDK (Rust, `cloudevents-sdk` with its reqwest
//! binding) posts to the gateway unchanged, in all three modes.

use cloudevents::binding::reqwest::{RequestBuilderExt, RequestSerializer};
use cloudevents::message::StructuredDeserializer;
use cloudevents::{EventBuilder, EventBuilderV10};
use reqwest::StatusCode;
use shared::events::Event;
use shared::groups::ConsumerGroup;

use super::support::{Gateway, json, order_placed};

/// The same event, built with the SDK's own builder.
fn sdk_event(event: &Event) -> cloudevents::Event {
    let envelope = event.to_envelope();
    EventBuilderV10::new()
        .id(envelope.id)
        .source(envelope.source)
        .ty(envelope.event_type)
        .time(event.time)
        .data("application/json", envelope.data)
        .extension("partitionkey", event.partition_key.as_str())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_official_sdk_posts_in_binary_structured_and_batched_mode() {
    let gateway = Gateway::start().await;
    let key = gateway.checkout_key().await;
    let url = format!("{}/events", gateway.base);

    let binary = gateway
        .client
        .post(&url)
        .bearer_auth(&key)
        .event(sdk_event(&order_placed("/checkout")))
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(
        binary.status(),
        StatusCode::ACCEPTED,
        "{:?}",
        binary.text().await
    );

    let structured = sdk_event(&order_placed("/checkout"))
        .deserialize_structured(RequestSerializer::new(
            gateway.client.post(&url).bearer_auth(&key),
        ))
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(structured.status(), StatusCode::ACCEPTED);

    let batch = (0..3)
        .map(|_| sdk_event(&order_placed("/checkout")))
        .collect();
    let batched = gateway
        .client
        .post(&url)
        .bearer_auth(&key)
        .events(batch)
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(batched.status(), StatusCode::ACCEPTED);
    assert_eq!(json(batched).await["published"], 3);

    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 5);
}
