//! Throughput and latency of the worker runtime against the real local
//! RabbitMQ and PostgreSQL, all measured in one run on quorum queues:
//!
//! 1. the broker's own ceiling: publish with confirms and consume with a
//!    hand-written batching consumer, no database work;
//! 2. Switchyard end to end: publish with confirms → workers → commit → ack;
//! 3. the same workers forced to one event per transaction;
//! 4. a reference: a hand-written batching consumer doing the same database
//!    work (the groups' batch functions) with no runtime, which tells the
//!    runtime's overhead apart from the domain work's cost;
//! 5. publish→commit latency at a steady 2,000 events/s.
//!
//! `cargo bench -p consumers` (env `BENCH_EVENTS`, `BENCH_REPEAT`, `BENCH_WORKERS` per group,
//! `BENCH_ONLY=throughput|latency`). Each
//! scenario runs in its own namespace and database. Not part of CI.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use consumers::runtime::{WorkerOptions, spawn_workers};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use shared::events::catalog::{OrderLine, OrderPlaced};
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use shared::publish::Publisher;
use shared::testing::{IsolatedTopology, TestDatabase, isolated_settings};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SKUS: usize = 200;

fn order_placed_stream(count: usize) -> Vec<Event> {
    (0..count)
        .map(|index| {
            let lines = (0..1 + index % 3)
                .map(|line| OrderLine {
                    sku: format!("SKU-{:05}", (index * 7 + line * 13) % SKUS),
                    category: ["kitchen", "garden", "books", "toys"][(index + line) % 4].to_owned(),
                    quantity: 1 + (line as i64 % 2),
                    unit_price_cents: 1_999,
                })
                .collect();
            Event::new(
                "/bench",
                EventPayload::OrderPlaced(OrderPlaced {
                    order_id: Uuid::now_v7(),
                    customer_id: Uuid::now_v7(),
                    currency: "EUR".into(),
                    lines,
                }),
            )
        })
        .collect()
}

struct Scenario {
    isolated: IsolatedTopology,
    database: TestDatabase,
}

impl Scenario {
    async fn new() -> Self {
        let isolated = IsolatedTopology::declare_with(isolated_settings()).await;
        let database = TestDatabase::create_with(isolated.settings.clone()).await;
        // Ample stock, so inventory reservations never wait on restocks.
        sqlx::query("INSERT INTO stock (sku, on_hand) SELECT format('SKU-%s', lpad(i::text, 5, '0')), 1000000000 FROM generate_series(0, $1) i")
            .bind(SKUS as i32)
            .execute(&database.pool)
            .await
            .unwrap();
        Self { isolated, database }
    }

    fn deliveries(&self, events: usize) -> i64 {
        ConsumerGroup::ALL
            .iter()
            .filter(|group| group.handles(shared::events::EventType::OrderPlaced))
            .count() as i64
            * events as i64
    }
}

async fn publish_all(scenario: &Scenario, events: &[Event]) -> Publisher {
    let publisher = scenario.isolated.publisher().await;
    for result in publisher.publish_all(events).await {
        result.unwrap();
    }
    publisher
}

/// A raw consumer (and its channel) on every group's work queue.
async fn consume_every_group(
    scenario: &Scenario,
    connection: &lapin::Connection,
    prefetch: u16,
) -> Vec<(lapin::Channel, lapin::Consumer)> {
    let mut consumers = Vec::new();
    for group in ConsumerGroup::ALL {
        let channel = connection.create_channel().await.unwrap();
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .unwrap();
        let queue = scenario.isolated.topology.group(group).work.clone();
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "bench".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        consumers.push((channel, consumer));
    }
    consumers
}

/// `first` and every delivery already waiting after it, up to `max` in all
/// (the hand-written batching of the ceiling and the reference).
fn with_ready(
    first: lapin::message::Delivery,
    consumer: &mut lapin::Consumer,
    max: usize,
) -> Vec<lapin::message::Delivery> {
    let mut deliveries = vec![first];
    while deliveries.len() < max {
        match futures_util::FutureExt::now_or_never(consumer.next()) {
            Some(Some(Ok(next))) => deliveries.push(next),
            _ => break,
        }
    }
    deliveries
}

/// One multiple-ack up to the last of `deliveries` (all are finished).
async fn ack_all(channel: &lapin::Channel, deliveries: &[lapin::message::Delivery]) {
    if let Some(last) = deliveries.last() {
        channel
            .basic_ack(last.delivery_tag, BasicAckOptions { multiple: true })
            .await
            .unwrap();
    }
}

