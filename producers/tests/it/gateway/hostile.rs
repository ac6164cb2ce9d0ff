//! Hostile and careless clients: attributes AMQP cannot carry, NUL
//! characters, climbing sources, unreadable headers, floods of random keys,
//! refused events that still count, overlapping batches, and unread bodies
//! on kept-alive connections. Each answer is a clear 4xx and nothing is
//! published.

use std::time::Instant;

use producers::gateway::GatewayConfig;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use shared::groups::ConsumerGroup;

use super::support::{Gateway, json, order_placed};

/// Structured, binary and batched requests carrying `event`'s envelope.
async fn in_every_mode(
    gateway: &Gateway,
    key: &str,
    envelope: &serde_json::Value,
) -> Vec<(&'static str, StatusCode, serde_json::Value)> {
    let structured = gateway
        .post(key)
        .header("content-type", "application/cloudevents+json")
        .body(envelope.to_string())
        .send()
        .await
        .unwrap();
    let batch = gateway
        .post(key)
        .header("content-type", "application/cloudevents-batch+json")
        .body(serde_json::json!([envelope]).to_string())
        .send()
        .await
        .unwrap();
    let mut binary = gateway
        .post(key)
        .header("content-type", "application/json")
        .body(envelope["data"].to_string());
    for (name, value) in envelope.as_object().unwrap() {
        if let Some(text) = value
            .as_str()
            .filter(|_| !["data", "datacontenttype"].contains(&name.as_str()))
        {
            let encoded =
                percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            binary = binary.header(format!("ce-{name}"), encoded);
        }
    }
    let binary = binary.send().await.unwrap();
    let mut answers = Vec::new();
    for (mode, response) in [
        ("structured", structured),
        ("batch", batch),
        ("binary", binary),
    ] {
        let status = response.status();
        answers.push((mode, status, json(response).await));
    }
    answers
}

#[tokio::test]
async fn attributes_longer_than_amqp_can_carry_are_400_naming_the_field_in_every_mode() {
    let gateway = Gateway::start().await;
    let key = gateway.key(&["*"], &["*"], 10_000, 10_000).await;
    for (attribute, value) in [
        ("source", format!("/{}", "s".repeat(300))),
        ("correlationid", "c".repeat(256)),
    ] {
        let mut envelope = serde_json::to_value(order_placed("/checkout").to_envelope()).unwrap();
        envelope[attribute] = value.into();
        for (mode, status, body) in in_every_mode(&gateway, &key, &envelope).await {
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{attribute} in {mode}: {body}"
            );
            assert_eq!(body["error"], "invalid_events", "{mode}");
            assert_eq!(body["failures"][0]["field"], attribute, "{mode}");
            assert!(
                body["failures"][0]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("255 bytes"),
                "{body}"
            );
        }
    }
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 0);
}

#[tokio::test]
async fn a_nul_character_anywhere_is_400_naming_the_field_never_a_503() {
    let gateway = Gateway::start().await;
    let key = gateway.key(&["*"], &["*"], 10_000, 10_000).await;
    let cases = [
        ("source", serde_json::json!("/a\u{0}b")),
        ("data.lines[0].category", serde_json::json!("kit\u{0}chen")),
    ];
    for (field, value) in cases {
        let mut envelope = serde_json::to_value(order_placed("/checkout").to_envelope()).unwrap();
        match field {
            "source" => envelope["source"] = value,
            _ => envelope["data"]["lines"][0]["category"] = value,
        }
        for (mode, status, body) in in_every_mode(&gateway, &key, &envelope).await {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{field} in {mode}: {body}");
            assert_eq!(body["failures"][0]["field"], field, "{mode}");
            assert!(
                body["failures"][0]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("NUL"),
                "{body}"
            );
        }
    }
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 0);
}

#[tokio::test]
async fn a_source_that_climbs_out_of_a_prefix_grant_is_403() {
    let gateway = Gateway::start().await;
    let key = gateway
        .key(&["order.placed"], &["/checkout/*"], 100, 100)
        .await;
    for climbing in ["/checkout/../billing", "/checkout/%2e%2e/billing"] {
        let refused = gateway.post_structured(&key, &order_placed(climbing)).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{climbing}");
        assert_eq!(json(refused).await["failures"][0]["field"], "source");
    }
    let allowed = gateway
        .post_structured(&key, &order_placed("/checkout/eu"))
        .await;
    assert_eq!(allowed.status(), StatusCode::ACCEPTED);
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 1);
}

#[tokio::test]
async fn an_unreadable_authorization_header_is_401_even_with_a_valid_x_api_key() {
    let gateway = Gateway::start().await;
    let key = gateway.checkout_key().await;
    let refused = gateway
        .client
        .post(format!("{}/events", gateway.base))
        .header(
            "authorization",
            HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .header("x-api-key", &key)
        .header("content-type", "application/cloudevents+json")
        .body(order_placed("/checkout").to_json_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(refused).await["error"], "invalid_api_key");
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 0);
}

#[tokio::test]
async fn random_well_formed_keys_from_one_address_are_429_after_a_few_lookups() {
    let gateway = Gateway::with_config(GatewayConfig {
        key_lookups_per_address: 1,
        ..GatewayConfig::default()
    })
    .await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let random = format!("sy_{}_{}", uuid::Uuid::now_v7().simple(), "ab".repeat(32));
        let response = gateway
            .post_structured(&random, &order_placed("/checkout"))
            .await;
        statuses.push(response.status());
    }
    let elapsed = started.elapsed().as_secs();
    let looked_up = statuses
        .iter()
        .filter(|status| **status == StatusCode::UNAUTHORIZED)
        .count();
    let limited = statuses
        .iter()
        .filter(|status| **status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(looked_up + limited, 40, "{statuses:?}");
    // A burst of 2, then 1 per second: every 401 cost a lookup, every 429 did not.
    assert!(
        looked_up as u64 <= 2 + elapsed + 1,
        "{looked_up} lookups in {elapsed} s"
    );
    assert!(limited > 0);
}

