//! The broker or the database goes away: 503 with Retry-After, then
//! recovery without restart.

use std::time::Duration;

use reqwest::StatusCode;
use shared::groups::ConsumerGroup;
use shared::testing::eventually;

use super::support::{Gateway, json, order_placed};

#[tokio::test]
async fn a_broker_outage_is_503_and_the_same_request_succeeds_once_it_is_back() {
    let gateway = Gateway::behind_proxy().await;
    let key = gateway.checkout_key().await;
    let before = order_placed("/checkout");
    assert_eq!(
        gateway.post_structured(&key, &before).await.status(),
        StatusCode::ACCEPTED
    );

    let proxy = gateway.proxy.as_ref().unwrap();
    proxy.cut();
    let batch = [order_placed("/checkout"), order_placed("/checkout")];
    let refused = gateway.post_batch(&key, &batch).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let body = json(refused).await;
    assert_eq!(body["error"], "broker_unavailable");
    assert_eq!(body["failures"].as_array().unwrap().len(), 2);
    let ready = gateway
        .client
        .get(format!("{}/readyz", gateway.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    proxy.restore();
    let published = eventually(Duration::from_secs(30), || async {
        let response = gateway.post_batch(&key, &batch).await;
        (response.status() == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    assert!(published.is_some(), "the gateway recovered by itself");
    // Each event is in the queue once: the failed attempt left no claim.
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 3);
}

#[tokio::test]
async fn a_database_outage_is_503_and_requests_succeed_again_once_it_is_back() {
    let gateway = Gateway::with_database_behind_proxy().await;
    let key = gateway.checkout_key().await;
    assert_eq!(
        gateway
            .post_structured(&key, &order_placed("/checkout"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );

    let proxy = gateway.proxy.as_ref().unwrap();
    proxy.cut();
    let event = order_placed("/checkout");
    let refused = gateway.post_structured(&key, &event).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(json(refused).await["error"], "database_unavailable");

    proxy.restore();
    let accepted = eventually(Duration::from_secs(30), || async {
        let response = gateway.post_structured(&key, &event).await;
        (response.status() == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    assert!(accepted.is_some(), "the gateway recovered by itself");
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 2);
}

/// Some events of a batch confirmed, one not (nothing is bound for its
/// type: a topology mistake). The answer is a 503 that lists exactly the
/// safe events and names the failed one; after the fix, the same request
/// publishes only that one, the others answered as duplicates.
#[tokio::test]
async fn a_partly_confirmed_batch_names_what_is_safe_and_a_resend_publishes_only_the_rest() {
    use crate::gateway::support::{bind_routing_key, order_cancelled};

    let gateway = Gateway::start().await;
    let key = gateway
        .key(
            &["order.placed", "order.cancelled"],
            &["/checkout"],
            10_000,
            10_000,
        )
        .await;
    bind_routing_key(&gateway.isolated, "order.cancelled", false).await;
    let batch = [
        order_placed("/checkout"),
        order_cancelled("/checkout"),
        order_placed("/checkout"),
    ];

    let partial = gateway.post_batch(&key, &batch).await;
    assert_eq!(partial.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = json(partial).await;
    assert_eq!(body["accepted"], serde_json::json!([0, 2]), "{body}");
    let failures = body["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{body}");
    assert_eq!(failures[0]["index"], 1);
    assert_eq!(failures[0]["id"], batch[1].id.to_string());
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 2);

    bind_routing_key(&gateway.isolated, "order.cancelled", true).await;
    let resent = gateway.post_batch(&key, &batch).await;
    assert_eq!(resent.status(), StatusCode::ACCEPTED);
    let body = json(resent).await;
    assert_eq!(
        super::support::statuses(&body),
        ["duplicate", "published", "duplicate"],
        "{body}"
    );
    assert_eq!(
        gateway.queued(ConsumerGroup::Orders).await,
        3,
        "each event in the queue once"
    );
}
