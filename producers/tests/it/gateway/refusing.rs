//! Every refusal: its status, its JSON body, and that nothing was published.

use std::time::Duration;

use producers::gateway::GatewayConfig;
use reqwest::StatusCode;
use shared::groups::ConsumerGroup;

use super::support::{Gateway, json, order_placed};

#[tokio::test]
async fn requests_without_a_valid_live_key_are_401() {
    let gateway = Gateway::with_config(GatewayConfig {
        key_cache_ttl: Duration::ZERO,
        ..GatewayConfig::default()
    })
    .await;
    let event = order_placed("/checkout");
    let missing = gateway
        .client
        .post(format!("{}/events", gateway.base))
        .header("content-type", "application/cloudevents+json")
        .body(event.to_json_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert!(missing.headers().contains_key("www-authenticate"));
    assert_eq!(json(missing).await["error"], "missing_api_key");

    let key = gateway.checkout_key().await;
    let mut wrong_secret = key.clone();
    wrong_secret.pop();
    wrong_secret.push(if key.ends_with('0') { '1' } else { '0' });
    for bad in ["not-a-key", wrong_secret.as_str()] {
        let refused = gateway.post_structured(bad, &event).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(json(refused).await["error"], "invalid_api_key");
    }

    let key_id = key.split('_').nth(1).unwrap().parse().unwrap();
    assert!(
        producers::gateway::api_keys::revoke(&gateway.database.pool, key_id)
            .await
            .unwrap()
    );
    let revoked = gateway.post_structured(&key, &event).await;
    assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 0);
}