/// Every client behind one proxy shares its address: a flood of invalid
/// keys from it is answered 429, and a valid key from the same address is
/// accepted every time, also long after the copy of the keys was checked
/// against the store again (once, its cache entry expired and it was 429).
#[tokio::test]
async fn a_flood_of_invalid_keys_never_refuses_a_valid_one_from_the_same_address() {
    let gateway = Gateway::with_config(GatewayConfig {
        key_lookups_per_address: 1,
        key_cache_ttl: std::time::Duration::from_millis(200),
        ..GatewayConfig::default()
    })
    .await;
    let key = gateway
        .key(&["order.placed"], &["/checkout"], 10_000, 10_000)
        .await;
    let flooding = std::sync::atomic::AtomicBool::new(true);
    let flood = async {
        let mut limited = 0;
        for _ in 0..150 {
            let random = format!("sy_{}_{}", uuid::Uuid::now_v7().simple(), "ab".repeat(32));
            let response = gateway
                .post_structured(&random, &order_placed("/checkout"))
                .await;
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                limited += 1;
            }
        }
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        limited
    };
    // Used all through the flood, across many refreshes of the copy.
    let valid = async {
        let mut statuses = Vec::new();
        while flooding.load(std::sync::atomic::Ordering::Relaxed) || statuses.len() < 10 {
            let response = gateway
                .post_structured(&key, &order_placed("/checkout"))
                .await;
            statuses.push(response.status());
        }
        statuses
    };
    let (limited, statuses) = tokio::join!(flood, valid);
    assert!(limited > 0, "the flood was limited");
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::ACCEPTED),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn refused_events_count_toward_the_keys_rate() {
    let gateway = Gateway::start().await;
    let key = gateway.key(&["order.placed"], &["/checkout"], 1, 3).await;
    let mut invalid = serde_json::to_value(order_placed("/checkout").to_envelope()).unwrap();
    invalid["data"]["lines"][0]["quantity"] = serde_json::json!(0);
    let invalid_batch = serde_json::json!([invalid, invalid, invalid]).to_string();
    let refused = gateway
        .post(&key)
        .header("content-type", "application/cloudevents-batch+json")
        .body(invalid_batch)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);

    let limited = gateway
        .post_structured(&key, &order_placed("/checkout"))
        .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 0);
}

#[tokio::test]
async fn overlapping_batches_sent_at_once_never_deadlock() {
    let gateway = Gateway::start().await;
    let key = gateway
        .key(&["order.placed"], &["/checkout"], 100_000, 100_000)
        .await;
    let mut published = 0;
    for _ in 0..10 {
        let events: Vec<_> = (0..40).map(|_| order_placed("/checkout")).collect();
        let mut reversed = events.clone();
        reversed.reverse();
        let (first, second) = tokio::join!(
            gateway.post_batch(&key, &events),
            gateway.post_batch(&key, &reversed)
        );
        for response in [first, second] {
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            published += json(response).await["published"].as_u64().unwrap();
        }
    }
    assert_eq!(published, 400, "each event published once");
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 400);
}

#[tokio::test]
async fn refusals_before_the_body_is_read_keep_the_connection_usable() {
    let gateway = Gateway::start().await;
    // One kept-alive connection: every request reuses it.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let body = vec![b'x'; 64 * 1024];
    for attempt in 0..300 {
        let response = client
            .post(format!("{}/events", gateway.base))
            .bearer_auth("not-a-key")
            .header("content-type", "application/cloudevents+json")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|error| panic!("request {attempt} failed: {error}"));
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().get("connection").is_none());
        response.bytes().await.unwrap();
    }
    // Over the body limit the gateway does not read it, and says it closes.
    let small = Gateway::with_config(GatewayConfig {
        max_body_bytes: 1024,
        ..GatewayConfig::default()
    })
    .await;
    let too_large = client
        .post(format!("{}/events", small.base))
        .bearer_auth("not-a-key")
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(too_large.headers()["connection"], "close");
}

#[tokio::test]
async fn a_revoked_key_works_at_most_for_the_cache_time_to_live() {
    let gateway = Gateway::with_config(GatewayConfig {
        key_cache_ttl: std::time::Duration::from_secs(5),
        ..GatewayConfig::default()
    })
    .await;
    let key = gateway.checkout_key().await;
    let accepted = gateway
        .post_structured(&key, &order_placed("/checkout"))
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let key_id = uuid::Uuid::parse_str(key.split('_').nth(1).unwrap()).unwrap();
    assert!(
        producers::gateway::api_keys::revoke(&gateway.database.pool, key_id)
            .await
            .unwrap()
    );

    // The answer is cached (no lookup per request)…
    let cached = gateway
        .post_structured(&key, &order_placed("/checkout"))
        .await;
    assert_eq!(cached.status(), StatusCode::ACCEPTED);
    // …and expires: the key is refused once its entry is gone.
    let refused = shared::testing::eventually(std::time::Duration::from_secs(30), || async {
        let response = gateway
            .post_structured(&key, &order_placed("/checkout"))
            .await;
        (response.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(refused.is_some(), "the revoked key stopped working");
}