/// Publishes `events` and waits until the consumers have reported
/// `expected` deliveries on `done`; the rate and CPU of that window.
async fn publish_and_count(
    scenario: &Scenario,
    events: &[Event],
    expected: i64,
    done: &mut tokio::sync::mpsc::UnboundedReceiver<usize>,
) -> (Measured, Publisher) {
    let (started, cpu) = (Instant::now(), CpuTimes::now());
    let publisher = publish_all(scenario, events).await;
    let mut consumed = 0i64;
    while consumed < expected {
        consumed += done.recv().await.unwrap() as i64;
    }
    (Measured::since(started, cpu, expected), publisher)
}

/// 1. Publish and consume every routed copy with no database work.
async fn broker_ceiling(events: &[Event]) -> Measured {
    let scenario = Scenario::new().await;
    let expected = scenario.deliveries(events.len());
    let connection = shared::testing::connect(&scenario.isolated.settings).await;
    let (done_sender, mut done) = tokio::sync::mpsc::unbounded_channel::<usize>();
    for (channel, mut consumer) in consume_every_group(&scenario, &connection, 1024).await {
        let sender = done_sender.clone();
        tokio::spawn(async move {
            // Hand-written batching: ack every ready delivery with one multiple-ack.
            while let Some(Ok(first)) = consumer.next().await {
                let taken = with_ready(first, &mut consumer, usize::MAX);
                ack_all(&channel, &taken).await;
                let _ = sender.send(taken.len());
            }
        });
    }
    let (measured, publisher) = publish_and_count(&scenario, events, expected, &mut done).await;
    publisher.close().await;
    let _ = connection.close(200, "OK".into()).await;
    measured
}

/// Reference: a hand-written batching consumer doing the same database work
/// as the workers (each ready run of deliveries decoded and applied with the
/// group's batch function in one autocommit call, then one multiple-ack),
/// without the runtime's retries, dead letters, metrics or shutdown. It
/// tells the runtime's own overhead apart from the cost of the domain work.
async fn hand_written_with_database(events: &[Event]) -> Measured {
    let scenario = Scenario::new().await;
    let expected = scenario.deliveries(events.len());
    let connection = shared::testing::connect(&scenario.isolated.settings).await;
    let (done_sender, mut done) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let consumers = consume_every_group(&scenario, &connection, 256).await;
    for (group, (channel, mut consumer)) in ConsumerGroup::ALL.into_iter().zip(consumers) {
        let sender = done_sender.clone();
        let mut database = scenario.database.pool.acquire().await.unwrap();
        tokio::spawn(async move {
            while let Some(Ok(first)) = consumer.next().await {
                let deliveries = with_ready(first, &mut consumer, 128);
                let decoded: Vec<Event> = deliveries
                    .iter()
                    .map(|delivery| Event::decode(&delivery.data, 1 << 20).unwrap())
                    .collect();
                let run: Vec<&Event> = decoded.iter().collect();
                consumers::handlers::apply_batch(group, &mut database, &run)
                    .await
                    .unwrap()
                    .unwrap();
                ack_all(&channel, &deliveries).await;
                let _ = sender.send(deliveries.len());
            }
        });
    }
    let (measured, publisher) = publish_and_count(&scenario, events, expected, &mut done).await;
    assert_eq!(
        applied(&scenario).await,
        expected,
        "every copy applied once"
    );
    publisher.close().await;
    let _ = connection.close(200, "OK".into()).await;
    measured
}

fn worker_options(batch_size: usize) -> WorkerOptions {
    let workers = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    WorkerOptions {
        groups: ConsumerGroup::ALL.to_vec(),
        workers,
        prefetch: 256,
        batch_size,
    }
}

async fn start_workers(
    scenario: &Scenario,
    options: WorkerOptions,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), consumers::runtime::RuntimeError>>,
) {
    let shutdown = CancellationToken::new();
    let (settings, topology, token) = (
        scenario.database.settings.clone(),
        scenario.isolated.topology.clone(),
        shutdown.clone(),
    );
    let pool = shared::database::connect(&settings, 10, false)
        .await
        .unwrap();
    let handle = spawn_workers(settings, topology, pool, options, token, "bench-workers");
    (shutdown, handle)
}

async fn applied(scenario: &Scenario) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM processed_events")
        .fetch_one(&scenario.database.pool)
        .await
        .unwrap()
}

