//! CloudEvents binary mode over AMQP: attributes in `ce-`, `cloudEvents_`
//! or `cloudEvents:` headers, `content_type` as `datacontenttype`, the data
//! as the body — applied exactly like structured mode, and refused with the
//! same errors, naming the attribute.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use shared::groups::ConsumerGroup;
use shared::publish::OutgoingMessage;
use uuid::Uuid;

use crate::support::Stack;

/// An `order.placed` in binary mode: headers named `prefix` + attribute,
/// the data (no `dataschema`, in euros) as the body.
fn binary_order(prefix: &str, order_id: Uuid, drop: &[&str]) -> OutgoingMessage {
    let event_id = Uuid::now_v7().to_string();
    let attributes = [
        ("specversion", "1.0"),
        ("id", event_id.as_str()),
        ("source", "/knative/checkout"),
        ("type", "order.placed"),
        ("time", "2026-11-23T10:00:00Z"),
    ];
    let mut headers = FieldTable::default();
    for (name, value) in attributes {
        if !drop.contains(&name) {
            headers.insert(
                format!("{prefix}{name}").into(),
                AMQPValue::LongString(LongString::from(value)),
            );
        }
    }
    let data = serde_json::json!({
        "order_id": order_id,
        "customer_id": Uuid::now_v7(),
        "currency": "EUR",
        "lines": [{"sku": "SKU-1", "category": "kitchen", "quantity": 2, "unit_price_cents": 1500}],
    });
    OutgoingMessage {
        routing_key: "order.placed".into(),
        exchange: None,
        body: serde_json::to_vec(&data).unwrap(),
        properties: BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers),
    }
}

async fn publish(stack: &Stack, messages: Vec<OutgoingMessage>) {
    let publisher = stack.publisher().await;
    for message in messages {
        publisher.publish_message(message).await.unwrap();
    }
    publisher.close().await;
}

#[tokio::test]
async fn binary_mode_events_are_applied_whichever_header_prefix_carries_them() {
    let stack = Stack::new().await;
    let order_ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let messages = ["ce-", "cloudEvents_", "cloudEvents:"]
        .into_iter()
        .zip(&order_ids)
        .map(|(prefix, order_id)| binary_order(prefix, *order_id, &[]))
        .collect();
    publish(&stack, messages).await;

    let workers = stack.start(&[ConsumerGroup::Orders], 1);
    let applied = stack
        .wait_for(
            "SELECT count(*) FROM orders WHERE currency = 'EUR' AND total_cents = 3000",
            3,
            30,
        )
        .await;
    workers.stop().await;

    assert_eq!(applied, 3);
    let stored: Vec<Uuid> = sqlx::query_scalar("SELECT order_id FROM orders ORDER BY order_id")
        .fetch_all(&stack.database.pool)
        .await
        .unwrap();
    let mut expected = order_ids.clone();
    expected.sort();
    assert_eq!(stored, expected);
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);
}

#[tokio::test]
async fn a_malformed_binary_mode_event_is_dead_lettered_naming_the_attribute_and_its_id() {
    let stack = Stack::new().await;
    let missing_time = binary_order("ce-", Uuid::now_v7(), &["time"]);
    let mut bad_source = binary_order("cloudEvents:", Uuid::now_v7(), &[]);
    if let Some(headers) = bad_source.properties.headers().clone().as_mut() {
        headers.insert(
            "cloudEvents:source".into(),
            AMQPValue::LongString(LongString::from("/a\0b")),
        );
        bad_source.properties = bad_source.properties.clone().with_headers(headers.clone());
    }
    let mut not_json = binary_order("ce-", Uuid::now_v7(), &[]);
    not_json.body = b"{not json".to_vec();
    let claimed_id = |message: &OutgoingMessage| -> Uuid {
        let headers = message.properties.headers().clone().unwrap();
        let (_, value) = headers
            .inner()
            .iter()
            .find(|(key, _)| key.as_str().ends_with("id"))
            .unwrap();
        let AMQPValue::LongString(id) = value else {
            panic!("id is a string")
        };
        Uuid::parse_str(std::str::from_utf8(id.as_bytes()).unwrap()).unwrap()
    };
    let expected = [
        (claimed_id(&missing_time), "time: is required"),
        (claimed_id(&bad_source), "source: must not contain a NUL"),
        (
            claimed_id(&not_json),
            "$: the body (the event's data) is not valid JSON",
        ),
    ];
    publish(&stack, vec![missing_time, bad_source, not_json]).await;

    let workers = stack.start(&[ConsumerGroup::Orders], 1);
    let dead = stack
        .wait_for("SELECT count(*) FROM dead_letters", 3, 30)
        .await;
    workers.stop().await;

    assert_eq!(dead, 3);
    for (event_id, reason) in expected {
        let (kind, event_type, stored_reason): (String, Option<String>, String) = sqlx::query_as(
            "SELECT error_kind, event_type, reason FROM dead_letters WHERE event_id = $1",
        )
        .bind(event_id)
        .fetch_one(&stack.database.pool)
        .await
        .unwrap();
        assert_eq!(kind, "poison");
        assert_eq!(event_type.as_deref(), Some("order.placed"));
        assert!(stored_reason.starts_with(reason), "{stored_reason}");
    }
    assert_eq!(stack.number("SELECT count(*) FROM orders").await, 0);
}
