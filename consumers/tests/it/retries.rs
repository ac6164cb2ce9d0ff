use chrono::{DateTime, Utc};
use shared::groups::ConsumerGroup;
use uuid::Uuid;

use crate::processing::{captured, order_placed};
use crate::support::Stack;

#[tokio::test]
async fn a_transient_failure_is_retried_with_growing_delays_until_the_budget_is_spent() {
    // A payment for an order that never arrives: `order_unknown`, transient.
    let stack = Stack::new().await; // 4 attempts, 200 ms doubling, ±20 % jitter
    let payment = captured(Uuid::now_v7());
    let workers = stack.start(&[ConsumerGroup::Orders], 1);

    stack.publish(std::slice::from_ref(&payment)).await;
    let dead = stack
        .wait_for("SELECT count(*) FROM dead_letters", 1, 60)
        .await;
    workers.stop().await;

    assert_eq!(dead, 1);
    let (attempts, kind, log): (i32, String, serde_json::Value) =
        sqlx::query_as("SELECT attempts, error_kind, attempt_log FROM dead_letters")
            .fetch_one(&stack.database.pool)
            .await
            .unwrap();
    assert_eq!((attempts, kind.as_str()), (4, "order_unknown"));
    let times: Vec<DateTime<Utc>> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(times.len(), 4);
    let gaps: Vec<i64> = times
        .windows(2)
        .map(|pair| (pair[1] - pair[0]).num_milliseconds())
        .collect();
    // Nominal 200, 400, 800 ms with ±20 % jitter: each wait is at least its
    // jittered minimum (160, 320, 640 ms), so the waits grow. Only lower
    // bounds: a loaded machine may add to any wait, never take from it.
    for (gap, nominal) in gaps.iter().zip([200, 400, 800]) {
        assert!(*gap >= nominal * 8 / 10, "gaps {gaps:?}");
    }
    assert_eq!(stack.number("SELECT count(*) FROM payments").await, 0);
    assert_eq!(stack.queued(ConsumerGroup::Orders).await, (0, 0, 0));
}

#[tokio::test]
async fn a_transient_failure_succeeds_once_its_dependency_arrives() {
    let stack = Stack::new().await;
    let order_id = Uuid::now_v7();
    let workers = stack.start(&[ConsumerGroup::Orders], 1);

    stack.publish(&[captured(order_id)]).await;
    // It is waiting in a retry queue, not lost and not applied.
    let waiting = shared::testing::eventually(std::time::Duration::from_secs(10), || async {
        let (_, retrying, _) = stack.queued(ConsumerGroup::Orders).await;
        (retrying == 1).then_some(())
    })
    .await;
    let applied_while_waiting = stack.number("SELECT count(*) FROM processed_events").await;
    stack.publish(&[order_placed(order_id)]).await;
    let paid = stack
        .wait_for("SELECT count(*) FROM orders WHERE status = 'paid'", 1, 30)
        .await;
    workers.stop().await;

    assert!(waiting.is_some(), "the payment waited in a retry queue");
    assert_eq!(applied_while_waiting, 0, "nothing applied while it waited");
    assert_eq!(paid, 1);
    assert_eq!(stack.number("SELECT count(*) FROM payments").await, 1);
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(stack.queued(ConsumerGroup::Orders).await, (0, 0, 0));
}

