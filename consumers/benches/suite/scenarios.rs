//! The scenarios: each runs in its own namespace and database and returns
//! what it measured.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde::Serialize;
use shared::events::Event;
use shared::groups::ConsumerGroup;
use shared::publish::Publisher;

use crate::cpu::Cpu;
use crate::processes::{ConsumerProcess, stop_all, wait_settled};
use crate::{Scenario, Workload, deliveries};

/// How long a scenario may take to settle before the suite gives up on it.
const PATIENCE: Duration = Duration::from_secs(300);

/// A throughput scenario's rate and where its CPU went.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Throughput {
    /// Deliveries per second.
    pub rate: f64,
    /// CPU milliseconds per 1,000 deliveries.
    pub cpu: Cpu,
}

/// Latency at a steady offered rate.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// Events per second that got through (published at the start to
    /// settled at the end).
    pub achieved: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub cpu: Cpu,
}

async fn publish(publisher: &Publisher, events: &[Event]) {
    for result in publisher.publish_all(events).await {
        result.unwrap();
    }
}

fn measured(started: Instant, ended: Instant, cpu: Cpu, pids: &[u32], expected: i64) -> Throughput {
    Throughput {
        rate: expected as f64 / (ended - started).as_secs_f64(),
        cpu: Cpu::now(pids).per_thousand_since(cpu, expected),
    }
}

/// Every delivery settled exactly once: claimed in `processed_events` or
/// kept as a dead letter.
async fn assert_all_settled(scenario: &Scenario, expected: i64) {
    let settled: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM processed_events) + (SELECT count(*) FROM dead_letters)",
    )
    .fetch_one(&scenario.database.pool)
    .await
    .unwrap();
    assert_eq!(
        settled, expected,
        "every delivery applied or dead-lettered once"
    );
}

/// A hand-written consumer in its own process (`ceiling` or `reference`)
/// while this process publishes `events` with confirms.
pub async fn hand_written(role: &str, workload: Workload, events: &[Event]) -> Throughput {
    let scenario = Scenario::new(workload).await;
    let expected = deliveries(events);
    let consumer = vec![ConsumerProcess::hand_written(&scenario, role)];
    consumer[0].ready(&reqwest::Client::new()).await;
    let publisher = scenario.isolated.publisher().await;
    let pids = [consumer[0].pid()];
    let (started, cpu) = (Instant::now(), Cpu::now(&pids));
    publish(&publisher, events).await;
    let (_, ended) = wait_settled(&consumer, expected, PATIENCE).await;
    let result = measured(started, ended, cpu, &pids, expected);
    stop_all(consumer).await;
    publisher.close().await;
    result
}