/// Events committed (applied or duplicate) so far by every worker of this
/// process, from the metrics recorder: polling it costs the database nothing
/// (a `count(*)` every few milliseconds would be a load of its own).
fn committed_events(metrics: &metrics_exporter_prometheus::PrometheusHandle) -> f64 {
    metrics
        .render()
        .lines()
        .filter(|line| line.starts_with("switchyard_events_total{"))
        .filter(|line| {
            line.contains("outcome=\"applied\"") || line.contains("outcome=\"duplicate\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Per group: mean batch size, mean time applying a batch and committing it (ms).
fn batch_profile(before: &str, after: &str) -> Vec<String> {
    let mut sums: BTreeMap<(String, String), f64> = BTreeMap::new();
    let lines = after
        .lines()
        .map(|line| (line, 1.0))
        .chain(before.lines().map(|line| (line, -1.0)));
    for (line, sign) in lines {
        for metric in [
            "switchyard_batch_size",
            "switchyard_handler_seconds",
            "switchyard_commit_seconds",
        ] {
            for suffix in ["_sum", "_count"] {
                let prefix = format!("{metric}{suffix}{{group=\"");
                if let Some(rest) = line.strip_prefix(&prefix) {
                    let group = rest.split('"').next().unwrap().to_owned();
                    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
                    *sums
                        .entry((group, format!("{metric}{suffix}")))
                        .or_default() += sign * value;
                }
            }
        }
    }
    let mean = |group: &str, metric: &str| {
        let sum = sums
            .get(&(group.to_owned(), format!("{metric}_sum")))
            .copied()
            .unwrap_or(0.0);
        let count = sums
            .get(&(group.to_owned(), format!("{metric}_count")))
            .copied()
            .unwrap_or(1.0);
        sum / count.max(1.0)
    };
    ConsumerGroup::ALL
        .iter()
        .map(|group| {
            let group = group.as_str();
            format!(
                "{group}: {:.1} events/batch, apply {:.2} ms, commit {:.2} ms",
                mean(group, "switchyard_batch_size"),
                mean(group, "switchyard_handler_seconds") * 1e3,
                mean(group, "switchyard_commit_seconds") * 1e3
            )
        })
        .collect()
}

/// 2 and 3. Publish with confirms while the workers apply, until every copy is committed.
async fn end_to_end(events: &[Event], batch_size: usize) -> Measured {
    let scenario = Scenario::new().await;
    let expected = scenario.deliveries(events.len());
    let (shutdown, workers) = start_workers(&scenario, worker_options(batch_size)).await;
    let metrics = consumers::metrics::install_recorder();
    let committed_before = committed_events(&metrics);
    let (started, cpu) = (Instant::now(), CpuTimes::now());
    let publisher = publish_all(&scenario, events).await;
    while committed_events(&metrics) - committed_before < expected as f64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let measured = Measured::since(started, cpu, expected);
    assert_eq!(
        applied(&scenario).await,
        expected,
        "every copy applied once"
    );
    shutdown.cancel();
    workers.await.unwrap().unwrap();
    publisher.close().await;
    measured
}

/// A throughput scenario's rate and where its CPU went.
struct Measured {
    rate: f64,
    /// CPU time per 1,000 deliveries (ms): broker, PostgreSQL, this process.
    cpu_per_thousand: CpuTimes,
}

impl Measured {
    fn since(started: Instant, cpu: CpuTimes, deliveries: i64) -> Self {
        let used = CpuTimes::now().minus(cpu);
        let per_thousand = 1e6 / deliveries as f64; // seconds → ms per 1,000
        Self {
            rate: deliveries as f64 / started.elapsed().as_secs_f64(),
            cpu_per_thousand: CpuTimes {
                broker: used.broker * per_thousand,
                postgres: used.postgres * per_thousand,
                bench: used.bench * per_thousand,
            },
        }
    }
}

/// CPU seconds (user + system) used so far by the broker (`beam.smp`),
/// PostgreSQL (every `postgres` process) and this process, from `/proc`
/// (Linux; zero elsewhere). Processes that exit in between are not counted.
#[derive(Clone, Copy, Default)]
struct CpuTimes {
    broker: f64,
    postgres: f64,
    bench: f64,
}

impl CpuTimes {
    fn now() -> Self {
        // USER_HZ: 100 on every mainstream Linux (reading sysconf needs unsafe).
        const TICKS_PER_SECOND: f64 = 100.0;
        let own = std::process::id().to_string();
        let mut times = CpuTimes::default();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return times;
        };
        for entry in entries.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let command = &stat[open + 1..close];
            let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
            let ticks = |index: usize| {
                fields
                    .get(index)
                    .and_then(|value| value.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let seconds = (ticks(11) + ticks(12)) / TICKS_PER_SECOND;
            if pid == own {
                times.bench += seconds;
            } else if command == "beam.smp" {
                times.broker += seconds;
            } else if command.starts_with("postgres") {
                times.postgres += seconds;
            }
        }
        times
    }

    fn minus(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            broker: self.broker - earlier.broker,
            postgres: self.postgres - earlier.postgres,
            bench: self.bench - earlier.bench,
        }
    }
}

impl std::fmt::Display for CpuTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "broker {:.0} ms, postgres {:.0} ms, bench process {:.0} ms",
            self.broker, self.postgres, self.bench
        )
    }
}

