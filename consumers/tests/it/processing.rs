use chrono::{DateTime, Utc};
use shared::events::catalog::*;
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use uuid::Uuid;

use crate::support::Stack;

/// An order of 2 × SKU-1 at 15.00 EUR.
pub fn order_placed(order_id: Uuid) -> Event {
    order_placed_with(order_id, "SKU-1", 2)
}

/// An order of one line: `quantity` × `sku` at 15.00 EUR.
pub fn order_placed_with(order_id: Uuid, sku: &str, quantity: i64) -> Event {
    Event::new(
        "/tests",
        EventPayload::OrderPlaced(OrderPlaced {
            order_id,
            customer_id: Uuid::now_v7(),
            currency: "EUR".into(),
            lines: vec![OrderLine {
                sku: sku.into(),
                category: "kitchen".into(),
                quantity,
                unit_price_cents: 1_500,
            }],
        }),
    )
}

pub fn captured(order_id: Uuid) -> Event {
    Event::new(
        "/tests",
        EventPayload::PaymentCaptured(PaymentCaptured {
            payment_id: Uuid::now_v7(),
            order_id,
            amount_cents: 3_000,
            currency: "EUR".into(),
        }),
    )
}

pub fn cancelled(order_id: Uuid) -> Event {
    Event::new(
        "/tests",
        EventPayload::OrderCancelled(OrderCancelled {
            order_id,
            reason: "changed mind".into(),
        }),
    )
}

pub fn shipped(order_id: Uuid) -> Event {
    Event::new(
        "/tests",
        EventPayload::OrderShipped(OrderShipped {
            order_id,
            shipment_id: Uuid::now_v7(),
            carrier: "DHL".into(),
            tracking_number: "T1".into(),
        }),
    )
}

#[tokio::test]
async fn duplicated_events_are_applied_once() {
    let stack = Stack::new().await;
    let orders: Vec<Event> = (0..20).map(|_| order_placed(Uuid::now_v7())).collect();
    // Every event three times: re-sent by producers, redelivered by the broker.
    let stream: Vec<Event> = orders
        .iter()
        .chain(&orders)
        .chain(&orders)
        .cloned()
        .collect();
    stack.publish(&stream).await;

    let workers = stack.start(&[ConsumerGroup::Orders], 2);
    let processed = stack
        .wait_for(
            "SELECT count(*) FROM processed_events WHERE consumer_group = 'orders'",
            20,
            30,
        )
        .await;
    crate::support::eventually_drained(&stack, ConsumerGroup::Orders).await;
    workers.stop().await;

    assert_eq!(processed, 20);
    // After the workers closed their channels nothing unacked returned.
    assert_eq!(
        stack.queued(ConsumerGroup::Orders).await,
        (0, 0, 0),
        "all 60 deliveries acked"
    );
    assert_eq!(stack.number("SELECT count(*) FROM orders").await, 20);
    assert_eq!(stack.number("SELECT count(*) FROM order_lines").await, 20);
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);
}

#[derive(sqlx::FromRow, Debug)]
struct DeadLetter {
    consumer_group: String,
    event_id: Option<Uuid>,
    event_type: Option<String>,
    routing_key: String,
    body: Vec<u8>,
    reason: String,
    error_kind: String,
    attempts: i32,
    attempt_log: serde_json::Value,
    first_failed_at: DateTime<Utc>,
    last_failed_at: DateTime<Utc>,
}

async fn dead_letters(stack: &Stack) -> Vec<DeadLetter> {
    sqlx::query_as(
        "SELECT consumer_group, event_id, event_type, routing_key, body, reason, error_kind, attempts, \
         attempt_log, first_failed_at, last_failed_at FROM dead_letters ORDER BY id",
    )
    .fetch_all(&stack.database.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_at_once_with_all_its_metadata() {
    let stack = Stack::new().await;
    let order_id = Uuid::now_v7();
    let shipment = shipped(order_id);
    stack
        .publish(&[order_placed(order_id), cancelled(order_id)])
        .await;
    let workers = stack.start(&[ConsumerGroup::Orders], 1);
    stack
        .wait_for(
            "SELECT count(*) FROM orders WHERE status = 'cancelled'",
            1,
            30,
        )
        .await;

    stack.publish(std::slice::from_ref(&shipment)).await;
    stack
        .wait_for("SELECT count(*) FROM dead_letters", 1, 30)
        .await;
    workers.stop().await;

    let letters = dead_letters(&stack).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.consumer_group, "orders");
    assert_eq!(letter.event_id, Some(shipment.id));
    assert_eq!(letter.event_type.as_deref(), Some("order.shipped"));
    assert_eq!(letter.routing_key, "order.shipped");
    assert_eq!(letter.body, shipment.to_json_bytes());
    assert_eq!(letter.error_kind, "ship_cancelled_order");
    assert!(letter.reason.contains("cancelled"), "{}", letter.reason);
    assert_eq!(letter.attempts, 1, "a permanent error is not retried");
    let log = letter.attempt_log.as_array().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["kind"], "ship_cancelled_order");
    assert!(log[0]["worker"].as_str().unwrap().starts_with("orders-"));
    assert_eq!(letter.first_failed_at, letter.last_failed_at);
    assert_eq!(stack.number("SELECT count(*) FROM shipments").await, 0);
    assert_eq!(stack.queued(ConsumerGroup::Orders).await, (0, 0, 0));
}