/// PostgreSQL's batched-write ceiling: no broker; one connection per group
/// applies the group's share of `events` in runs of 128 with the group's
/// set-wise function, the three groups at once.
pub async fn database_ceiling(workload: Workload, events: &[Event]) -> Throughput {
    let scenario = Scenario::new(workload).await;
    let expected = deliveries(events);
    let (started, cpu) = (Instant::now(), Cpu::now(&[]));
    let mut tasks = Vec::new();
    for group in ConsumerGroup::ALL {
        let mine: Vec<Event> = events
            .iter()
            .filter(|event| group.handles(event.event_type()))
            .cloned()
            .collect();
        let mut connection = scenario.database.pool.acquire().await.unwrap();
        tasks.push(tokio::spawn(async move {
            for run in mine.chunks(128) {
                let run: Vec<&Event> = run.iter().collect();
                consumers::handlers::apply_batch(group, &mut connection, &run)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let ended = Instant::now();
    measured(started, ended, cpu, &[], expected)
}

async fn start_switchyard(
    scenario: &Scenario,
    processes: usize,
    batch_size: Option<usize>,
) -> Vec<ConsumerProcess> {
    let started: Vec<ConsumerProcess> = (0..processes)
        .map(|_| ConsumerProcess::switchyard(scenario, batch_size))
        .collect();
    let client = reqwest::Client::new();
    for process in &started {
        process.ready(&client).await;
    }
    crate::processes::wait_consuming(&started).await;
    started
}

/// Switchyard end to end: `processes` worker processes running, then this
/// process publishes `events` with confirms; until every delivery settled.
pub async fn end_to_end(
    workload: Workload,
    events: &[Event],
    processes: usize,
    batch_size: Option<usize>,
) -> Throughput {
    let scenario = Scenario::new(workload).await;
    let expected = deliveries(events);
    let workers = start_switchyard(&scenario, processes, batch_size).await;
    let publisher = scenario.isolated.publisher().await;
    let pids: Vec<u32> = workers.iter().map(ConsumerProcess::pid).collect();
    let (started, cpu) = (Instant::now(), Cpu::now(&pids));
    publish(&publisher, events).await;
    let (_, ended) = wait_settled(&workers, expected, PATIENCE).await;
    let result = measured(started, ended, cpu, &pids, expected);
    stop_all(workers).await;
    publisher.close().await;
    assert_all_settled(&scenario, expected).await;
    result
}

/// A pre-loaded backlog of `events`, then `processes` worker processes
/// drain it. The rate is over the settling span: first settled delivery
/// seen to the last (process start-up is not counted; polling every 25 ms
/// bounds the error).
pub async fn drain(workload: Workload, events: &[Event], processes: usize) -> Throughput {
    let scenario = Scenario::new(workload).await;
    let expected = deliveries(events);
    let publisher = scenario.isolated.publisher().await;
    publish(&publisher, events).await;
    publisher.close().await;
    let workers: Vec<ConsumerProcess> = (0..processes)
        .map(|_| ConsumerProcess::switchyard(&scenario, None))
        .collect();
    let pids: Vec<u32> = workers.iter().map(ConsumerProcess::pid).collect();
    let cpu = Cpu::now(&pids);
    let (first, ended) = wait_settled(&workers, expected, PATIENCE).await;
    let result = measured(first, ended, cpu, &pids, expected);
    stop_all(workers).await;
    assert_all_settled(&scenario, expected).await;
    result
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
        .buffered(1024)
        .collect::<Vec<()>>()
        .await;
}

/// Publish→consume latency of the broker alone at a steady rate: a
/// consumer in this process decodes and acks each delivery; no database.
pub async fn broker_latency(workload: Workload, events: Vec<Event>, rate: u64) -> Latency {
    let scenario = Scenario::new(workload).await;
    let expected = deliveries(&events);
    let event_count = events.len();
    let connection = shared::testing::connect(&scenario.isolated.settings).await;
    let (sender, mut samples) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    for group in ConsumerGroup::ALL {
        let channel = connection.create_channel().await.unwrap();
        channel
            .basic_qos(256, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = channel
            .basic_consume(
                scenario.isolated.topology.group(group).work.as_str().into(),
                "bench".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let sender = sender.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let event = Event::decode(&delivery.data, 1 << 20).unwrap();
                let lag = (chrono::Utc::now() - event.time)
                    .to_std()
                    .unwrap_or_default();
                let _ = sender.send(lag);
                delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
        });
    }
    let publisher = scenario.isolated.publisher().await;
    let (started, cpu) = (Instant::now(), Cpu::now(&[]));
    publish_paced(&publisher, events, rate).await;
    let mut collected = Vec::with_capacity(expected as usize);
    while (collected.len() as i64) < expected {
        collected.push(samples.recv().await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = Cpu::now(&[]).per_thousand_since(cpu, expected);
    publisher.close().await;
    let _ = connection.close(200, "OK".into()).await;
    let summary = shared::latency::LatencySummary::from_samples(collected).unwrap();
    Latency {
        achieved: event_count as f64 / elapsed,
        p50_ms: summary.p50.as_secs_f64() * 1e3,
        p90_ms: summary.p90.as_secs_f64() * 1e3,
        p99_ms: summary.p99.as_secs_f64() * 1e3,
        cpu,
    }
}

/// Publish→commit latency of the hand-written reference (the same database
/// work as Switchyard without its runtime) at a steady rate, from the lags
/// it measured at each commit.
pub async fn reference_latency(workload: Workload, events: Vec<Event>, rate: u64) -> Latency {
    let scenario = Scenario::new(workload).await;
    let expected = deliveries(&events);
    let event_count = events.len();
    let consumer = vec![ConsumerProcess::hand_written(&scenario, "reference")];
    consumer[0].ready(&reqwest::Client::new()).await;
    let publisher = scenario.isolated.publisher().await;
    let pids = [consumer[0].pid()];
    let (started, cpu) = (Instant::now(), Cpu::now(&pids));
    publish_paced(&publisher, events, rate).await;
    let (_, ended) = wait_settled(&consumer, expected, PATIENCE).await;
    let cpu = Cpu::now(&pids).per_thousand_since(cpu, expected);
    let process = consumer.into_iter().next().unwrap();
    let [p50_ms, p90_ms, p99_ms] = process
        .stop_with_lags()
        .await
        .expect("the reference printed no lags");
    publisher.close().await;
    Latency {
        achieved: event_count as f64 / (ended - started).as_secs_f64(),
        p50_ms,
        p90_ms,
        p99_ms,
        cpu,
    }
}

/// Publish→commit latency through one Switchyard process at a steady
/// rate, from its end-to-end lag histogram (commit time minus event time).
pub async fn switchyard_latency(workload: Workload, events: Vec<Event>, rate: u64) -> Latency {
    let scenario = Scenario::new(workload).await;
    let expected = deliveries(&events);
    let event_count = events.len();
    let workers = start_switchyard(&scenario, 1, None).await;
    let publisher = scenario.isolated.publisher().await;
    let pids: Vec<u32> = workers.iter().map(ConsumerProcess::pid).collect();
    let (started, cpu) = (Instant::now(), Cpu::now(&pids));
    publish_paced(&publisher, events, rate).await;
    let (_, ended) = wait_settled(&workers, expected, PATIENCE).await;
    let cpu = Cpu::now(&pids).per_thousand_since(cpu, expected);
    let client = reqwest::Client::new();
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    for worker in &workers {
        let metrics = worker.metrics(&client).await.unwrap();
        for (bound, count) in lag_buckets(&metrics) {
            *buckets.entry(bound).or_default() += count;
        }
    }
    stop_all(workers).await;
    publisher.close().await;
    assert_all_settled(&scenario, expected).await;
    let cumulative: Vec<(f64, f64)> = buckets
        .into_iter()
        .map(|(bits, count)| (f64::from_bits(bits), count))
        .collect();
    Latency {
        achieved: event_count as f64 / (ended - started).as_secs_f64(),
        p50_ms: percentile(&cumulative, 0.50) * 1e3,
        p90_ms: percentile(&cumulative, 0.90) * 1e3,
        p99_ms: percentile(&cumulative, 0.99) * 1e3,
        cpu,
    }
}

/// Cumulative count per upper bound of the lag histogram, summed over
/// groups, keyed by the bound's bits (which order like the positive bounds).
fn lag_buckets(rendered: &str) -> BTreeMap<u64, f64> {
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    let name = format!("{}_bucket", shared::metrics_recorder::LAG_SECONDS);
    for sample in shared::testing::prometheus_text::samples(rendered, &name) {
        let le = sample.label("le").unwrap();
        let bound: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        *buckets.entry(bound.to_bits()).or_default() += sample.value;
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