/// Publishes `events` paced at `rate` per second, stamping each with the
/// moment it is sent (its `time`), with up to 1,024 confirms outstanding.
async fn publish_paced(publisher: &Publisher, events: Vec<Event>, rate: u64) {
    let started = tokio::time::Instant::now();
    futures_util::stream::iter(events.into_iter().enumerate())
        .then(|(index, mut event)| async move {
            tokio::time::sleep_until(started + Duration::from_secs_f64(index as f64 / rate as f64))
                .await;
            event.time = chrono::Utc::now();
            event
        })
        .map(|event| {
            let publisher = publisher.clone();
            async move { publisher.publish(&event).await.unwrap() }
        })
        .buffer_unordered(1024)
        .collect::<Vec<()>>()
        .await;
}

/// Baseline for 4: publish→consume latency of the broker alone at a steady
/// rate (consumers decode and ack each delivery; no database).
async fn broker_latency(rate: u64, seconds: u64) -> shared::latency::LatencySummary {
    let scenario = Scenario::new().await;
    let events = order_placed_stream((rate * seconds) as usize);
    let expected = scenario.deliveries(events.len());
    let connection = shared::testing::connect(&scenario.isolated.settings).await;
    let (sender, mut samples) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    for (_channel, mut consumer) in consume_every_group(&scenario, &connection, 256).await {
        let sender = sender.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let event = Event::decode(&delivery.data, 1 << 20).unwrap();
                let _ = sender.send(
                    (chrono::Utc::now() - event.time)
                        .to_std()
                        .unwrap_or_default(),
                );
                delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
        });
    }
    let publisher = scenario.isolated.publisher().await;
    let (started, cpu) = (Instant::now(), CpuTimes::now());
    publish_paced(&publisher, events, rate).await;
    let mut collected = Vec::with_capacity(expected as usize);
    while (collected.len() as i64) < expected {
        collected.push(samples.recv().await.unwrap());
    }
    let measured = Measured::since(started, cpu, expected);
    println!(
        "    broker alone at {rate}/s, CPU per 1,000 deliveries: {}",
        measured.cpu_per_thousand
    );
    publisher.close().await;
    let _ = connection.close(200, "OK".into()).await;
    shared::latency::LatencySummary::from_samples(collected).unwrap()
}

/// 4. Publish→commit latency percentiles at a steady rate, from the lag histogram.
async fn steady_latency(rate: u64, seconds: u64) -> HashMap<&'static str, f64> {
    let scenario = Scenario::new().await;
    let metrics = consumers::metrics::install_recorder();
    let (shutdown, workers) = start_workers(&scenario, worker_options(128)).await;
    let publisher = scenario.isolated.publisher().await;
    let committed_before = committed_events(&metrics);
    let rendered_before = metrics.render();
    let before = lag_buckets(&rendered_before);
    let (started, cpu) = (Instant::now(), CpuTimes::now());
    publish_paced(
        &publisher,
        order_placed_stream((rate * seconds) as usize),
        rate,
    )
    .await;
    let expected = scenario.deliveries((rate * seconds) as usize);
    while committed_events(&metrics) - committed_before < expected as f64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let measured = Measured::since(started, cpu, expected);
    println!(
        "    at {rate}/s, CPU per 1,000 deliveries: {}",
        measured.cpu_per_thousand
    );
    assert_eq!(
        applied(&scenario).await,
        expected,
        "every copy applied once"
    );
    let rendered_after = metrics.render();
    let after = lag_buckets(&rendered_after);
    for line in batch_profile(&rendered_before, &rendered_after) {
        println!("    at {rate}/s, {line}");
    }
    shutdown.cancel();
    workers.await.unwrap().unwrap();
    publisher.close().await;
    let window: Vec<(f64, f64)> = after
        .iter()
        .map(|(bits, count)| {
            (
                f64::from_bits(*bits),
                count - before.get(bits).copied().unwrap_or(0.0),
            )
        })
        .collect();
    ["p50", "p90", "p99"]
        .into_iter()
        .zip([0.50, 0.90, 0.99])
        .map(|(name, quantile)| (name, percentile(&window, quantile) * 1_000.0))
        .collect()
}

