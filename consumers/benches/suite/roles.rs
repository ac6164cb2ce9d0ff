//! This bench binary run again as a hand-written consumer (what the
//! suite compares Switchyard with), in its own process so that its CPU is
//! counted apart from the publisher's:
//!
//! - `ceiling`: consumes every group's work queue and acks each ready run
//!   of deliveries with one multiple-ack; no database work. The broker's
//!   publish-and-consume ceiling.
//! - `reference`: the same, and applies each ready run (up to 128) with the
//!   group's set-wise function (`consumers::handlers::apply_batch`) in one
//!   autocommit call before acking; no retries, dead letters, metrics or
//!   shutdown handling. It tells the runtime's overhead apart from the cost
//!   of the database work.
//!
//! Both print their running count of finished deliveries, one a line; the
//! reference, when stopped, one more line: `lag-us` and the p50, p90 and
//! p99 of its deliveries' publish→commit lag (commit time minus event
//! time), in microseconds.

use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use shared::events::Event;
use shared::groups::ConsumerGroup;
use shared::settings::Settings;
use shared::topology::Topology;

pub const ROLE_VARIABLE: &str = "SWITCHYARD_BENCH_ROLE";

/// What starts the reference's last line, its lag percentiles.
pub const LAG_LINE: &str = "lag-us";

/// `first` and every delivery already waiting after it, up to `max` in all.
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

pub async fn run(role: &str) {
    let with_database = match role {
        "ceiling" => false,
        "reference" => true,
        other => panic!("unknown bench role {other:?}"),
    };
    let settings = Settings::from_env().unwrap();
    let topology = Topology::new(&settings);
    let pool = if with_database {
        Some(
            shared::database::connect(&settings, 4, false)
                .await
                .unwrap(),
        )
    } else {
        None
    };
    let connection = shared::broker::connect(&settings, "bench-hand-written")
        .await
        .unwrap();
    // Each finished run: its deliveries, and (with the database) their lags.
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel::<(usize, Vec<Duration>)>();
    for group in ConsumerGroup::ALL {
        let channel = connection.create_channel().await.unwrap();
        let prefetch = if with_database { 256 } else { 1024 };
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = channel
            .basic_consume(
                topology.group(group).work.as_str().into(),
                "bench".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let done = done.clone();
        let mut database = match &pool {
            Some(pool) => Some(pool.acquire().await.unwrap()),
            None => None,
        };
        tokio::spawn(async move {
            while let Some(Ok(first)) = consumer.next().await {
                let max = if database.is_some() { 128 } else { usize::MAX };
                let deliveries = with_ready(first, &mut consumer, max);
                let mut lags = Vec::new();
                if let Some(database) = database.as_mut() {
                    let decoded: Vec<Event> = deliveries
                        .iter()
                        .map(|delivery| Event::decode(&delivery.data, 1 << 20).unwrap())
                        .collect();
                    let run: Vec<&Event> = decoded.iter().collect();
                    consumers::handlers::apply_batch(group, database, &run)
                        .await
                        .unwrap();
                    let committed = chrono::Utc::now();
                    lags.extend(
                        decoded
                            .iter()
                            .map(|event| (committed - event.time).to_std().unwrap_or_default()),
                    );
                }
                if let Some(last) = deliveries.last() {
                    channel
                        .basic_ack(last.delivery_tag, BasicAckOptions { multiple: true })
                        .await
                        .unwrap();
                }
                let _ = done.send((deliveries.len(), lags));
            }
        });
    }
    let mut total = 0usize;
    let mut lags = Vec::new();
    let mut stdout = std::io::stdout();
    writeln!(stdout, "0").unwrap();
    stdout.flush().unwrap();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    loop {
        tokio::select! {
            Some((count, run_lags)) = finished.recv() => {
                total += count;
                lags.extend(run_lags);
                writeln!(stdout, "{total}").unwrap();
                stdout.flush().unwrap();
            }
            _ = terminate.recv() => break,
        }
    }
    if let Some(summary) = shared::latency::LatencySummary::from_samples(lags) {
        writeln!(
            stdout,
            "{LAG_LINE} {} {} {}",
            summary.p50.as_micros(),
            summary.p90.as_micros(),
            summary.p99.as_micros()
        )
        .unwrap();
        stdout.flush().unwrap();
    }
    let _ = connection.close(200, "OK".into()).await;
}
