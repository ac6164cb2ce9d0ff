//! `producers load`: publish simulated store traffic and report throughput,
//! confirm latency and where the events went.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use shared::publish::{PublishError, Publisher};
use shared::settings::Settings;
use shared::topology::stats::depth_table;

use crate::cli::LoadArgs;
use shared::latency::LatencySummary;
use shared::simulation::StoreTraffic;

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

pub async fn run(args: LoadArgs, settings: &Settings) -> anyhow::Result<()> {
    let (connection, topology) =
        shared::startup::prepare_broker(settings, "switchyard-load").await?;
    let publisher =
        Publisher::connect(settings, topology.events_exchange(), "switchyard-load").await?;
    let rate = (args.rate > 0).then_some(args.rate);
    println!(
        "publishing {} store events {} to exchange {:?}",
        args.count,
        rate.map_or("flat out".to_owned(), |rate| format!("at {rate}/s")),
        topology.events_exchange()
    );
    let report = run_load(&publisher, StoreTraffic::new(args.seed), args.count, rate).await;
    publisher.close().await;
    println!(
        "published: {} confirmed, {} failed in {:.2?}",
        report.published, report.failed, report.elapsed
    );
    println!("rate:      {:.0} events/s", report.rate());
    if let Some(latency) = report.latency {
        println!("confirm:   {latency}");
    }
    print!("{}", depth_table(&topology.depths(&connection).await?));
    let _ = connection.close(200, "OK".into()).await;
    if let Some(error) = report.first_error {
        anyhow::bail!(
            "{} events were not published; first error: {error}",
            report.failed
        );
    }
    Ok(())
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
    let mut latencies = Vec::with_capacity(count as usize);
    let mut last_progress = Instant::now();
    while let Some((result, latency)) = outcomes.next().await {
        match result {
            Ok(()) => {
                report.published += 1;
                latencies.push(latency);
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
    report.latency = LatencySummary::from_samples(latencies);
    report
}
