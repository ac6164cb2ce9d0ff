//! Stopping a worker process at the worst moments, with the real binary:
//! what it received and could not settle goes back to the broker, never
//! under another delivery's ack.

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::groups::ConsumerGroup;
use shared::testing::eventually;
use uuid::Uuid;

use crate::processing::order_placed;
use crate::support::{Stack, consumers_binary, exit_within, sigterm_and_wait};

/// A child process's stderr, read line by line as it is written.
struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    fn of(child: &mut Child) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Self(lines)
    }

    /// Waits (at most 60 s) for a line containing `text`.
    async fn wait_for(&self, text: &str) {
        let seen = eventually(Duration::from_secs(60), || async {
            self.0
                .lock()
                .unwrap()
                .iter()
                .any(|line| line.contains(text))
                .then_some(())
        })
        .await;
        assert!(seen.is_some(), "logged {text:?}: {}", self.text());
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

/// The database's clock now.
async fn database_now(stack: &Stack) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&stack.database.pool)
        .await
        .unwrap()
}

/// Waits (at most 60 s) until no statement started before `before` waits
/// for a lock in the stack's database.
async fn statements_before_ended(stack: &Stack, before: chrono::DateTime<chrono::Utc>) -> bool {
    eventually(Duration::from_secs(60), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = $1 AND wait_event_type = 'Lock' AND query_start < $2",
        )
        .bind(stack.database.name())
        .bind(before)
        .fetch_one(&stack.database.pool)
        .await
        .unwrap();
        (waiting == 0).then_some(())
    })
    .await
    .is_some()
}

/// `consumers run` for orders, logging at info, with `extra` flags.
fn worker(stack: &Stack, extra: &[&str]) -> Child {
    worker_of(stack, "orders", extra)
}

/// `consumers run` for `groups`, logging at info, with `extra` flags.
fn worker_of(stack: &Stack, groups: &str, extra: &[&str]) -> Child {
    let mut command = consumers_binary(stack);
    command
        .args([
            "run",
            "--group",
            groups,
            "--batch-size",
            "16",
            "--prefetch",
            "64",
        ])
        .args(["--http-address", &crate::http::free_address().to_string()])
        .args(extra)
        .envs(crate::support::QUICK_RETRY_ENVIRONMENT)
        .env("RUST_LOG", "info")
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command.spawn().expect("spawn consumers run")
}

/// The scenario of an operator stopping a worker during an incident: a
/// lock held elsewhere holds its batch, SIGTERM comes while it waits to
/// try again, the lock is released right after, and the worker goes on
/// finishing what it received. The held batch must go back to the queue,
/// not be acked by the next batch's `multiple` ack.
async fn a_stop_while_a_batch_is_held_loses_nothing(extra: &[&str]) {
    let stack = Stack::new().await;
    let events: Vec<_> = (0..200).map(|_| order_placed(Uuid::now_v7())).collect();
    let lock = stack.database.lock_exclusively(&["orders"]).await;
    stack.publish(&events).await;

    let mut first = worker(&stack, &[&["--batch-timeout-ms", "1000"], extra].concat());
    let logs = Logs::of(&mut first);
    logs.wait_for("holding it and trying again").await;
    let signalled_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&stack.database.pool)
            .await
            .unwrap();
    shared::testing::sigterm(&first);
    logs.wait_for("shutdown requested").await;
    // Keep the lock until the statements of the tries made before the
    // stop have ended (a try given up on ends within a second): released
    // earlier, the held batch's own statement would commit it after all.
    assert!(
        statements_before_ended(&stack, signalled_at).await,
        "{}",
        logs.text()
    );
    lock.rollback().await.unwrap();
    let status = exit_within(&mut first, Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|status| status.success()),
        "the first worker stops by itself: {status:?}\n{}",
        logs.text()
    );

    let mut second = worker(&stack, extra);
    let applied = stack.wait_for("SELECT count(*) FROM orders", 200, 60).await;
    let drained = crate::support::eventually_drained(&stack, ConsumerGroup::Orders).await;
    sigterm_and_wait(&mut second, Duration::from_secs(30)).await;

    assert_eq!(
        applied,
        200,
        "every confirmed event applied; first worker's log:\n{}",
        logs.text()
    );
    assert!(drained);
    assert_eq!(
        stack.number("SELECT count(*) FROM processed_events").await,
        200
    );
    assert_eq!(stack.number("SELECT count(*) FROM order_lines").await, 200);
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_a_batch_is_held_gives_it_back_and_loses_nothing() {
    a_stop_while_a_batch_is_held_loses_nothing(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_a_lingering_batch_is_held_gives_it_back_and_loses_nothing() {
    a_stop_while_a_batch_is_held_loses_nothing(&["--batch-linger-ms", "1000"]).await;
}

/// The same when the group is handed over to a process that joins: the
/// first process runs orders and sales, both held behind locks; a second
/// joins and is handed one of them while its batch is held. Nothing the
/// first had received may be acked without being applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_handed_over_while_its_batch_is_held_loses_nothing() {
    let stack = Stack::new().await;
    let events: Vec<_> = (0..200).map(|_| order_placed(Uuid::now_v7())).collect();
    let lock = stack
        .database
        .lock_exclusively(&["orders", "sales_orders"])
        .await;
    stack.publish(&events).await;
    let timeout = ["--batch-timeout-ms", "1000"];
    let mut first = worker_of(&stack, "orders,sales", &timeout);
    let first_logs = Logs::of(&mut first);
    first_logs.wait_for("holding it and trying again").await;
    let mut second = worker_of(&stack, "orders,sales", &timeout);
    let second_logs = Logs::of(&mut second);
    first_logs.wait_for("handing this one over").await;
    let handed_over_at = database_now(&stack).await;
    // Released while the first process still finishes what it received.
    assert!(
        statements_before_ended(&stack, handed_over_at).await,
        "{}",
        first_logs.text()
    );
    lock.rollback().await.unwrap();
    second_logs.wait_for("group lease taken").await;
    let stopped = sigterm_and_wait(&mut first, Duration::from_secs(30)).await;
    assert!(
        stopped.is_some_and(|status| status.success()),
        "{}",
        first_logs.text()
    );

    let orders = stack.wait_for("SELECT count(*) FROM orders", 200, 60).await;
    let sales = stack
        .wait_for("SELECT count(*) FROM sales_orders", 200, 60)
        .await;
    let mut drained = true;
    for group in [ConsumerGroup::Orders, ConsumerGroup::Sales] {
        drained &= crate::support::eventually_drained(&stack, group).await;
    }
    sigterm_and_wait(&mut second, Duration::from_secs(30)).await;

    assert_eq!(
        (orders, sales),
        (200, 200),
        "first process:\n{}",
        first_logs.text()
    );
    assert!(drained);
    assert_eq!(
        stack.number("SELECT count(*) FROM processed_events").await,
        400
    );
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);
}

/// The start-up doctor of `consumers run` warns that the stock broker
/// takes bodies far above the event limit, naming the setting to lower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_run_warns_when_the_broker_takes_bodies_far_above_the_event_limit() {
    let stack = Stack::new().await;
    let mut process = worker(&stack, &[]);
    let logs = Logs::of(&mut process);
    logs.wait_for("far above the event limit").await;
    logs.wait_for("worker consuming").await;
    let stopped = sigterm_and_wait(&mut process, Duration::from_secs(30)).await;
    assert!(stopped.is_some_and(|status| status.success()));
    assert!(logs.text().contains("max_message_size"), "{}", logs.text());
}
