use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use shared::groups::ConsumerGroup;
use shared::topology::{Topology, TopologyError};

use shared::testing::{IsolatedTopology, connect, isolated_settings};

#[tokio::test]
async fn declaring_the_topology_twice_is_idempotent() {
    let isolated = IsolatedTopology::declare().await;
    let connection = connect(&isolated.settings).await;

    isolated
        .topology
        .declare(&connection)
        .await
        .expect("second declare succeeds");

    let channel = connection.create_channel().await.unwrap();
    for queue in &isolated.topology.queues {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.name.as_str().into(), passive, FieldTable::default())
            .await
            .unwrap_or_else(|error| panic!("queue {} exists: {error}", queue.name));
    }
}

async fn predeclare_then_declare(arguments: FieldTable) -> Result<(), TopologyError> {
    let settings = isolated_settings();
    let topology = Topology::new(&settings);
    let connection = connect(&settings).await;
    let work_queue = topology.group(ConsumerGroup::Orders).work.clone();
    let channel = connection.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(work_queue.as_str().into(), durable, arguments)
        .await
        .unwrap();

    let result = topology.declare(&connection).await;

    let _ = topology.delete(&connection).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(work_queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    result
}

#[tokio::test]
async fn startup_check_rejects_a_work_queue_without_dead_lettering() {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );

    let error = predeclare_then_declare(arguments)
        .await
        .expect_err("must refuse");

    let message = error.to_string();
    assert!(
        matches!(error, TopologyError::IncompatibleQueue { .. }),
        "{message}"
    );
    assert!(message.contains("x-dead-letter-exchange"), "{message}");
    assert!(message.contains("Refusing to run"), "{message}");
}

#[tokio::test]
async fn startup_check_rejects_a_classic_work_queue() {
    let error = predeclare_then_declare(FieldTable::default())
        .await
        .expect_err("must refuse");
    assert!(
        matches!(error, TopologyError::IncompatibleQueue { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn startup_check_rejects_a_delivery_limit_below_the_retry_budget() {
    let settings = isolated_settings();
    let topology = Topology::new(&settings);
    let orders = topology.group(ConsumerGroup::Orders);
    let spec = topology.queue(&orders.work).unwrap().clone();
    let mut arguments = shared::topology::declare::to_field_table(&spec);
    arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(2));

    let error = predeclare_then_declare(arguments)
        .await
        .expect_err("must refuse");

    assert!(error.to_string().contains("x-delivery-limit"), "{error}");
}

/// The start-up doctor's probe, against the stock broker (whose
/// `max_message_size` is RabbitMQ's default, 128 MiB): it takes a probe
/// sixteen times the default event limit, and refuses one sixteen times
/// a 9 MiB limit (144 MiB); the connection survives both.
#[tokio::test]
async fn the_doctor_tells_a_broker_that_takes_bodies_far_above_the_event_limit() {
    use shared::broker_limits::{MessageSizeLimit, message_size_limit, probe_size};
    let connection = connect(&isolated_settings()).await;
    let default_limit = shared::events::DEFAULT_MAX_EVENT_BYTES;
    assert_eq!(
        message_size_limit(&connection, default_limit).await,
        MessageSizeLimit::AtLeast {
            probe: probe_size(default_limit)
        }
    );
    assert_eq!(
        message_size_limit(&connection, 9 << 20).await,
        MessageSizeLimit::Below { probe: 144 << 20 }
    );
    assert!(connection.status().connected());
}

/// A broker that cannot be reached is named by host and port, with what
/// to do, never with the password.
#[tokio::test]
async fn an_unreachable_broker_is_named_by_its_address_only() {
    let settings = shared::settings::Settings::from_lookup(|name| {
        (name == "AMQP_URL").then(|| "amqp://guest:hunter2@127.0.0.1:1/%2f".to_owned())
    })
    .unwrap();
    let error = shared::broker::connect_once(&settings, "unreachable")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot reach RabbitMQ at 127.0.0.1:1") && error.contains("set AMQP_URL"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
}
