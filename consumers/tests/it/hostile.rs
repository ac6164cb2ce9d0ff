//! Messages the gateway never sees, published straight over AMQP while
//! valid traffic flows through real `consumers run` processes: each
//! hostile message is dead-lettered once in every group it reaches, with
//! its own error kind, and every valid event is applied once. No hostile
//! message holds a batch, or a group, up.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use shared::events::catalog::{
    CustomerRegistered, InventoryRestocked, PaymentFailed, ProductListed,
};
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use shared::publish::OutgoingMessage;
use uuid::Uuid;

use crate::processing::order_placed;
use crate::support::{Stack, consumers_binary, sigterm_and_wait};

/// One hostile message: what is published, and the dead letters it must
/// become: (group, error kind) for each group bound to its routing key.
struct Hostile {
    name: &'static str,
    routing_key: &'static str,
    body: Vec<u8>,
    properties: BasicProperties,
    kind: &'static str,
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// A valid order.placed envelope whose `data` gets `extra` (raw JSON
/// members) appended.
pub(crate) fn order_with_data_member(extra: &str) -> Vec<u8> {
    let text = String::from_utf8(order_placed(Uuid::now_v7()).to_json_bytes()).unwrap();
    let at = text.find("\"data\":{").unwrap() + "\"data\":{".len();
    format!("{}{extra},{}", &text[..at], &text[at..]).into_bytes()
}

fn corpus() -> Vec<Hostile> {
    let customer = Event::new(
        "/hostile",
        EventPayload::CustomerRegistered(CustomerRegistered {
            customer_id: Uuid::now_v7(),
            email: "someone@example.com".into(),
            name: "Someone".into(),
        }),
    );
    let payment_failed = Event::new(
        "/hostile",
        EventPayload::PaymentFailed(PaymentFailed {
            payment_id: Uuid::now_v7(),
            order_id: Uuid::now_v7(),
            amount_cents: 100,
            currency: "EUR".into(),
            reason: "declined".into(),
        }),
    );
    let mut odd_headers = FieldTable::default();
    odd_headers.insert(
        "nul\0key".into(),
        AMQPValue::LongString(LongString::from("v\0")),
    );
    odd_headers.insert(
        "bytes".into(),
        AMQPValue::LongString(LongString::from(vec![0xff, 0x00])),
    );
    odd_headers.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(true)])),
    );
    odd_headers.insert(
        "raw".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0_u8, 1, 2])),
    );
    odd_headers.insert(
        "decimal".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345,
        }),
    );
    // Not NaN: RabbitMQ (Erlang) cannot read a NaN float and closes the connection.
    odd_headers.insert("float".into(), AMQPValue::Double(1.5));
    odd_headers.insert("void".into(), AMQPValue::Void);
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    vec![
        Hostile {
            name: "a NUL key as the whole body",
            routing_key: "order.placed",
            body: br#"{"\u0000":1}"#.to_vec(),
            properties: persistent(),
            kind: "poison",
        },
        Hostile {
            name: "a valid order whose data has a NUL key",
            routing_key: "order.placed",
            body: order_with_data_member(r#""k\u0000ey":1"#),
            properties: persistent().with_headers(odd_headers.clone()),
            kind: "poison",
        },
        Hostile {
            name: "a lone surrogate",
            routing_key: "order.placed",
            body: br#"{"specversion":"\ud800"}"#.to_vec(),
            properties: persistent(),
            kind: "poison",
        },
        Hostile {
            name: "invalid UTF-8",
            routing_key: "order.cancelled",
            body: vec![b'{', 0xff, 0xfe, b'}'],
            properties: persistent().with_content_type("application/cloudevents+json".into()),
            kind: "poison",
        },
        Hostile {
            name: "deep nesting",
            routing_key: "order.placed",
            body: deep.into_bytes(),
            properties: persistent(),
            kind: "poison",
        },
        Hostile {
            name: "a number past any float",
            routing_key: "order.cancelled",
            body: b"{\"specversion\":1e999999}".to_vec(),
            properties: persistent().with_content_type("text/plain".into()),
            kind: "poison",
        },
        Hostile {
            name: "a body over the event limit",
            routing_key: "order.placed",
            body: vec![b'x'; 300 * 1024],
            properties: persistent(),
            kind: "poison",
        },
        Hostile {
            name: "binary mode with an unreadable content type",
            routing_key: "order.cancelled",
            body: b"<xml/>".to_vec(),
            properties: persistent()
                .with_content_type("application/xml".into())
                .with_headers(binary_headers()),
            kind: "poison",
        },
        Hostile {
            name: "a customer.registered body under order.placed",
            routing_key: "order.placed",
            body: customer.to_json_bytes(),
            properties: persistent(),
            kind: "type_mismatch",
        },
        Hostile {
            name: "a payment.failed body under inventory.restocked",
            routing_key: "inventory.restocked",
            body: payment_failed.to_json_bytes(),
            properties: persistent(),
            kind: "type_mismatch",
        },
    ]
}