/// Cumulative count per upper bound of the lag histogram, summed over
/// groups, keyed by the bound's bits (which order like the positive bounds).
fn lag_buckets(rendered: &str) -> BTreeMap<u64, f64> {
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    for line in rendered
        .lines()
        .filter(|line| line.starts_with("switchyard_end_to_end_lag_seconds_bucket"))
    {
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        let bound: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *buckets.entry(bound.to_bits()).or_default() += count;
    }
    buckets
}

/// Linear interpolation inside the bucket holding the quantile.
fn percentile(cumulative: &[(f64, f64)], quantile: f64) -> f64 {
    let total = cumulative.last().map_or(0.0, |(_, count)| *count);
    let target = quantile * total;
    let mut previous = (0.0, 0.0);
    for &(bound, count) in cumulative {
        if count >= target {
            if !bound.is_finite() {
                return previous.0;
            }
            let share = if count > previous.1 {
                (target - previous.1) / (count - previous.1)
            } else {
                1.0
            };
            return previous.0 + share * (bound - previous.0);
        }
        previous = (bound, count);
    }
    previous.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    consumers::metrics::install_recorder();
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // `BENCH_ONLY=throughput` or `BENCH_ONLY=latency` runs one half.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only != "latency" {
        throughput(events, repeat).await;
    }
    if only != "throughput" {
        latency().await;
    }
}

async fn throughput(events: usize, repeat: usize) {
    let stream = order_placed_stream(events);
    let single_stream = order_placed_stream(events / 5);
    println!(
        "switchyard benchmark: {events} order.placed events × 3 groups, {repeat} runs, medians (deliveries/s)"
    );
    let (mut ceiling, mut batched, mut single, mut by_hand) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=repeat {
        // Interleaved, so drift on a noisy machine hits every scenario alike.
        let broker = broker_ceiling(&stream).await;
        let metrics = consumers::metrics::install_recorder();
        let before = metrics.render();
        let switchyard = end_to_end(&stream, 128).await;
        for line in batch_profile(&before, &metrics.render()) {
            println!("    batched run, {line}");
        }
        println!(
            "    CPU per 1,000 deliveries: ceiling: {}; switchyard: {}",
            broker.cpu_per_thousand, switchyard.cpu_per_thousand
        );
        let reference = hand_written_with_database(&stream).await;
        println!(
            "    reference (hand-written consumer, same database work): {:.0}/s, CPU per 1,000 deliveries: {}",
            reference.rate, reference.cpu_per_thousand
        );
        ceiling.push(broker.rate);
        batched.push(switchyard.rate);
        by_hand.push(reference.rate);
        single.push(end_to_end(&single_stream, 1).await.rate);
        println!(
            "  run {run}: broker ceiling {:>8.0}/s   switchyard {:>8.0}/s   one event per transaction {:>8.0}/s",
            ceiling[run - 1],
            batched[run - 1],
            single[run - 1]
        );
    }
    let (ceiling, batched, single, by_hand) = (
        median(ceiling),
        median(batched),
        median(single),
        median(by_hand),
    );
    println!(
        "broker ceiling (publish confirms + hand-written batching consumer): {ceiling:>8.0} deliveries/s"
    );
    println!(
        "switchyard end to end (confirm → worker → commit → ack):          {batched:>8.0} deliveries/s"
    );
    println!(
        "reference: hand-written consumer, same database work, no runtime: {by_hand:>8.0} deliveries/s"
    );
    println!(
        "switchyard, one event per transaction:                            {single:>8.0} deliveries/s"
    );
    println!(
        "ratio end to end / broker ceiling:      {:.2}  (target ≥ 0.85)",
        batched / ceiling
    );
    println!(
        "ratio reference / broker ceiling:      {:.2}  (what the domain work alone allows)",
        by_hand / ceiling
    );
    println!(
        "ratio end to end / reference:          {:.2}  (the runtime's own overhead)",
        batched / by_hand
    );
    println!(
        "ratio batched / one event per transaction: {:.1}  (target ≥ 5)",
        batched / single
    );
}

async fn latency() {
    let baseline = broker_latency(2_000, 10).await;
    println!("broker alone, publish→consume at 2,000 events/s (baseline):    {baseline}");
    let latency = steady_latency(2_000, 10).await;
    println!(
        "publish→commit latency at 2,000 events/s: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms  (target p99 ≤ 10 ms)",
        latency["p50"], latency["p90"], latency["p99"]
    );
}
