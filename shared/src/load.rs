//! Publishing a stream of store events at a target rate (or flat out) and
//! measuring publish-to-confirm latency.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::latency::{LatencyRecorder, LatencySummary};
use crate::publish::{PublishError, Publisher};
use crate::simulation::StoreTraffic;

/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The outcome of a load run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Events the broker confirmed.
    pub published: u64,
    /// Events that were not confirmed, with the first error seen.
    pub failed: u64,
    /// First publish error, if any.
    pub first_error: Option<PublishError>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Publish-to-confirm latencies.
    pub latency: Option<LatencySummary>,
}

impl LoadReport {
    /// Confirmed events per second.
    pub fn rate(&self) -> f64 {
        self.published as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Publishes `count` events from `traffic`, paced at `rate` per second when
/// given, keeping up to the publisher's window in flight.
pub async fn run_load(
    publisher: &Publisher,
    mut traffic: StoreTraffic,
    count: u64,
    rate: Option<u64>,
) -> LoadReport {
    let started = Instant::now();
    let window = publisher.settings().max_in_flight.max(1);
    let schedule = move |index: u64| {
        rate.map(|rate| {
            tokio::time::Instant::from_std(started)
                + Duration::from_secs_f64(index as f64 / rate as f64)
        })
    };
    let outcomes = futures_util::stream::iter(0..count)
        .then(|index| {
            let event = traffic.next_event();
            async move {
                if let Some(at) = schedule(index) {
                    tokio::time::sleep_until(at).await;
                }
                event
            }
        })
        .map(|event| async move {
            let sent = Instant::now();
            let result = publisher.publish(&event).await;
            (result, sent.elapsed())
        })
        .buffered(window);
    let mut outcomes = std::pin::pin!(outcomes);
    let mut report = LoadReport {
        published: 0,
        failed: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latency: None,
    };
    let mut latencies = LatencyRecorder::default();
    let mut last_progress = Instant::now();
    while let Some((result, latency)) = outcomes.next().await {
        match result {
            Ok(()) => {
                report.published += 1;
                latencies.record(latency);
            }
            Err(error) => {
                report.failed += 1;
                report.first_error.get_or_insert(error);
            }
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let rate = report.published as f64 / started.elapsed().as_secs_f64();
            tracing::info!(
                published = report.published,
                failed = report.failed,
                rate = rate as u64,
                "load progress"
            );
        }
    }
    report.elapsed = started.elapsed();
    report.latency = latencies.summary();
    report
}
