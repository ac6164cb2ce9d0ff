//! The topology's safety nets, exercised on the real broker.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use shared::events::EventType;
use shared::groups::ConsumerGroup;
use shared::publish::PublishError;
use shared::testing::{IsolatedTopology, connect, eventually};

use crate::publisher::sample_event;

async fn get(channel: &lapin::Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    eventually(Duration::from_secs(10), || async {
        channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn a_rejected_event_lands_in_its_groups_dead_letter_queue() {
    let isolated = IsolatedTopology::declare().await;
    let event = sample_event(EventType::ProductPriceChanged);
    isolated.publisher().await.publish(&event).await.unwrap();
    let connection = connect(&isolated.settings).await;
    let channel = connection.create_channel().await.unwrap();
    let queues = isolated.topology.group(ConsumerGroup::Inventory);

    let message = get(&channel, &queues.work).await.expect("delivered");
    message
        .delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();

    let dead = get(&channel, &queues.dead_letter)
        .await
        .expect("dead-lettered, not dropped");
    let id = dead
        .delivery
        .properties
        .message_id()
        .as_ref()
        .unwrap()
        .to_string();
    assert_eq!(id, event.id.to_string());
}

#[tokio::test]
async fn an_event_requeued_past_the_delivery_limit_is_dead_lettered_not_dropped() {
    let settings = shared::testing::settings_from(|name| match name {
        "SWITCHYARD_RETRY_MAX_ATTEMPTS" => Some("2".into()),
        "SWITCHYARD_QUEUE_DELIVERY_LIMIT" => Some("2".into()),
        _ => std::env::var(name).ok(),
    })
    .with_namespace(shared::testing::isolated_settings().namespace);
    let isolated = IsolatedTopology::declare_with(settings).await;
    let event = sample_event(EventType::InventoryRestocked);
    isolated.publisher().await.publish(&event).await.unwrap();
    let connection = connect(&isolated.settings).await;
    let channel = connection.create_channel().await.unwrap();
    let queues = isolated.topology.group(ConsumerGroup::Inventory);

    let mut deliveries = 0;
    while let Some(message) = get(&channel, &queues.work).await {
        deliveries += 1;
        message
            .delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        if deliveries > 10 {
            break;
        }
    }

    let dead = get(&channel, &queues.dead_letter)
        .await
        .expect("dead-lettered after the limit");
    assert_eq!(
        dead.delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .to_string(),
        event.id.to_string()
    );
    // The first delivery plus `delivery_limit` redeliveries.
    assert_eq!(deliveries, 3);
}

#[tokio::test]
async fn an_expired_event_in_a_retry_queue_returns_to_its_own_group_only() {
    let isolated = IsolatedTopology::declare().await;
    let event = sample_event(EventType::OrderPlaced);
    let connection = connect(&isolated.settings).await;
    let channel = connection.create_channel().await.unwrap();
    let orders = isolated.topology.group(ConsumerGroup::Orders);

    channel
        .basic_publish(
            "".into(),
            orders.retry[0].as_str().into(),
            BasicPublishOptions::default(),
            &event.to_json_bytes(),
            BasicProperties::default()
                .with_message_id(event.id.to_string().into())
                .with_expiration("100".into()),
        )
        .await
        .unwrap();

    let returned = get(&channel, &orders.work)
        .await
        .expect("back on the work queue");
    assert_eq!(returned.delivery.data, event.to_json_bytes());
    for group in [ConsumerGroup::Inventory, ConsumerGroup::Sales] {
        let work = &isolated.topology.group(group).work;
        let other = channel
            .basic_get(work.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap();
        assert!(
            other.is_none(),
            "group {group} must not see another group's retry"
        );
    }
}

#[tokio::test]
async fn a_publish_the_broker_refuses_is_a_nack_error() {
    let isolated = IsolatedTopology::declare().await;
    let connection = connect(&isolated.settings).await;
    let channel = connection.create_channel().await.unwrap();
    let full_queue = format!("{}.always-full", isolated.settings.namespace);
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    arguments.insert("x-expires".into(), AMQPValue::LongLongInt(60_000));
    channel
        .queue_declare(
            full_queue.as_str().into(),
            QueueDeclareOptions::default(),
            arguments,
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            full_queue.as_str().into(),
            isolated.topology.events_exchange().into(),
            "order.cancelled".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let result = isolated
        .publisher()
        .await
        .publish(&sample_event(EventType::OrderCancelled))
        .await;

    channel
        .queue_delete(full_queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let error = result.expect_err("a full reject-publish queue nacks");
    assert!(matches!(error, PublishError::Nacked { .. }), "{error}");
    assert!(error.is_transient());
}