#[tokio::test]
async fn a_poison_message_among_events_is_dead_lettered_and_the_events_are_applied() {
    // Through the real worker, whatever batches the deliveries form; the
    // case of one batch holding them all is `batch_paths::a_poison_message_
    // is_dead_lettered_while_its_batch_neighbours_commit`.
    let stack = Stack::new().await;
    let before: Vec<Event> = (0..5).map(|_| order_placed(Uuid::now_v7())).collect();
    let after: Vec<Event> = (0..5).map(|_| order_placed(Uuid::now_v7())).collect();
    stack.publish(&before).await;
    stack
        .publish_raw("order.placed", b"{\"specversion\":\"1.0\", truncated")
        .await;
    stack.publish(&after).await;

    let workers = stack.start(&[ConsumerGroup::Orders], 1);
    let applied = stack.wait_for("SELECT count(*) FROM orders", 10, 30).await;
    let dead = stack
        .wait_for("SELECT count(*) FROM dead_letters", 1, 30)
        .await;
    workers.stop().await;

    assert_eq!((applied, dead), (10, 1));
    let letter = &dead_letters(&stack).await[0];
    assert_eq!(letter.error_kind, "poison");
    assert_eq!(letter.event_id, None);
    assert!(
        letter.reason.contains("not valid JSON"),
        "{}",
        letter.reason
    );
    assert_eq!(letter.body, b"{\"specversion\":\"1.0\", truncated");
    assert_eq!(stack.queued(ConsumerGroup::Orders).await, (0, 0, 0));
}

#[tokio::test]
async fn what_the_broker_dead_letters_on_its_own_is_moved_into_the_store() {
    let stack = Stack::new().await;
    let event = order_placed(Uuid::now_v7());
    stack.publish(std::slice::from_ref(&event)).await;
    reject_one_from_the_work_queue(&stack).await;

    let workers = stack.start(&[ConsumerGroup::Orders], 1);
    let stored = stack
        .wait_for("SELECT count(*) FROM dead_letters", 1, 30)
        .await;
    workers.stop().await;

    assert_eq!(stored, 1);
    let letter = &dead_letters(&stack).await[0];
    assert_eq!(letter.error_kind, "broker_rejected");
    assert_eq!(letter.event_id, Some(event.id));
    assert_eq!(letter.body, event.to_json_bytes());
    assert_eq!(stack.number("SELECT count(*) FROM orders").await, 0);
    assert_eq!(
        stack.queued(ConsumerGroup::Orders).await,
        (0, 0, 0),
        "the dead-letter queue was drained"
    );
}

#[tokio::test]
async fn a_payload_field_its_version_lacks_is_dead_lettered_never_dropped() {
    let stack = Stack::new().await;
    let event = order_placed(Uuid::now_v7());
    // A version-1 order (no currency in that version) that carries one:
    // reading it as v1 would silently store US dollars.
    let mut envelope = serde_json::to_value(event.to_envelope()).unwrap();
    envelope["dataschema"] = serde_json::json!("urn:switchyard:schema:order.placed:v1");
    stack
        .publish_raw("order.placed", &serde_json::to_vec(&envelope).unwrap())
        .await;

    let workers = stack.start(&[ConsumerGroup::Orders], 1);
    let dead = stack
        .wait_for("SELECT count(*) FROM dead_letters", 1, 30)
        .await;
    workers.stop().await;

    assert_eq!(dead, 1);
    let letter = &dead_letters(&stack).await[0];
    assert_eq!(letter.error_kind, "poison");
    assert!(
        letter
            .reason
            .starts_with("data.currency: is not a field of order.placed v1"),
        "{}",
        letter.reason
    );
    assert_eq!(stack.number("SELECT count(*) FROM orders").await, 0);
}

