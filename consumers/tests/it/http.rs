//! The real `consumers run` binary serves `/healthz`, `/readyz` and
//! `/metrics` on `--http-address` from the moment it starts: alive and not
//! ready while its database is unreachable (it waits instead of exiting),
//! ready once it is back, readiness following the database afterwards.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use shared::testing::{TcpProxy, Watchdog, database_url, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use shared::groups::ConsumerGroup;

use crate::processing::order_placed;
use crate::support::{Stack, output_of, sigterm_and_wait};

/// Status and body of `GET path`, or `None` when nothing answers.
pub async fn get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Waits until `/readyz` says the broker and the database are both reachable.
async fn until_ready(address: SocketAddr) -> Option<(u16, String)> {
    until(
        address,
        "/readyz",
        (200, r#"{"broker":true,"database":true}"#),
    )
    .await
}

/// Waits until `GET path` answers `expected` (status, body).
async fn until(address: SocketAddr, path: &str, expected: (u16, &str)) -> Option<(u16, String)> {
    eventually(Duration::from_secs(60), || async {
        get(address, path)
            .await
            .filter(|(status, body)| *status == expected.0 && body == expected.1)
    })
    .await
}

/// A loopback address nothing listens on now (the binary binds it next).
pub fn free_address() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

struct Running(Child);

impl Running {
    /// The real `consumers run --group orders`, serving on `address`, with
    /// the stack's namespace and retry settings and `environment` on top.
    fn orders(stack: &Stack, address: SocketAddr, environment: &[(&str, &str)]) -> Self {
        Self::orders_with(stack, address, environment, &[])
    }

    /// As [`Running::orders`], with more flags.
    fn orders_with(
        stack: &Stack,
        address: SocketAddr,
        environment: &[(&str, &str)],
        flags: &[&str],
    ) -> Self {
        Running(
            Command::new(env!("CARGO_BIN_EXE_consumers"))
                .args([
                    "run",
                    "--group",
                    "orders",
                    "--http-address",
                    &address.to_string(),
                ])
                .args(flags)
                .env("SWITCHYARD_NAMESPACE", &stack.settings.namespace)
                .envs(crate::support::QUICK_RETRY_ENVIRONMENT)
                .env("DATABASE_URL", database_url(&stack.settings))
                .envs(environment.iter().copied())
                .env("RUST_LOG", "warn")
                .spawn()
                .expect("spawn consumers"),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_health_readiness_and_metrics_and_waits_for_its_database() {
    let _watchdog = Watchdog::new(
        "the_binary_serves_health_readiness_and_metrics_and_waits_for_its_database",
        crate::support::TEST_LIMIT,
    );
    let stack = Stack::new().await;
    let (proxy, through_proxy) = TcpProxy::in_front_of(&database_url(&stack.settings)).await;
    proxy.cut();
    let address = free_address();
    let mut worker = Running::orders(&stack, address, &[("DATABASE_URL", &through_proxy)]);

    // Database unreachable: alive, not ready, and still running.
    let alive = until(address, "/healthz", (200, r#"{"status":"alive"}"#)).await;
    let waiting = until(
        address,
        "/readyz",
        (503, r#"{"broker":false,"database":false}"#),
    )
    .await;
    assert!(
        alive.is_some(),
        "/healthz is served while the database is awaited"
    );
    assert!(
        waiting.is_some(),
        "/readyz says not ready while the database is awaited"
    );
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "the worker exited instead of waiting for its database"
    );

    proxy.restore();
    let ready = until_ready(address).await;
    assert!(ready.is_some(), "ready once the database is back");

    stack.publish(&[order_placed(Uuid::now_v7())]).await;
    assert_eq!(
        stack.wait_for("SELECT count(*) FROM orders", 1, 30).await,
        1
    );
    let metrics = eventually(Duration::from_secs(30), || async {
        get(address, "/metrics")
            .await
            .filter(|(status, body)| *status == 200 && body.contains(r#"outcome="applied""#))
    })
    .await
    .expect("/metrics counts the applied event");
    for name in [
        "switchyard_events_total",
        "switchyard_batch_size",
        r#"switchyard_batches_total{group="orders",path="set_wise"}"#,
        "switchyard_end_to_end_lag_seconds",
    ] {
        assert!(
            metrics.1.contains(name),
            "{name} missing from {}",
            metrics.1
        );
    }

    // Readiness follows the database, not a flag set by hand.
    proxy.cut();
    let lost = until(
        address,
        "/readyz",
        (503, r#"{"broker":true,"database":false}"#),
    )
    .await;
    assert!(lost.is_some(), "not ready while the database is cut");
    proxy.restore();
    let back = until_ready(address).await;
    assert!(back.is_some(), "ready again once it is back");
}

/// `--runtime-threads` (and `SWITCHYARD_RUNTIME_THREADS`) size the runtime
/// the workers run on — read back from the runtime itself on `/metrics` —
/// and the default is one thread; the workers apply events on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_run_on_the_runtime_threads_asked_for() {
    let _watchdog = Watchdog::new(
        "the_workers_run_on_the_runtime_threads_asked_for",
        crate::support::TEST_LIMIT,
    );
    let stack = Stack::new().await;
    for (environment, flags, threads) in [
        (&[][..], &[][..], 1),
        (&[("SWITCHYARD_RUNTIME_THREADS", "3")][..], &[][..], 3),
        (
            &[("SWITCHYARD_RUNTIME_THREADS", "3")][..],
            &["--runtime-threads", "2"][..],
            2,
        ),
    ] {
        let address = free_address();
        let _worker = Running::orders_with(&stack, address, environment, flags);
        assert!(until_ready(address).await.is_some(), "ready");
        let wanted = format!("switchyard_runtime_threads {threads}\n");
        let metrics = eventually(Duration::from_secs(30), || async {
            get(address, "/metrics")
                .await
                .filter(|(status, body)| *status == 200 && body.contains(&wanted))
        })
        .await;
        assert!(
            metrics.is_some(),
            "{environment:?} {flags:?}: wanted {wanted:?} in {:?}",
            get(address, "/metrics").await
        );
    }
    let applied = stack.number("SELECT count(*) FROM orders").await;
    stack.publish(&[order_placed(Uuid::now_v7())]).await;
    let address = free_address();
    let _worker = Running::orders(&stack, address, &[]);
    assert_eq!(
        stack
            .wait_for("SELECT count(*) FROM orders", applied + 1, 30)
            .await,
        applied + 1,
        "the one-thread runtime applies events"
    );
}

/// A broker cut longer than lapin's own recovery (a few seconds of
/// reconnect attempts) used to end `consumers run` with an error. The
/// process now stays up, reports the broker not ready, opens a new
/// connection once the broker is back, and consumes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cut_longer_than_lapins_recovery_reconnects_the_workers_in_process() {
    let _watchdog = Watchdog::new(
        "a_broker_cut_longer_than_lapins_recovery_reconnects_the_workers_in_process",
        crate::support::TEST_LIMIT,
    );
    let stack = Stack::new().await;
    let (proxy, through_proxy) = TcpProxy::in_front_of(stack.settings.expose_amqp_url()).await;
    let address = free_address();
    let mut worker = Running::orders(
        &stack,
        address,
        &[
            ("DATABASE_URL", &database_url(&stack.settings)),
            ("AMQP_URL", &through_proxy),
        ],
    );
    let ready = until_ready(address).await;
    assert!(ready.is_some(), "ready before the cut");

    proxy.cut();
    let down = until(
        address,
        "/readyz",
        (503, r#"{"broker":false,"database":true}"#),
    )
    .await;
    assert!(down.is_some(), "not ready while the broker is cut");
    // lapin gives up its own recovery; the workers open a new connection.
    let gave_up = eventually(Duration::from_secs(90), || async {
        get(address, "/metrics").await.filter(|(status, body)| {
            *status == 200 && body.contains("switchyard_broker_reconnects_total 1")
        })
    })
    .await;
    assert!(
        gave_up.is_some(),
        "the workers noticed the connection was lost for good"
    );
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "the process exited instead of reconnecting"
    );

    proxy.restore();
    let back = until_ready(address).await;
    assert!(back.is_some(), "ready again once the broker is back");
    stack.publish(&[order_placed(Uuid::now_v7())]).await;
    assert_eq!(
        stack.wait_for("SELECT count(*) FROM orders", 1, 60).await,
        1,
        "the reconnected workers consume"
    );
    assert!(worker.0.try_wait().unwrap().is_none());
}

/// The value of the sample `name{labels}` on `address`'s `/metrics`.
async fn sample(address: SocketAddr, name_and_labels: &str) -> Option<f64> {
    let (_, metrics) = get(address, "/metrics").await?;
    let prefix = format!("{name_and_labels} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
}

/// `consumers` with `args` exits with an error naming `flag`.
async fn refused(args: &[&str], flag: &str, what: &str) {
    let output = output_of({
        let mut command = Command::new(env!("CARGO_BIN_EXE_consumers"));
        command.args(args);
        command
    })
    .await;
    assert!(!output.status.success(), "{what}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(flag), "the error names {flag}: {stderr}");
}

/// Waits until the orders work queue holds nothing ready: what was
/// published is with the worker.
async fn until_delivered(stack: &Stack) -> bool {
    eventually(Duration::from_secs(60), || async {
        (stack.queued(ConsumerGroup::Orders).await.0 == 0).then_some(())
    })
    .await
    .is_some()
}

/// `SWITCHYARD_BATCH_LINGER_MS`: the worker holds a batch's first event
/// for more to join it. An order is delivered and held; four more
/// published after it join it, and the five are applied in one batch (the
/// batch size, 5, ends the wait). Without the linger the first would have
/// been applied alone as soon as it arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_its_linger_for_more_events_to_join_it() {
    let _watchdog = Watchdog::new(
        "a_batch_waits_its_linger_for_more_events_to_join_it",
        crate::support::TEST_LIMIT,
    );
    let stack = Stack::new().await;
    let address = free_address();
    let _worker = Running::orders_with(
        &stack,
        address,
        &[("SWITCHYARD_BATCH_LINGER_MS", "10000")],
        &["--batch-size", "5"],
    );
    assert!(until_ready(address).await.is_some(), "ready");
    stack.publish(&[order_placed(Uuid::now_v7())]).await;
    assert!(
        until_delivered(&stack).await,
        "the first order is delivered"
    );
    let more: Vec<_> = (0..4).map(|_| order_placed(Uuid::now_v7())).collect();
    stack.publish(&more).await;
    assert_eq!(
        stack.wait_for("SELECT count(*) FROM orders", 5, 60).await,
        5,
        "the five orders are applied"
    );
    let batches = eventually(Duration::from_secs(30), || async {
        sample(address, r#"switchyard_batch_size_count{group="orders"}"#)
            .await
            .filter(|batches| *batches > 0.0)
    })
    .await;
    assert_eq!(batches, Some(1.0), "one batch");
    assert_eq!(
        sample(address, r#"switchyard_batch_size_sum{group="orders"}"#).await,
        Some(5.0),
        "of five events"
    );
}

/// `--batch-linger-ms`: a stop request ends the linger. The worker lingers
/// 10 s on one delivered order; SIGTERM makes it apply, commit and ack it
/// and exit well before the linger would have ended (nothing is left in
/// the queue once its channel is gone). An out-of-range linger is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_the_linger_and_the_held_batch_is_committed() {
    let _watchdog = Watchdog::new(
        "a_stop_ends_the_linger_and_the_held_batch_is_committed",
        crate::support::TEST_LIMIT,
    );
    let stack = Stack::new().await;
    refused(
        &["run", "--batch-linger-ms", "10001"],
        "--batch-linger-ms",
        "a linger over 10 s is refused",
    )
    .await;

    let address = free_address();
    let mut worker = Running::orders_with(&stack, address, &[], &["--batch-linger-ms", "10000"]);
    assert!(until_ready(address).await.is_some(), "ready");
    stack.publish(&[order_placed(Uuid::now_v7())]).await;
    assert!(until_delivered(&stack).await, "the order is delivered");
    let status = sigterm_and_wait(&mut worker.0, Duration::from_secs(8))
        .await
        .expect("the stop does not wait out the 10 s linger");
    assert!(status.success(), "it exits cleanly");
    assert_eq!(
        stack.number("SELECT count(*) FROM orders").await,
        1,
        "applied"
    );
    assert_eq!(
        stack.queued(ConsumerGroup::Orders).await,
        (0, 0, 0),
        "acknowledged: nothing went back to the queue"
    );
}

/// Waits until the orders group's `switchyard_batches_held_total` on
/// `address` reaches `count`.
async fn until_held(address: SocketAddr, count: u32) -> Option<f64> {
    eventually(Duration::from_secs(60), || async {
        sample(address, r#"switchyard_batches_held_total{group="orders"}"#)
            .await
            .filter(|held| *held >= f64::from(count))
    })
    .await
}

/// Waits until the orders queues hold `expected` (ready, retrying, dead).
async fn until_queued(stack: &Stack, expected: (u32, u32, u32)) -> Option<()> {
    eventually(Duration::from_secs(30), || async {
        (stack.queued(ConsumerGroup::Orders).await == expected).then_some(())
    })
    .await
}

/// Backends of the stack's database waiting for a lock.
async fn lock_waiters(stack: &Stack) -> i64 {
    stack
        .number(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await
}

/// `SWITCHYARD_BATCH_TIMEOUT_MS`: a batch stuck in the database (here
/// behind an operator's lock on `orders`) is given up at its deadline and
/// held as in an outage: tried again on fresh connections, `/readyz` not
/// ready, `switchyard_batches_held_total` counting, and the backends of
/// the tries given up end (they check for their client every second), so
/// one waits at a time, not one more per try. A stop request is not held
/// up by the stuck batch: the order goes back to the queue unapplied, and
/// once the lock is gone a new process applies it once. A deadline under
/// 100 ms is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stuck_behind_a_lock_is_given_up_at_its_deadline_and_tried_again() {
    let _watchdog = Watchdog::new(
        "a_batch_stuck_behind_a_lock_is_given_up_at_its_deadline_and_tried_again",
        crate::support::TEST_LIMIT,
    );
    let stack = Stack::new().await;
    refused(
        &["run", "--batch-timeout-ms", "99"],
        "--batch-timeout-ms",
        "a deadline under 100 ms is refused",
    )
    .await;

    let address = free_address();
    let mut worker = Running::orders(&stack, address, &[("SWITCHYARD_BATCH_TIMEOUT_MS", "1000")]);
    assert!(until_ready(address).await.is_some(), "ready");
    let operator = stack.database.lock_exclusively(&["orders"]).await;
    stack.publish(&[order_placed(Uuid::now_v7())]).await;

    let held = until_held(address, 3).await;
    assert!(
        held.is_some(),
        "the stuck batch is given up and tried again"
    );
    let (status, body) = get(address, "/readyz").await.expect("answers");
    assert_eq!(
        (status, body.as_str()),
        (503, r#"{"broker":true,"database":false}"#),
        "not ready while its batch cannot be applied"
    );
    let one_waiter = eventually(Duration::from_secs(30), || async {
        (lock_waiters(&stack).await == 1).then_some(())
    })
    .await;
    assert!(
        one_waiter.is_some(),
        "the given-up tries' backends ended: {} wait for the lock",
        lock_waiters(&stack).await
    );

    let status = sigterm_and_wait(&mut worker.0, Duration::from_secs(20))
        .await
        .expect("the stop is not held up by the stuck batch");
    assert!(status.success(), "it exits cleanly");
    let back = until_queued(&stack, (1, 0, 0)).await;
    assert!(back.is_some(), "the unapplied order is back in the queue");
    assert!(
        eventually(Duration::from_secs(30), || async {
            (lock_waiters(&stack).await == 0).then_some(())
        })
        .await
        .is_some(),
        "no backend of the stopped process is left waiting"
    );

    operator.rollback().await.unwrap();
    let _worker = Running::orders(&stack, address, &[]);
    assert_eq!(
        stack.wait_for("SELECT count(*) FROM orders", 1, 60).await,
        1,
        "applied once the lock is gone"
    );
    assert!(until_delivered(&stack).await);
    assert_eq!(
        stack
            .number("SELECT count(*) FROM processed_events WHERE consumer_group = 'orders'")
            .await,
        1
    );
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);
    let acked = until_queued(&stack, (0, 0, 0)).await;
    assert!(acked.is_some(), "acknowledged");
}

/// A database that stops answering without closing anything (a network
/// partition: here a proxy holding every byte) is the same to a worker as
/// a lock: the batch sent into it is given up at its deadline and held,
/// the probes that follow give up after 5 s each instead of waiting for
/// TCP to time out, `/readyz` says the database is not ready, and once the
/// traffic flows again the order is applied once and acknowledged; a
/// stop during a later silence is not held up by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stops_answering_holds_the_batch_until_it_answers_again() {
    let _watchdog = Watchdog::new(
        "a_database_that_stops_answering_holds_the_batch_until_it_answers_again",
        crate::support::TEST_LIMIT,
    );
    let stack = Stack::new().await;
    let (proxy, through_proxy) = TcpProxy::in_front_of(&database_url(&stack.settings)).await;
    let address = free_address();
    let mut worker = Running::orders(
        &stack,
        address,
        &[
            ("DATABASE_URL", &through_proxy),
            ("SWITCHYARD_BATCH_TIMEOUT_MS", "1000"),
        ],
    );
    assert!(until_ready(address).await.is_some(), "ready");
    let leased = eventually(Duration::from_secs(60), || async {
        sample(address, r#"switchyard_group_lease{group="orders"}"#)
            .await
            .filter(|held| *held == 1.0)
    })
    .await;
    assert!(leased.is_some(), "consuming: the group's lease is held");

    proxy.stall();
    stack.publish(&[order_placed(Uuid::now_v7())]).await;
    let held = until_held(address, 1).await;
    assert!(
        held.is_some(),
        "the batch sent into the silence is given up"
    );
    let down = until(
        address,
        "/readyz",
        (503, r#"{"broker":true,"database":false}"#),
    )
    .await;
    assert!(down.is_some(), "not ready while the database is silent");

    proxy.restore();
    assert_eq!(
        stack.wait_for("SELECT count(*) FROM orders", 1, 60).await,
        1,
        "applied once the database answers again"
    );
    assert!(until_ready(address).await.is_some(), "ready again");
    let acked = until_queued(&stack, (0, 0, 0)).await;
    assert!(acked.is_some(), "acknowledged");
    assert_eq!(
        stack
            .number("SELECT count(*) FROM processed_events WHERE consumer_group = 'orders'")
            .await,
        1
    );

    // A second order, applied within the report period of the first, so
    // its figures are reported at the stop; then silence again. The stop
    // (its last report, the lease keeper, the pool's close) is not held
    // up by it.
    stack.publish(&[order_placed(Uuid::now_v7())]).await;
    assert_eq!(
        stack.wait_for("SELECT count(*) FROM orders", 2, 60).await,
        2,
        "the second order is applied"
    );
    // Its commit is seen here before the worker may have read the
    // database's answer: silencing the database now could hold that
    // answer back, and the stop would rightly give the order back.
    assert!(
        until_queued(&stack, (0, 0, 0)).await.is_some(),
        "the second order is acknowledged"
    );
    proxy.stall();
    let status = sigterm_and_wait(&mut worker.0, Duration::from_secs(30))
        .await
        .expect("the stop is not held up by a silent database");
    assert!(status.success(), "it exits cleanly");
    proxy.restore();
    let acked = until_queued(&stack, (0, 0, 0)).await;
    assert!(acked.is_some(), "both orders were acknowledged");
}