/// Binary-mode attributes of an `order.cancelled`, with a body that is
/// not its data.
fn binary_headers() -> FieldTable {
    let mut headers = FieldTable::default();
    for (name, value) in [
        ("ce-specversion", "1.0".to_owned()),
        ("ce-id", Uuid::now_v7().to_string()),
        ("ce-source", "/hostile".to_owned()),
        ("ce-type", "order.cancelled".to_owned()),
        ("ce-time", "2026-12-07T00:00:00Z".to_owned()),
    ] {
        headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
    }
    headers
}

/// The groups bound to `routing_key`.
fn groups_of(routing_key: &str) -> Vec<ConsumerGroup> {
    ConsumerGroup::ALL
        .into_iter()
        .filter(|group| {
            group
                .event_types()
                .iter()
                .any(|event_type| event_type.as_str() == routing_key)
        })
        .collect()
}

/// Rounds of the corpus, each amid 100 valid orders: one in `cargo test`;
/// `SWITCHYARD_FAULT_ROUNDS=N` for a longer run.
fn rounds() -> usize {
    std::env::var("SWITCHYARD_FAULT_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_over_amqp_are_dead_lettered_once_and_valid_traffic_is_applied() {
    let stack = Stack::new().await;
    let listing = Event::new(
        "/hostile",
        EventPayload::ProductListed(ProductListed {
            sku: "SKU-1".into(),
            name: "Pan".into(),
            category: "kitchen".into(),
            price_cents: 1_500,
            currency: "EUR".into(),
        }),
    );
    let restock = Event::new(
        "/hostile",
        EventPayload::InventoryRestocked(InventoryRestocked {
            sku: "SKU-1".into(),
            quantity: 1_000_000,
        }),
    );
    stack.publish(&[listing, restock]).await;
    let mut worker = consumers_binary(&stack)
        .args(["run", "--batch-size", "16", "--prefetch", "32"])
        .args(["--http-address", &crate::http::free_address().to_string()])
        .envs(crate::support::QUICK_RETRY_ENVIRONMENT)
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap();

    let rounds = rounds();
    let valid = 100 * rounds as i64;
    let mut sent = Vec::new();
    let publisher = stack.publisher().await;
    for round in 0..rounds {
        let orders: Vec<Event> = (0..100).map(|_| order_placed(Uuid::now_v7())).collect();
        let (before, after) = orders.split_at(50);
        stack.publish(before).await;
        for (index, hostile) in corpus().into_iter().enumerate() {
            // Each round's messages are other messages (the message id is
            // part of a poison message's identity).
            let id = format!("hostile-{round}-{index}");
            publisher
                .publish_message(OutgoingMessage {
                    routing_key: hostile.routing_key.to_owned(),
                    exchange: None,
                    body: hostile.body.clone(),
                    properties: hostile.properties.clone().with_message_id(id.into()),
                })
                .await
                .unwrap_or_else(|error| panic!("{}: {error}", hostile.name));
            sent.push(hostile);
        }
        stack.publish(after).await;
    }
    publisher.close().await;
    let corpus = sent;
    let patience = 60 + 20 * rounds as u64;

    let mut expected: BTreeMap<(String, String), i64> = BTreeMap::new();
    for hostile in &corpus {
        for group in groups_of(hostile.routing_key) {
            *expected
                .entry((group.as_str().to_owned(), hostile.kind.to_owned()))
                .or_default() += 1;
        }
    }
    let total: i64 = expected.values().sum();
    let stored = stack
        .wait_for("SELECT count(*) FROM dead_letters", total, patience)
        .await;
    let applied = stack
        .wait_for("SELECT count(*) FROM orders", valid, patience)
        .await;
    let reserved = stack
        .wait_for(
            "SELECT count(*) FROM processed_events WHERE consumer_group = 'inventory'",
            valid + 2,
            patience,
        )
        .await;
    let sold = stack
        .wait_for(
            "SELECT count(*) FROM processed_events WHERE consumer_group = 'sales'",
            valid,
            patience,
        )
        .await;
    let mut drained = true;
    for group in ConsumerGroup::ALL {
        drained &= crate::support::eventually_drained(&stack, group).await;
    }
    sigterm_and_wait(&mut worker, Duration::from_secs(30)).await;

    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT consumer_group, error_kind, count(*) FROM dead_letters GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&stack.database.pool)
    .await
    .unwrap();
    let found: BTreeMap<(String, String), i64> = rows
        .into_iter()
        .map(|(group, kind, count)| ((group, kind), count))
        .collect();
    assert_eq!(
        found, expected,
        "each hostile message dead-lettered once per group it reached"
    );
    assert_eq!(stored, total);
    assert_eq!(applied, valid, "every valid order applied");
    assert_eq!(reserved, valid + 2);
    assert_eq!(sold, valid);
    assert_eq!(
        stack
            .number("SELECT count(*) FROM processed_events WHERE consumer_group = 'orders'")
            .await,
        valid,
        "nothing hostile claimed as processed"
    );
    assert!(drained, "nothing left in the work and retry queues");
    let mismatch: String = sqlx::query_scalar(
        "SELECT reason FROM dead_letters WHERE consumer_group = 'inventory' \
         AND routing_key = 'inventory.restocked' LIMIT 1",
    )
    .fetch_one(&stack.database.pool)
    .await
    .unwrap();
    assert!(
        mismatch.contains("payment.failed") && mismatch.contains("inventory.restocked"),
        "the reason names the type and the routing key: {mismatch}"
    );
}

