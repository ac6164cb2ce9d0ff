use std::process::{Child, Command};
use std::time::Duration;

use shared::groups::ConsumerGroup;
use shared::testing::{TcpProxy, Watchdog, database_url, eventually};
use uuid::Uuid;

use crate::processing::order_placed;
use crate::support::Stack;

/// Starts the real `consumers run` binary against the stack.
fn spawn_worker_process(stack: &Stack, workers: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_consumers"))
        .args([
            "run",
            "--group",
            "orders",
            "--workers",
            &workers.to_string(),
            "--batch-size",
            "16",
            "--prefetch",
            "32",
            "--http-address",
            &crate::http::free_address().to_string(),
        ])
        .env("SWITCHYARD_NAMESPACE", &stack.settings.namespace)
        .envs(crate::support::QUICK_RETRY_ENVIRONMENT)
        .env("DATABASE_URL", database_url(&stack.settings))
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn consumers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_nothing_and_applies_nothing_twice() {
    let _watchdog = Watchdog::new(
        "a_worker_killed_mid_batch_loses_nothing_and_applies_nothing_twice",
        crate::support::TEST_LIMIT,
    );
    let stack = Stack::new().await;
    let events: Vec<_> = (0..2_000).map(|_| order_placed(Uuid::now_v7())).collect();
    stack.publish(&events).await;

    let mut first = spawn_worker_process(&stack, 2);
    let started = eventually(Duration::from_secs(60), || async {
        (stack.number("SELECT count(*) FROM orders").await > 200).then_some(())
    })
    .await;
    first.kill().unwrap(); // SIGKILL: no graceful anything
    first.wait().unwrap();
    let at_kill = stack.number("SELECT count(*) FROM orders").await;

    let mut second = spawn_worker_process(&stack, 2);
    let applied = stack
        .wait_for("SELECT count(*) FROM orders", 2_000, 120)
        .await;
    let drained = crate::support::eventually_drained(&stack, ConsumerGroup::Orders).await;
    second.kill().unwrap();
    second.wait().unwrap();

    assert!(started.is_some());
    assert!(at_kill < 2_000, "killed mid-stream ({at_kill} applied)");
    assert_eq!(applied, 2_000);
    assert!(drained);
    assert_eq!(
        stack.number("SELECT count(*) FROM processed_events").await,
        2_000
    );
    assert_eq!(
        stack.number("SELECT count(*) FROM order_lines").await,
        2_000
    );
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_pauses_consumption_without_dead_letters_and_it_resumes() {
    let _watchdog = Watchdog::new(
        "an_unreachable_database_pauses_consumption_without_dead_letters_and_it_resumes",
        crate::support::TEST_LIMIT,
    );
    let metrics = runtime::metrics::install_recorder();
    let held_before = orders_counter(&metrics, "switchyard_batches_held_total");
    let stack = Stack::new().await;
    let (proxy, through_proxy) = TcpProxy::in_front_of(&database_url(&stack.settings)).await;
    let mut settings = stack.settings.clone();
    settings.database_url = through_proxy.into();
    let workers = stack.start_with(settings, stack.options(&[ConsumerGroup::Orders], 2));
    stack
        .publish(
            &(0..50)
                .map(|_| order_placed(Uuid::now_v7()))
                .collect::<Vec<_>>(),
        )
        .await;
    stack.wait_for("SELECT count(*) FROM orders", 50, 30).await;

    proxy.cut();
    stack
        .publish(
            &(0..100)
                .map(|_| order_placed(Uuid::now_v7()))
                .collect::<Vec<_>>(),
        )
        .await;
    // The workers took the new events and held them: none is waiting in
    // the queue, and a batch was held (each retry of it waits for a pool
    // connection that cannot be made, so one is what can be waited for).
    let held = eventually(Duration::from_secs(60), || async {
        let (ready, _, _) = stack.queued(ConsumerGroup::Orders).await;
        (ready == 0 && orders_counter(&metrics, "switchyard_batches_held_total") > held_before)
            .then_some(())
    })
    .await;
    assert!(held.is_some(), "the workers held their batches");
    let during = stack.number("SELECT count(*) FROM orders").await;
    let dead_during = stack.number("SELECT count(*) FROM dead_letters").await;
    let (_, retrying_during, broker_dead_during) = stack.queued(ConsumerGroup::Orders).await;
    proxy.restore();
    let after = stack.wait_for("SELECT count(*) FROM orders", 150, 60).await;
    workers.stop().await;

    assert_eq!(
        during, 50,
        "nothing applied while the database is unreachable"
    );
    assert_eq!(
        (dead_during, retrying_during, broker_dead_during),
        (0, 0, 0),
        "no retries burnt, nothing dead-lettered"
    );
    assert_eq!(after, 150, "consumption resumed by itself");
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(stack.queued(ConsumerGroup::Orders).await, (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_commits_and_acks_in_flight_work() {
    let _watchdog = Watchdog::new(
        "graceful_shutdown_commits_and_acks_in_flight_work",
        crate::support::TEST_LIMIT,
    );
    let stack = Stack::new().await;
    let total = 3_000;
    stack
        .publish(
            &(0..total)
                .map(|_| order_placed(Uuid::now_v7()))
                .collect::<Vec<_>>(),
        )
        .await;
    let workers = stack.start(&[ConsumerGroup::Orders], 2);
    eventually(Duration::from_secs(60), || async {
        (stack.number("SELECT count(*) FROM orders").await > 100).then_some(())
    })
    .await;

    workers.stop().await;

    let applied = stack.number("SELECT count(*) FROM orders").await;
    // Every event is either committed and acked, or back in the queue:
    // never both, never neither. The broker requeues the closed channels'
    // unacked deliveries asynchronously, so the depth may take a moment.
    let settled = eventually(Duration::from_secs(10), || async {
        let queued = stack.queued(ConsumerGroup::Orders).await;
        (applied + i64::from(queued.0) == total as i64).then_some(queued)
    })
    .await;
    let last = stack.queued(ConsumerGroup::Orders).await;
    assert!(
        settled.is_some(),
        "{applied} applied + {} ready != {total} published",
        last.0
    );
    assert_eq!(
        stack.number("SELECT count(*) FROM orders").await,
        applied,
        "nothing applied after the stop"
    );
    assert_eq!((last.1, last.2), (0, 0));
    assert!(applied < total as i64, "stopped mid-stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_ended_by_the_broker_stops_the_runtime_with_an_error() {
    let _watchdog = Watchdog::new(
        "a_consumer_ended_by_the_broker_stops_the_runtime_with_an_error",
        crate::support::TEST_LIMIT,
    );
    let stack = Stack::new().await;
    let workers = stack.start(&[ConsumerGroup::Orders], 1);
    stack.publish(&[order_placed(Uuid::now_v7())]).await;
    stack.wait_for("SELECT count(*) FROM orders", 1, 30).await;

    // Deleting the queue makes the broker cancel its consumers.
    let queue = stack
        .isolated
        .topology
        .group(ConsumerGroup::Orders)
        .work
        .clone();
    let connection = shared::testing::connect(&stack.settings).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(
            queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "OK".into()).await;

    match workers.stopped_by_themselves(Duration::from_secs(20)).await {
        Err(runtime::RuntimeError::ConsumerEnded { queue: ended }) => {
            assert_eq!(ended, queue)
        }
        other => panic!("expected ConsumerEnded, got {other:?}"),
    }
}

/// The value of counter `name{group="orders"}` in this process's metrics.
pub(crate) fn orders_counter(
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
    name: &str,
) -> u64 {
    let prefix = format!("{name}{{group=\"orders\"}} ");
    metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_holds_the_batch_and_it_is_applied_after_recovery() {
    let _watchdog = Watchdog::new(
        "a_read_only_database_holds_the_batch_and_it_is_applied_after_recovery",
        crate::support::TEST_LIMIT,
    );
    let metrics = runtime::metrics::install_recorder();
    let stack = Stack::new().await;
    // As after a failover to a replica: every new session is read-only.
    stack.set_read_only(true).await;
    let events: Vec<_> = (0..20).map(|_| order_placed(Uuid::now_v7())).collect();
    stack.publish(&events).await;
    let held_before = orders_counter(&metrics, "switchyard_batches_held_total");
    let workers = stack.start(&[ConsumerGroup::Orders], 1);

    // The batch is held and tried again with growing pauses (five tries
    // take over a second): never requeued, never dead-lettered.
    let held = eventually(Duration::from_secs(60), || async {
        (orders_counter(&metrics, "switchyard_batches_held_total") >= held_before + 5).then_some(())
    })
    .await;
    assert!(held.is_some(), "the batch was held and retried");
    assert_eq!(stack.number("SELECT count(*) FROM orders").await, 0);
    let (ready, _, dead_letter_queue) = stack.queued(ConsumerGroup::Orders).await;
    assert_eq!(
        (ready, dead_letter_queue),
        (0, 0),
        "held, not requeued nor dead-lettered"
    );

    stack.set_read_only(false).await;
    let applied = stack.wait_for("SELECT count(*) FROM orders", 20, 60).await;
    let drained = crate::support::eventually_drained(&stack, ConsumerGroup::Orders).await;
    workers.stop().await;

    assert_eq!(applied, 20);
    assert!(drained);
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(
        stack.number("SELECT count(*) FROM processed_events").await,
        20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqp_cut_while_a_batch_is_in_hand_loses_nothing_and_applies_nothing_twice() {
    let _watchdog = Watchdog::new(
        "an_amqp_cut_while_a_batch_is_in_hand_loses_nothing_and_applies_nothing_twice",
        crate::support::TEST_LIMIT,
    );
    let stack = Stack::new().await;
    let events: Vec<_> = (0..300).map(|_| order_placed(Uuid::now_v7())).collect();
    stack.publish(&events).await;
    let amqp_url = stack.settings.expose_amqp_url().to_owned();
    let (proxy, through_proxy) = TcpProxy::in_front_of(&amqp_url).await;
    let mut settings = stack.settings.clone();
    settings.amqp_url = through_proxy.into();

    // Hold the worker's first batch in the database: its claim waits on this lock.
    let blocker = stack.database.lock_exclusively(&["processed_events"]).await;
    let workers = stack.start_with(settings, stack.options(&[ConsumerGroup::Orders], 1));
    let waiting = eventually(Duration::from_secs(30), || async {
        (stack
            .number(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await
            > 0)
        .then_some(())
    })
    .await;
    assert!(
        waiting.is_some(),
        "the worker's batch is waiting on the lock"
    );

    // The AMQP connection drops while that batch is in hand. The runtime
    // gives the batch its grace, drops it (never acked: its acker died with
    // the connection) and opens a new connection, where delivery tags start
    // again at 1; the broker redelivers.
    proxy.cut();
    let consumers_gone = eventually(Duration::from_secs(30), || async {
        let orders = stack.depth(ConsumerGroup::Orders).await;
        (orders.consumers == 0 && orders.work == 300).then_some(())
    })
    .await;
    assert!(consumers_gone.is_some(), "the broker took the batch back");
    proxy.restore();
    let recovered = eventually(Duration::from_secs(60), || async {
        let orders = stack.depth(ConsumerGroup::Orders).await;
        (orders.consumers == 1 && orders.work < 300).then_some(())
    })
    .await;
    assert!(
        recovered.is_some(),
        "the worker consumes again after recovery"
    );

    // Only now may the old batch commit and be acknowledged.
    blocker.commit().await.unwrap();
    let applied = stack
        .wait_for("SELECT count(*) FROM orders", 300, 120)
        .await;
    let drained = crate::support::eventually_drained(&stack, ConsumerGroup::Orders).await;
    workers.stop().await;

    assert_eq!(applied, 300);
    assert!(drained, "every delivery was settled");
    assert_eq!(
        stack.number("SELECT count(*) FROM processed_events").await,
        300
    );
    assert_eq!(
        stack.number("SELECT count(*) FROM order_lines").await,
        300,
        "nothing applied twice"
    );
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);
}