/// A producer that sets the runtime's attempt headers itself (here: three
/// failures already, one short of the budget of four) gets no say: the
/// history is not signed with the workers' key, so the event is on its
/// first attempt, waits in a retry queue and is applied once its
/// dependency arrives, instead of being dead-lettered at once.
#[tokio::test]
async fn attempt_headers_a_producer_forges_are_ignored() {
    use lapin::types::{AMQPValue, FieldTable};
    use runtime::attempts::{ATTEMPT_COUNT_HEADER, ATTEMPT_LOG_HEADER, ATTEMPT_SIGNATURE_HEADER};
    use shared::publish::OutgoingMessage;

    let stack = Stack::new().await; // 4 attempts
    let order_id = Uuid::now_v7();
    let payment = captured(order_id);
    let record = serde_json::json!({"at": Utc::now(), "worker": "forged",
        "kind": "order_unknown", "message": "forged"});
    let mut headers = FieldTable::default();
    headers.insert(
        ATTEMPT_LOG_HEADER.into(),
        AMQPValue::LongString(
            serde_json::json!([record, record, record])
                .to_string()
                .into(),
        ),
    );
    headers.insert(ATTEMPT_COUNT_HEADER.into(), AMQPValue::LongLongInt(3));
    headers.insert(
        ATTEMPT_SIGNATURE_HEADER.into(),
        AMQPValue::LongString("00".repeat(32).into()),
    );
    let mut message = OutgoingMessage::for_event(&payment);
    message.properties = message.properties.with_headers(headers);
    let publisher = stack.publisher().await;
    publisher.publish_message(message).await.unwrap();
    publisher.close().await;

    let workers = stack.start(&[ConsumerGroup::Orders], 1);
    let waiting = shared::testing::eventually(std::time::Duration::from_secs(30), || async {
        let (_, retrying, _) = stack.queued(ConsumerGroup::Orders).await;
        (retrying == 1).then_some(())
    })
    .await;
    let dead_while_waiting = stack.number("SELECT count(*) FROM dead_letters").await;
    stack.publish(&[order_placed(order_id)]).await;
    let paid = stack
        .wait_for("SELECT count(*) FROM orders WHERE status = 'paid'", 1, 30)
        .await;
    workers.stop().await;

    assert!(
        waiting.is_some(),
        "the forged history was ignored: the payment waits in a retry queue"
    );
    assert_eq!(
        dead_while_waiting, 0,
        "not dead-lettered on a forged history"
    );
    assert_eq!(paid, 1);
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);
}

/// The wait queue is gone (an operator's mistake, a broker that lost it),
/// so the retry cannot be published. The delivery is held and the publish
/// tried again with growing pauses — never requeued into a loop that the
/// broker would end by dead-lettering a healthy event at its delivery
/// limit. Once the queue is back the retry is scheduled, and the payment
/// is applied when its order arrives.
#[tokio::test]
async fn a_retry_the_broker_refuses_is_held_and_scheduled_once_it_can_be() {
    use lapin::options::QueueDeleteOptions;

    let metrics = runtime::metrics::install_recorder();
    let stack = Stack::new().await;
    let wait_queue = stack.isolated.topology.group(ConsumerGroup::Orders).retry[0].clone();
    let connection = shared::testing::connect(&stack.settings).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(wait_queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();

    let order_id = Uuid::now_v7();
    let held_before = crate::failures::orders_counter(&metrics, "switchyard_retries_held_total");
    let workers = stack.start(&[ConsumerGroup::Orders], 1);
    stack.publish(&[captured(order_id)]).await;
    let held = shared::testing::eventually(std::time::Duration::from_secs(60), || async {
        (crate::failures::orders_counter(&metrics, "switchyard_retries_held_total")
            >= held_before + 3)
            .then_some(())
    })
    .await;
    assert!(held.is_some(), "the retry was held and tried again");
    let (ready, _, broker_dead) = stack.queued(ConsumerGroup::Orders).await;
    assert_eq!(ready, 0, "held in hand, not requeued");
    assert_eq!(broker_dead, 0);
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);

    stack.isolated.topology.declare(&connection).await.unwrap();
    let _ = connection.close(200, "OK".into()).await;
    let waiting = shared::testing::eventually(std::time::Duration::from_secs(30), || async {
        let (_, retrying, _) = stack.queued(ConsumerGroup::Orders).await;
        (retrying == 1).then_some(())
    })
    .await;
    assert!(
        waiting.is_some(),
        "the retry was scheduled once the queue was back"
    );
    stack.publish(&[order_placed(order_id)]).await;
    let paid = stack
        .wait_for("SELECT count(*) FROM orders WHERE status = 'paid'", 1, 30)
        .await;
    workers.stop().await;

    assert_eq!(paid, 1);
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(stack.queued(ConsumerGroup::Orders).await, (0, 0, 0));
}