#[tokio::test]
async fn a_key_may_publish_only_its_granted_types_and_sources() {
    let gateway = Gateway::start().await;
    let key = gateway.checkout_key().await;

    let other_source = gateway
        .post_structured(&key, &order_placed("/warehouse"))
        .await;
    assert_eq!(other_source.status(), StatusCode::FORBIDDEN);
    let body = json(other_source).await;
    assert_eq!(body["error"], "forbidden");
    assert_eq!(body["failures"][0]["field"], "source");

    let mut store = shared::simulation::StoreTraffic::new(5);
    let mut restock = std::iter::repeat_with(|| store.next_event())
        .find(|event| event.event_type() == shared::events::EventType::InventoryRestocked)
        .unwrap();
    restock.source = "/checkout".into();
    let other_type = gateway.post_structured(&key, &restock).await;
    assert_eq!(other_type.status(), StatusCode::FORBIDDEN);
    assert_eq!(json(other_type).await["failures"][0]["field"], "type");

    // One forbidden event refuses its whole batch, naming it by index.
    let batch = [
        order_placed("/checkout"),
        order_placed("/checkout"),
        order_placed("/elsewhere"),
    ];
    let refused = gateway.post_batch(&key, &batch).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body = json(refused).await;
    assert_eq!(body["failures"].as_array().unwrap().len(), 1);
    assert_eq!(body["failures"][0]["index"], 2);
    assert_eq!(body["failures"][0]["id"], batch[2].id.to_string());

    // A source prefix grant.
    let prefix_key = gateway.key(&["*"], &["/shop/*"], 1_000, 1_000).await;
    assert_eq!(
        gateway
            .post_structured(&prefix_key, &order_placed("/shop/eu"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 1);
}

#[tokio::test]
async fn invalid_events_are_400_naming_index_and_field_and_nothing_is_published() {
    let gateway = Gateway::start().await;
    let key = gateway.checkout_key().await;
    let good = order_placed("/checkout");
    let mut bad = good.to_envelope();
    bad.id = uuid::Uuid::now_v7().to_string();
    bad.data["lines"][0]["quantity"] = serde_json::json!(-1);
    let body = serde_json::json!([good.to_envelope(), bad]);
    let response = gateway
        .post(&key)
        .header("content-type", "application/cloudevents-batch+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json(response).await;
    assert_eq!(body["error"], "invalid_events");
    assert_eq!(body["failures"][0]["index"], 1);
    assert_eq!(body["failures"][0]["field"], "data.lines[0].quantity");

    let malformed = gateway
        .post(&key)
        .header("content-type", "application/cloudevents+json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let malformed = json(malformed).await;
    assert_eq!(malformed["error"], "malformed_body");
    assert!(
        malformed["message"]
            .as_str()
            .unwrap()
            .starts_with("$: not valid JSON"),
        "{malformed}"
    );

    let not_an_array = gateway
        .post(&key)
        .header("content-type", "application/cloudevents-batch+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(not_an_array.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(not_an_array).await["error"], "malformed_body");

    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 0);
}

#[tokio::test]
async fn unsupported_content_types_are_415_and_oversized_requests_413() {
    let gateway = Gateway::with_config(GatewayConfig {
        max_body_bytes: 4_096,
        max_batch_events: 2,
        ..GatewayConfig::default()
    })
    .await;
    let key = gateway.checkout_key().await;
    let event = order_placed("/checkout");

    for content_type in ["text/plain", "application/json", "application/xml"] {
        let response = gateway
            .post(&key)
            .header("content-type", content_type)
            .body(event.to_json_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
        assert_eq!(json(response).await["error"], "unsupported_media_type");
    }

    let too_many = gateway
        .post_batch(
            &key,
            &[
                event.clone(),
                order_placed("/checkout"),
                order_placed("/checkout"),
            ],
        )
        .await;
    assert_eq!(too_many.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(too_many).await["error"], "payload_too_large");

    let mut huge = event.to_envelope();
    huge.subject = Some("x".repeat(5_000));
    let too_big = gateway
        .post(&key)
        .header("content-type", "application/cloudevents+json")
        .body(serde_json::to_vec(&huge).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Streamed without a declared length, still cut at the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(vec![b' '; 3_000]), Ok(vec![b' '; 3_000])];
    let streamed = gateway
        .post(&key)
        .header("content-type", "application/cloudevents+json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let unknown = gateway
        .client
        .get(format!("{}/nowhere", gateway.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(unknown).await["error"], "not_found");
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 0);
}

#[tokio::test]
async fn a_key_over_its_rate_is_429_with_retry_after() {
    let gateway = Gateway::start().await;
    let key = gateway.key(&["order.placed"], &["/checkout"], 1, 3).await;
    let burst: Vec<_> = (0..3).map(|_| order_placed("/checkout")).collect();
    let started = std::time::Instant::now();
    assert_eq!(
        gateway.post_batch(&key, &burst).await.status(),
        StatusCode::ACCEPTED
    );
    // One event a second after the burst of three: whatever the machine's
    // speed, a refusal comes, and no more passed than the quota allows for
    // the time that went by.
    let mut accepted = 3;
    let mut limited = None;
    for _ in 0..50 {
        let response = gateway
            .post_structured(&key, &order_placed("/checkout"))
            .await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        accepted += 1;
    }
    let allowed = 3 + started.elapsed().as_secs() + 1;
    assert!(
        accepted <= allowed,
        "{accepted} events passed a quota of 3 + 1/s in {:?}",
        started.elapsed()
    );
    let limited = limited.expect("a request over the rate is refused");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(json(limited).await["error"], "rate_limited");

    // More than the burst can never pass, whatever the wait: 413 naming
    // the burst, so a client that obeys Retry-After does not loop forever.
    let other = gateway.key(&["order.placed"], &["/checkout"], 100, 2).await;
    let over_burst: Vec<_> = (0..3).map(|_| order_placed("/checkout")).collect();
    let refused = gateway.post_batch(&other, &over_burst).await;
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(refused.headers().get("retry-after").is_none());
    let refused = json(refused).await;
    assert_eq!(refused["error"], "payload_too_large");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("burst is 2 events and this request holds 3"),
        "{refused}"
    );
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, accepted as u32);
}

#[tokio::test]
async fn keys_issued_listed_and_revoked_with_the_cli_are_stored_with_their_grants() {
    use producers::cli::{Command, KeysCommand};
    use producers::gateway::api_keys;

    let gateway = Gateway::with_config(GatewayConfig {
        key_cache_ttl: Duration::ZERO,
        ..GatewayConfig::default()
    })
    .await;
    let settings = gateway.database.settings.clone();
    producers::commands::run(
        Command::Keys(KeysCommand::Create {
            producer: "checkout".into(),
            types: vec!["order.placed".into()],
            sources: vec!["/checkout".into()],
            rate: 50,
            burst: None,
        }),
        &settings,
    )
    .await
    .unwrap();
    let keys = api_keys::list(&gateway.database.pool).await.unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(
        (key.producer.as_str(), key.rate_per_second, key.burst),
        ("checkout", 50, 100)
    );
    assert_eq!(key.grants.types(), ["order.placed"]);

    producers::commands::run(
        Command::Keys(KeysCommand::Revoke { key_id: key.key_id }),
        &settings,
    )
    .await
    .unwrap();
    let revoked = api_keys::list(&gateway.database.pool).await.unwrap();
    assert!(revoked[0].revoked_at.is_some());
    // Revoking again: no live key by that id.
    assert!(
        producers::commands::run(
            Command::Keys(KeysCommand::Revoke { key_id: key.key_id }),
            &settings
        )
        .await
        .is_err()
    );
    // A key with an unknown type is refused before anything is stored.
    assert!(
        producers::commands::run(
            Command::Keys(KeysCommand::Create {
                producer: "x".into(),
                types: vec!["order.eaten".into()],
                sources: vec!["/x".into()],
                rate: 1,
                burst: None,
            }),
            &settings,
        )
        .await
        .is_err()
    );
    assert_eq!(
        api_keys::list(&gateway.database.pool).await.unwrap().len(),
        1
    );
}
