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