/// Takes one message from the orders work queue and rejects it without
/// requeue, as a failing consumer would: the broker dead-letters it.
async fn reject_one_from_the_work_queue(stack: &Stack) {
    let connection = shared::testing::connect(&stack.settings).await;
    let channel = connection.create_channel().await.unwrap();
    let work = stack
        .isolated
        .topology
        .group(ConsumerGroup::Orders)
        .work
        .clone();
    let message = shared::testing::eventually(std::time::Duration::from_secs(10), || async {
        channel
            .basic_get(
                work.as_str().into(),
                lapin::options::BasicGetOptions::default(),
            )
            .await
            .unwrap()
    })
    .await
    .unwrap();
    message
        .delivery
        .reject(lapin::options::BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let _ = connection.close(200, "OK".into()).await;
}

/// Publishes `body` as `order.placed` with AMQP `message_id` and headers.
async fn publish_with(
    stack: &Stack,
    body: &[u8],
    message_id: &str,
    headers: lapin::types::FieldTable,
) {
    let publisher = stack.publisher().await;
    publisher
        .publish_message(shared::publish::OutgoingMessage {
            routing_key: "order.placed".into(),
            exchange: None,
            body: body.to_vec(),
            properties: lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(message_id.into())
                .with_headers(headers),
        })
        .await
        .unwrap();
    publisher.close().await;
}

#[tokio::test]
async fn poison_delivered_again_after_a_lost_ack_is_stored_once() {
    let stack = Stack::new().await;
    let poison = b"not an event at all";
    publish_with(&stack, poison, "poison-1", Default::default()).await;
    let workers = stack.start(&[ConsumerGroup::Orders], 1);
    stack
        .wait_for("SELECT count(*) FROM dead_letters", 1, 30)
        .await;
    // The same message again, as the broker redelivers it when the ack of
    // its committed dead letter was lost; then a different poison message.
    publish_with(&stack, poison, "poison-1", Default::default()).await;
    publish_with(&stack, poison, "poison-2", Default::default()).await;
    let stored = stack
        .wait_for("SELECT count(*) FROM dead_letters", 2, 30)
        .await;
    let drained = crate::support::eventually_drained(&stack, ConsumerGroup::Orders).await;
    workers.stop().await;

    assert!(drained);
    assert_eq!(
        stored, 2,
        "the redelivery was recognised, the other message kept"
    );
    let kinds: Vec<String> = sqlx::query_scalar("SELECT error_kind FROM dead_letters ORDER BY id")
        .fetch_all(&stack.database.pool)
        .await
        .unwrap();
    assert_eq!(kinds, ["poison", "poison"]);
}

#[tokio::test]
async fn a_broker_dead_letter_with_nul_and_binary_headers_is_stored_exactly() {
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let stack = Stack::new().await;
    let event = order_placed(Uuid::now_v7());
    let mut headers = FieldTable::default();
    headers.insert(
        "note".into(),
        AMQPValue::LongString(LongString::from("a\0b")),
    );
    headers.insert(
        "raw".into(),
        AMQPValue::LongString(LongString::from(vec![0xff, 0x00])),
    );
    publish_with(
        &stack,
        &event.to_json_bytes(),
        &event.id.to_string(),
        headers,
    )
    .await;
    reject_one_from_the_work_queue(&stack).await;

    let workers = stack.start(&[ConsumerGroup::Orders], 1);
    let stored = stack
        .wait_for("SELECT count(*) FROM dead_letters", 1, 30)
        .await;
    workers.stop().await;

    assert_eq!(stored, 1);
    let headers: serde_json::Value = sqlx::query_scalar("SELECT headers FROM dead_letters")
        .fetch_one(&stack.database.pool)
        .await
        .unwrap();
    assert_eq!(headers["note"]["bytes_hex"], "610062");
    assert_eq!(headers["raw"]["bytes_hex"], "ff00");
    assert_eq!(stack.queued(ConsumerGroup::Orders).await, (0, 0, 0));
}

/// The database refuses to store a broker dead letter (read-only, as after
/// a failover to a replica). The mover holds the message and tries again
/// with growing pauses on fresh connections — never requeueing it into a
/// loop — and stores it once the database takes writes again.
#[tokio::test]
async fn a_broker_dead_letter_the_database_refuses_is_held_and_stored_once_it_can_be() {
    let metrics = runtime::metrics::install_recorder();
    let stack = Stack::new().await;
    let event = order_placed(Uuid::now_v7());
    stack.publish(std::slice::from_ref(&event)).await;
    reject_one_from_the_work_queue(&stack).await;
    stack.set_read_only(true).await;
    let held_before =
        crate::failures::orders_counter(&metrics, "switchyard_dead_letters_held_total");
    let workers = stack.start(&[ConsumerGroup::Orders], 1);

    let held = shared::testing::eventually(std::time::Duration::from_secs(60), || async {
        (crate::failures::orders_counter(&metrics, "switchyard_dead_letters_held_total")
            >= held_before + 3)
            .then_some(())
    })
    .await;
    assert!(
        held.is_some(),
        "the mover held the dead letter and tried again"
    );
    assert_eq!(
        stack.queued(ConsumerGroup::Orders).await,
        (0, 0, 0),
        "in hand, not requeued"
    );
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);

    stack.set_read_only(false).await;
    let stored = stack
        .wait_for("SELECT count(*) FROM dead_letters", 1, 60)
        .await;
    workers.stop().await;

    assert_eq!(stored, 1);
    let (event_id, kind): (Option<Uuid>, String) =
        sqlx::query_as("SELECT event_id, error_kind FROM dead_letters")
            .fetch_one(&stack.database.pool)
            .await
            .unwrap();
    assert_eq!(
        (event_id, kind.as_str()),
        (Some(event.id), "broker_rejected")
    );
    assert_eq!(stack.queued(ConsumerGroup::Orders).await, (0, 0, 0));
}