/// A dead letter's id, kind, bytes of body kept, body size and hash.
type StoredBody = (i64, String, i32, Option<i64>, Option<Vec<u8>>);

/// Bodies over the event limit are kept as their size, hash and first
/// bytes only: two 3 MB bodies that share their first 4 KiB are two dead
/// letters, the same one again is not, and `show` says what was kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_event_limit_is_dead_lettered_as_its_size_hash_and_first_bytes() {
    use sha2::Digest;
    let stack = Stack::new().await;
    let first: Vec<u8> = (0..3_000_000_u32)
        .map(|index| (index % 251) as u8)
        .collect();
    let mut second = first.clone();
    *second.last_mut().unwrap() ^= 0xff;
    for body in [&first, &second, &first] {
        stack.publish_raw("payment.failed", body).await;
    }
    let mut worker = consumers_binary(&stack)
        .args(["run", "--group", "orders"])
        .args(["--http-address", &crate::http::free_address().to_string()])
        .envs(crate::support::QUICK_RETRY_ENVIRONMENT)
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap();
    let drained = crate::support::eventually_drained(&stack, ConsumerGroup::Orders).await;
    sigterm_and_wait(&mut worker, Duration::from_secs(30)).await;

    assert!(drained);
    let rows: Vec<StoredBody> = sqlx::query_as(
        "SELECT id, error_kind, octet_length(body), body_size, body_sha256 \
         FROM dead_letters ORDER BY id",
    )
    .fetch_all(&stack.database.pool)
    .await
    .unwrap();
    let hashes: Vec<Vec<u8>> = [&first, &second]
        .iter()
        .map(|body| sha2::Sha256::digest(body).to_vec())
        .collect();
    assert_eq!(
        rows.len(),
        2,
        "the same body again is the same dead letter: {rows:?}"
    );
    for ((_, kind, kept, size, sha256), hash) in rows.iter().zip(&hashes) {
        assert_eq!(kind, "poison");
        assert_eq!(*kept, 4096);
        assert_eq!(*size, Some(3_000_000));
        assert_eq!(sha256.as_ref(), Some(hash));
    }
    let shown = crate::support::output_of({
        let mut command = consumers_binary(&stack);
        command.args(["dead-letters", "show", &rows[0].0.to_string()]);
        command
    })
    .await;
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(
        shown["body_over_limit"],
        serde_json::json!({"size": 3_000_000, "kept": 4096, "sha256": hex::encode(&hashes[0])}),
        "{shown}"
    );
    assert!(
        shown["reason"].as_str().unwrap().contains("over the limit"),
        "{shown}"
    );
}
