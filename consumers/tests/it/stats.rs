//! `consumers stats` and the queue gauges against a prepared state: 20
//! events queued for orders, 5 of them held unacknowledged by a consumer,
//! 3 waiting to retry, 2 open dead letters (and one resolved). The figures
//! must match the broker's own counts (`rabbitmqctl list_queues`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use shared::events::Event;
use shared::groups::ConsumerGroup;
use shared::settings::Settings;
use shared::testing::{Watchdog, eventually};
use uuid::Uuid;

use crate::http::{free_address, get};
use crate::processing::order_placed;
use crate::support::{
    Stack, TEST_LIMIT, consumers_binary, output_of, settings_with, sigterm_and_wait,
};

fn consumers(stack: &Stack, args: &[&str]) -> Command {
    let mut command = consumers_binary(stack);
    command
        .args(args)
        .env("SWITCHYARD_RETRY_MAX_DELAY_MS", "600000");
    command
}

async fn stats_json(stack: &Stack, management: Option<&str>) -> Value {
    let mut command = consumers(stack, &["stats", "--json"]);
    if let Some(url) = management {
        command.env("SWITCHYARD_MANAGEMENT_URL", url);
    }
    let output = output_of(command).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `consumers run --group sales` serving `/metrics` on a free address.
fn sales_workers_serving_metrics(stack: &Stack) -> (std::net::SocketAddr, std::process::Child) {
    let address = free_address();
    let child = consumers(
        stack,
        &[
            "run",
            "--group",
            "sales",
            "--http-address",
            &address.to_string(),
        ],
    )
    .spawn()
    .unwrap();
    (address, child)
}

fn orders(stats: &Value) -> Value {
    stats["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|group| group["group"] == "orders")
        .unwrap()
        .clone()
}

/// (ready, unacknowledged, consumers) of `queue` as `rabbitmqctl` reports them.
pub async fn broker_counts(settings: &Settings, queue: String) -> Option<(u64, u64, u64)> {
    let mut rabbitmqctl = shared::local_services::rabbitmqctl(settings.expose_amqp_url());
    tokio::task::spawn_blocking(move || {
        let output = rabbitmqctl
            .args([
                "-q",
                "list_queues",
                "-p",
                "/",
                "name",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.first() == Some(&queue.as_str()) && fields.len() == 4).then(|| {
                    (
                        fields[1].parse().unwrap_or(u64::MAX),
                        fields[2].parse().unwrap_or(u64::MAX),
                        fields[3].parse().unwrap_or(u64::MAX),
                    )
                })
            })
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_the_queue_gauges_match_the_brokers_counts() {
    let _watchdog = Watchdog::new(
        "stats_and_the_queue_gauges_match_the_brokers_counts",
        TEST_LIMIT,
    );
    // Long retry delays: the prepared retries stay in their wait queue.
    let stack = Stack::with_settings(settings_with(&[(
        "SWITCHYARD_RETRY_MAX_DELAY_MS",
        "600000",
    )]))
    .await;
    let events: Vec<Event> = (0..20).map(|_| order_placed(Uuid::now_v7())).collect();
    stack.publish(&events).await;
    let queues = stack.isolated.topology.group(ConsumerGroup::Orders).clone();

    // A consumer that takes 5 and never acknowledges them.
    let connection = shared::testing::connect(&stack.settings).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(5, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queues.work.as_str().into(),
            "holder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut held = Vec::new();
    while held.len() < 5 {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        held.push(delivery);
    }
    // Three waiting to retry.
    for index in 0..3 {
        channel
            .basic_publish(
                "".into(),
                queues.retry[0].as_str().into(),
                BasicPublishOptions::default(),
                format!("retry {index}").as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Two open dead letters and a resolved one.
    for status in ["open", "open", "resolved"] {
        sqlx::query(
            "INSERT INTO dead_letters (consumer_group, routing_key, body, reason, error_kind, attempts, \
               first_failed_at, last_failed_at, status) VALUES ('orders', 'x', '\\x00', 'r', 'k', 1, now(), now(), $1)",
        )
        .bind(status)
        .execute(&stack.database.pool)
        .await
        .unwrap();
    }

    let expected = |figures: &Value| {
        figures["ready"] == 15
            && figures["unacked"] == 5
            && figures["retrying"] == 3
            && figures["consumers"] == 1
            && figures["open_dead_letters"] == 2
            && figures["backlog"] == 23
    };
    // The management API refreshes its figures every few seconds.
    let stats = eventually(Duration::from_secs(60), || async {
        let stats = stats_json(&stack, None).await;
        expected(&orders(&stats)).then_some(stats)
    })
    .await;
    let stats = stats.unwrap_or_else(|| {
        panic!(
            "stats never matched: {}",
            orders(&stats_json_blocking(&stack))
        )
    });
    assert!(stats["management_unavailable"].is_null(), "{stats}");
    // rabbitmqctl itself can fail on a loaded machine: asked until it answers.
    let counts = eventually(Duration::from_secs(60), || async {
        broker_counts(&stack.settings, queues.work.clone()).await
    })
    .await;
    assert_eq!(
        counts,
        Some((15, 5, 1)),
        "the broker's own counts for {}",
        queues.work
    );

    // Without the management API: said, and the rest still right.
    let degraded = stats_json(&stack, Some("http://127.0.0.1:1")).await;
    let figures = orders(&degraded);
    assert!(figures["unacked"].is_null());
    assert_eq!(
        (
            figures["ready"].clone(),
            figures["retrying"].clone(),
            figures["backlog"].clone()
        ),
        (15.into(), 3.into(), 18.into())
    );
    assert!(
        degraded["management_unavailable"]
            .as_str()
            .unwrap()
            .contains("not reachable"),
        "{degraded}"
    );
    let off = stats_json(&stack, Some("off")).await;
    assert!(
        off["management_unavailable"]
            .as_str()
            .unwrap()
            .contains("switched off")
    );

    // The table, refreshed in place by --watch until SIGTERM.
    let mut watch = consumers(&stack, &["stats", "--watch", "1"]);
    let mut child = watch.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let refreshes = tokio::task::spawn_blocking(move || {
        let mut headers = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            if line.starts_with("group ") {
                headers += 1;
                if headers == 2 {
                    break;
                }
            }
        }
        headers
    });
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(60), refreshes)
            .await
            .unwrap()
            .unwrap(),
        2
    );
    let status = sigterm_and_wait(&mut child, Duration::from_secs(30))
        .await
        .expect("--watch ends on SIGTERM");
    assert!(
        status.success(),
        "--watch ends cleanly on SIGTERM: {status}"
    );

    // `consumers run` exports the same figures as gauges (sampled).
    let (address, mut worker) = sales_workers_serving_metrics(&stack);
    let gauges = eventually(Duration::from_secs(60), || async {
        let (_, body) = get(address, "/metrics").await?;
        (body.contains("switchyard_queue_backlog{group=\"orders\"} 23")
            && body.contains("switchyard_queue_unacked{group=\"orders\"} 5")
            && body.contains("switchyard_dead_letters_open{group=\"orders\"} 2"))
        .then_some(())
    })
    .await;
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(gauges.is_some(), "the gauges show the prepared state");
    drop(held);
    let _ = connection.close(200, "OK".into()).await;
}

fn stats_json_blocking(stack: &Stack) -> Value {
    let output = consumers(stack, &["stats", "--json"]).output().unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

#[test]
fn the_keda_example_scales_on_the_backlog_the_workers_export() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/keda/orders-workers.yaml"
    );
    let document: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(document["kind"].as_str(), Some("ScaledObject"));
    assert!(document["spec"]["minReplicaCount"].as_u64() >= Some(1));
    let trigger = &document["spec"]["triggers"][0];
    assert_eq!(trigger["type"].as_str(), Some("prometheus"));
    let query = trigger["metadata"]["query"].as_str().unwrap();
    assert_eq!(
        query,
        format!(
            "max({}{{group=\"orders\"}})",
            runtime::metrics::QUEUE_BACKLOG
        )
    );
}

/// Publishes `events` with their AMQP send time set to `sent_at` (seconds),
/// as if their publisher had sent them then.
async fn publish_sent_at(stack: &Stack, events: &[(Event, i64)]) {
    let publisher = stack.publisher().await;
    for (event, sent_at) in events {
        let mut message = shared::publish::OutgoingMessage::for_event(event);
        message.properties = message.properties.with_timestamp(*sent_at as u64);
        publisher.publish_message(message).await.unwrap();
    }
    publisher.close().await;
}

fn orders_oldest(stats: &Value) -> Option<f64> {
    orders(stats)["oldest_waiting_seconds"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_waiting_age_comes_from_how_far_the_workers_got() {
    let _watchdog = Watchdog::new(
        "the_oldest_waiting_age_comes_from_how_far_the_workers_got",
        TEST_LIMIT,
    );
    let stack = Stack::with_settings(settings_with(&[(
        "SWITCHYARD_RETRY_MAX_DELAY_MS",
        "600000",
    )]))
    .await;
    let start = chrono::Utc::now().timestamp();
    // Five events sent 600..596 s ago; nobody has taken anything yet.
    let first: Vec<(Event, i64)> = (0..5)
        .map(|index| (order_placed(Uuid::now_v7()), start - 600 + index))
        .collect();
    publish_sent_at(&stack, &first).await;
    let before = stats_json(&stack, Some("off")).await;
    assert_eq!(orders(&before)["ready"], 5, "{before}");
    assert!(
        orders(&before)["oldest_waiting_seconds"].is_null(),
        "unknown before any worker reported: {before}"
    );

    // The orders workers take them and report how far they got (at the
    // latest when they stop).
    let mut run = consumers(
        &stack,
        &["run", "--group", "orders", "--http-address", "127.0.0.1:0"],
    );
    let mut worker = run.spawn().unwrap();
    stack.wait_for("SELECT count(*) FROM orders", 5, 60).await;
    let status = sigterm_and_wait(&mut worker, Duration::from_secs(30)).await;
    assert!(status.is_some_and(|status| status.success()), "{status:?}");
    assert_eq!(
        stack
            .number(
                "SELECT extract(epoch FROM newest_taken_sent_at)::bigint FROM queue_positions WHERE consumer_group = 'orders'"
            )
            .await,
        start - 596,
        "the newest send time the workers took"
    );

    // Five more, sent 595..591 s ago, wait: the head is 595 s old, and the
    // figure says at most one second more.
    let second: Vec<(Event, i64)> = (0..5)
        .map(|index| (order_placed(Uuid::now_v7()), start - 595 + index))
        .collect();
    publish_sent_at(&stack, &second).await;
    let waiting = stats_json(&stack, Some("off")).await;
    let now = chrono::Utc::now().timestamp();
    let age = orders_oldest(&waiting).expect("an age") as i64;
    let head_age = now - (start - 595);
    assert_eq!(orders(&waiting)["ready"], 5, "{waiting}");
    assert!(
        (head_age - 1..=head_age + 2).contains(&age),
        "oldest waiting {age} s; the head waited {head_age} s"
    );
    let groups = waiting["groups"].as_array().unwrap();
    assert!(
        groups
            .iter()
            .filter(|group| group["ready"] == 0)
            .all(|group| group["oldest_waiting_seconds"] == 0.0),
        "nothing ready, nothing waits: {waiting}"
    );

    // The same figure as a gauge, from a process running another group.
    let (address, mut sales) = sales_workers_serving_metrics(&stack);
    let gauge = eventually(Duration::from_secs(60), || async {
        let (_, body) = get(address, "/metrics").await?;
        body.lines()
            .find_map(|line| {
                line.strip_prefix("switchyard_queue_oldest_waiting_seconds{group=\"orders\"} ")
            })
            .and_then(|value| value.parse::<f64>().ok())
    })
    .await;
    let _ = sales.kill();
    let _ = sales.wait();
    let gauge = gauge.expect("the gauge is exported");
    assert!(gauge >= (head_age - 1) as f64, "gauge {gauge}");

    // Taken too: nothing waits.
    let mut worker = run.spawn().unwrap();
    stack.wait_for("SELECT count(*) FROM orders", 10, 60).await;
    let drained = eventually(Duration::from_secs(30), || async {
        let stats = stats_json(&stack, Some("off")).await;
        (orders(&stats)["ready"] == 0).then_some(stats)
    })
    .await
    .expect("drained");
    assert_eq!(orders_oldest(&drained), Some(0.0), "{drained}");
    let status = sigterm_and_wait(&mut worker, Duration::from_secs(30)).await;
    assert!(status.is_some_and(|status| status.success()), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_and_lag_percentiles_come_from_what_the_workers_applied() {
    let stack = Stack::with_settings(settings_with(&[(
        "SWITCHYARD_RETRY_MAX_DELAY_MS",
        "600000",
    )]))
    .await;
    let idle = stats_json(&stack, Some("off")).await;
    assert!(orders(&idle)["lag_p50_seconds"].is_null(), "{idle}");
    let slots = orders(&idle)["throughput"].as_array().unwrap().clone();
    assert_eq!(slots.len(), consumers::stats::THROUGHPUT_SLOTS);
    assert!(slots.iter().all(|rate| rate == 0.0), "{idle}");

    // Forty events that happened 3 s before they were published.
    const EVENTS: usize = 40;
    let events: Vec<Event> = (0..EVENTS)
        .map(|_| {
            let mut event = order_placed(Uuid::now_v7());
            event.time = chrono::Utc::now() - chrono::Duration::seconds(3);
            event
        })
        .collect();
    stack.publish(&events).await;
    let mut worker = consumers(
        &stack,
        &["run", "--group", "orders", "--http-address", "127.0.0.1:0"],
    )
    .spawn()
    .unwrap();
    stack
        .wait_for("SELECT count(*) FROM orders", EVENTS as i64, 60)
        .await;
    let status = sigterm_and_wait(&mut worker, Duration::from_secs(30)).await;
    assert!(status.is_some_and(|status| status.success()), "{status:?}");

    // Once the slot they were applied in is over, the slots add up to them.
    let slot = f64::from(consumers::stats::SLOT_SECONDS);
    let stats = eventually(Duration::from_secs(60), || async {
        let stats = stats_json(&stack, Some("off")).await;
        let applied: f64 = orders(&stats)["throughput"]
            .as_array()?
            .iter()
            .filter_map(Value::as_f64)
            .map(|rate| rate * slot)
            .sum();
        ((applied - EVENTS as f64).abs() < 1e-6).then_some(stats)
    })
    .await
    .expect("the throughput slots add up to the events applied");
    let p50 = orders(&stats)["lag_p50_seconds"].as_f64().unwrap();
    let p99 = orders(&stats)["lag_p99_seconds"].as_f64().unwrap();
    // At least the 3 s they waited before being sent; the buckets read
    // high by at most 19 %, and the worker's start adds a few seconds.
    assert!((3.0..=15.0).contains(&p50), "p50 {p50}");
    assert!(p99 >= p50 && p99 <= 15.0, "p99 {p99}");
    let others = stats["groups"].as_array().unwrap();
    assert!(
        others
            .iter()
            .filter(|group| group["group"] != "orders")
            .all(|group| group["lag_p50_seconds"].is_null()),
        "{stats}"
    );

    let mut table = consumers(&stack, &["stats"]);
    table.env("SWITCHYARD_MANAGEMENT_URL", "off");
    let table = output_of(table).await;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.lines().next().unwrap().ends_with("lag p99"),
        "{table}"
    );
    assert!(
        table.lines().any(|line| line.starts_with("orders")),
        "{table}"
    );
}

/// `consumers stats --watch` against a database that stops answering (a
/// proxy holding every byte, as in a network cut): the reading under way
/// gives up after 15 s and the command exits with an error saying so,
/// instead of waiting for TCP to give up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_gives_up_on_a_database_that_stops_answering() {
    let _watchdog = Watchdog::new(
        "stats_gives_up_on_a_database_that_stops_answering",
        TEST_LIMIT,
    );
    let stack = Stack::new().await;
    let (proxy, through_proxy) =
        shared::testing::TcpProxy::in_front_of(&shared::testing::database_url(&stack.settings))
            .await;
    let mut watch = consumers_binary(&stack);
    let mut child = watch
        .args(["stats", "--watch", "1", "--json"])
        .envs(crate::support::QUICK_RETRY_ENVIRONMENT)
        .env("DATABASE_URL", &through_proxy)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::task::spawn_blocking(move || lines.next());
    let first = tokio::time::timeout(Duration::from_secs(60), first)
        .await
        .expect("a first reading")
        .unwrap();
    let first = first.and_then(Result::ok).unwrap_or_default();
    assert!(
        first.starts_with('{'),
        "the first reading is printed: {first}"
    );

    proxy.stall();
    let exited = crate::support::exit_within(&mut child, Duration::from_secs(60))
        .await
        .expect("the command gives up on the silent database");
    assert!(!exited.success(), "it exits with an error: {exited}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    // Given up by the reading's 15 s limit, or sooner by the pool's wait
    // for a connection (the stalled one is not given back): either way the
    // error says the figures could not be read, and why.
    assert!(
        stderr.contains("could not be read within 15 s")
            || (stderr.contains("the figures could not be read")
                && stderr.contains("pool timed out")),
        "the error says why: {stderr}"
    );
}

/// The value of the unlabelled metric `name` in a `/metrics` body.
fn metric_value(body: &str, name: &str) -> Option<f64> {
    shared::testing::prometheus_text::samples(body, name)
        .next()
        .map(|sample| sample.value)
}

/// The workers' queue gauges say when they were sampled. A sample the
/// database does not answer is given up within its patience and counted
/// (the gauges keep their values, the sampled-at time stops), and sampling
/// resumes once the database answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_the_database_does_not_answer_is_given_up_counted_and_sampling_resumes() {
    let _watchdog = Watchdog::new(
        "a_sample_the_database_does_not_answer_is_given_up_counted_and_sampling_resumes",
        TEST_LIMIT,
    );
    let stack = Stack::new().await;
    let (proxy, through_proxy) =
        shared::testing::TcpProxy::in_front_of(&shared::testing::database_url(&stack.settings))
            .await;
    let address = free_address();
    let mut worker = consumers_binary(&stack)
        .args([
            "run",
            "--group",
            "sales",
            "--http-address",
            &address.to_string(),
        ])
        .envs(crate::support::QUICK_RETRY_ENVIRONMENT)
        .env("DATABASE_URL", &through_proxy)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metric = |name: &'static str| async move {
        let (_, body) = get(address, "/metrics").await?;
        metric_value(&body, name)
    };
    let sampled = runtime::metrics::QUEUE_FIGURES_SAMPLED;
    let failed = runtime::metrics::QUEUE_SAMPLES_FAILED_TOTAL;

    let first = eventually(Duration::from_secs(60), || metric(sampled)).await;
    let first = first.expect("the figures were sampled");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now - 120.0..=now + 1.0).contains(&first),
        "sampled at {first}, now {now}"
    );
    assert_eq!(metric(failed).await, None, "no sample failed yet");

    proxy.stall();
    let given_up = eventually(Duration::from_secs(90), || async {
        metric(failed).await.filter(|count| *count >= 1.0)
    })
    .await;
    assert!(
        given_up.is_some(),
        "a sample the database does not answer is given up and counted"
    );
    let stalled_at = metric(sampled).await.expect("the gauge stays");
    proxy.restore();
    let resumed = eventually(Duration::from_secs(90), || async {
        metric(sampled).await.filter(|at| *at > stalled_at)
    })
    .await;
    assert!(resumed.is_some(), "sampling resumes");
    let stopped = sigterm_and_wait(&mut worker, Duration::from_secs(60)).await;
    assert!(stopped.is_some_and(|status| status.success()));
}
