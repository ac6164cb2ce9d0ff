//! The load generator: realistic store traffic (customers, products in
//! categories, orders followed by payments, shipments and some
//! cancellations), a configurable share of invalid events, sent through the
//! gateway or straight to the broker, with a share of aggregates written
//! through the transactional outbox; at a target rate or flat out, for a
//! count or a duration. It reports what it achieved and, optionally,
//! records every item it sent as NDJSON.
//!
//! - [`plan`]: what to send, and by which route and lane.
//! - [`senders`]: the gateway client, AMQP publishing, outbox writes.

pub mod plan;
pub mod senders;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shared::events::EventType;
use shared::latency::{LatencyRecorder, LatencySummary};
use shared::pace::Pace;
use shared::publish::Publisher;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::plan::{Item, Planned, Planner, Route};
use self::senders::{GatewayClient, Outcome, publish_amqp, write_outbox};

/// Where direct items go.
#[derive(Clone)]
pub enum Target {
    /// The HTTP gateway.
    Gateway(GatewayClient),
    /// The broker, with confirms.
    Amqp(Publisher),
}

/// When the run ends (or earlier, on stop).
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// After this many items.
    Count(u64),
    /// After this long.
    Duration(Duration),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// When to end.
    pub limit: Limit,
    /// Items per second; `None` is flat out.
    pub rate: Option<u64>,
    /// Seed of the simulated store.
    pub seed: u64,
    /// Invalid items added per valid event (spoiled copies, in addition).
    pub invalid_share: f64,
    /// Fraction of aggregates written through the outbox (needs a pool).
    pub outbox_share: f64,
    /// Concurrent senders per route; one partition key uses one.
    pub lanes: usize,
    /// Most items per request or transaction.
    pub batch_size: usize,
    /// Write every item sent to this NDJSON file.
    pub record: Option<PathBuf>,
    /// Keep every accepted event's id and type in the report (to check
    /// the database after): 17 bytes an event, so off unless needed — a
    /// run of any length otherwise holds counters and histograms only.
    pub keep_accepted: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            limit: Limit::Count(10_000),
            rate: None,
            seed: 7,
            invalid_share: 0.0,
            outbox_share: 0.0,
            lanes: 8,
            batch_size: 50,
            record: None,
            keep_accepted: false,
        }
    }
}

/// Live counters, readable while the run goes on.
#[derive(Debug, Default)]
pub struct LoadProgress {
    /// Items handed to a sender.
    pub sent: AtomicU64,
    /// Items safely in the broker or the outbox.
    pub accepted: AtomicU64,
    /// Invalid items refused (as they should be).
    pub refused: AtomicU64,
    /// Items that failed.
    pub failed: AtomicU64,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Items sent.
    pub sent: u64,
    /// Valid events accepted directly (gateway 202 or broker confirm).
    pub accepted_direct: u64,
    /// Valid events committed to the outbox.
    pub accepted_outbox: u64,
    /// Invalid items refused by the gateway (or published as poison over AMQP).
    pub refused_invalid: u64,
    /// Failures, and the first one's reason.
    pub failed: u64,
    /// The first failure.
    pub first_failure: Option<String>,
    /// Wall time.
    pub elapsed: Duration,
    /// Send → 202 or confirm, per accepted direct event.
    pub latency: Option<LatencySummary>,
    /// Send → commit, per event written to the outbox.
    pub outbox_latency: Option<LatencySummary>,
    /// Every accepted event (id and type), for checking the database after;
    /// empty unless [`LoadOptions::keep_accepted`].
    pub accepted: Vec<(Uuid, EventType)>,
}

impl LoadReport {
    /// Accepted events per second.
    pub fn rate(&self) -> f64 {
        (self.accepted_direct + self.accepted_outbox) as f64
            / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

#[derive(Default)]
struct LaneTally {
    accepted_direct: u64,
    accepted_outbox: u64,
    refused: u64,
    failed: u64,
    first_failure: Option<String>,
    accepted: Vec<(Uuid, EventType)>,
    direct_latencies: LatencyRecorder,
    outbox_latencies: LatencyRecorder,
}

impl LaneTally {
    fn absorb(&mut self, lane: LaneTally) {
        self.accepted_direct += lane.accepted_direct;
        self.accepted_outbox += lane.accepted_outbox;
        self.refused += lane.refused;
        self.failed += lane.failed;
        if self.first_failure.is_none() {
            self.first_failure = lane.first_failure;
        }
        self.accepted.extend(lane.accepted);
        self.direct_latencies.absorb(&lane.direct_latencies);
        self.outbox_latencies.absorb(&lane.outbox_latencies);
    }

    fn into_report(self, sent: u64, elapsed: Duration) -> LoadReport {
        LoadReport {
            sent,
            accepted_direct: self.accepted_direct,
            accepted_outbox: self.accepted_outbox,
            refused_invalid: self.refused,
            failed: self.failed,
            first_failure: self.first_failure,
            elapsed,
            latency: self.direct_latencies.summary(),
            outbox_latency: self.outbox_latencies.summary(),
            accepted: self.accepted,
        }
    }
}

/// Runs the load until its limit or `stop`; waits for every sent item's outcome.
pub async fn run_load(
    target: Target,
    outbox: Option<PgPool>,
    options: LoadOptions,
    progress: Arc<LoadProgress>,
    stop: CancellationToken,
) -> std::io::Result<LoadReport> {
    let lanes = options.lanes.max(1);
    let mut recorder = match &options.record {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    };
    let mut tasks = Vec::new();
    let mut open_lane = |kind: LaneKind| {
        let (sender, receiver) = mpsc::channel::<Item>(options.batch_size * 4);
        tasks.push(tokio::spawn(lane(
            receiver,
            kind,
            options.batch_size,
            options.keep_accepted,
            progress.clone(),
            stop.clone(),
        )));
        sender
    };
    let direct: Vec<_> = (0..lanes)
        .map(|_| open_lane(LaneKind::Direct(target.clone())))
        .collect();
    let via_outbox: Vec<_> = match &outbox {
        Some(pool) => (0..lanes)
            .map(|_| open_lane(LaneKind::Outbox(pool.clone())))
            .collect(),
        None => Vec::new(),
    };
    let outbox_share = if outbox.is_some() {
        options.outbox_share
    } else {
        0.0
    };
    let mut planner = Planner::new(options.seed, options.invalid_share, outbox_share, lanes);
    // Paced, a run that fell behind (a slow send holding its lane's
    // queue) catches up by at most 50 ms of its rate.
    let pace = options
        .rate
        .map(|rate| Pace::per_second(rate as f64, (rate / 20).min(u64::from(u32::MAX)) as u32));
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        let done = match options.limit {
            Limit::Count(count) => sent >= count,
            Limit::Duration(duration) => started.elapsed() >= duration,
        };
        if done || stop.is_cancelled() {
            break;
        }
        if let Some(pace) = &pace
            && stop.run_until_cancelled(pace.take(1)).await.is_none()
        {
            break;
        }
        let Planned { item, route, lane } = planner.next_planned();
        if let Some(recorder) = recorder.as_mut() {
            recorder.write_all(&item.ndjson_line())?;
            recorder.write_all(b"\n")?;
        }
        let channel = match route {
            Route::Outbox if !via_outbox.is_empty() => &via_outbox[lane],
            _ => &direct[lane],
        };
        if channel.send(item).await.is_err() {
            break;
        }
        sent += 1;
        progress.sent.fetch_add(1, Ordering::Relaxed);
    }
    drop(direct);
    drop(via_outbox);
    if let Some(mut recorder) = recorder {
        recorder.flush()?;
    }
    let mut total = LaneTally::default();
    for task in tasks {
        if let Ok(tally) = task.await {
            total.absorb(tally);
        }
    }
    Ok(total.into_report(sent, started.elapsed()))
}

enum LaneKind {
    Direct(Target),
    Outbox(PgPool),
}

/// One sender: takes whatever is queued (up to `batch_size`) and sends it
/// as one request or transaction, in order.
async fn lane(
    mut receiver: mpsc::Receiver<Item>,
    kind: LaneKind,
    batch_size: usize,
    keep_accepted: bool,
    progress: Arc<LoadProgress>,
    stop: CancellationToken,
) -> LaneTally {
    let mut tally = LaneTally::default();
    let is_outbox = matches!(kind, LaneKind::Outbox(_));
    while let Some(first) = receiver.recv().await {
        let mut items = vec![first];
        while items.len() < batch_size {
            match receiver.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
        let outcomes = match &kind {
            LaneKind::Direct(Target::Gateway(client)) => client.send(items, &stop).await,
            LaneKind::Direct(Target::Amqp(publisher)) => publish_amqp(publisher, items).await,
            LaneKind::Outbox(pool) => write_outbox(pool, items).await,
        };
        for outcome in outcomes {
            match outcome {
                Outcome::Accepted {
                    id,
                    event_type,
                    latency,
                } => {
                    if is_outbox {
                        tally.accepted_outbox += 1;
                        tally.outbox_latencies.record(latency);
                    } else {
                        tally.accepted_direct += 1;
                        tally.direct_latencies.record(latency);
                    }
                    if keep_accepted {
                        tally.accepted.push((id, event_type));
                    }
                    progress.accepted.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Refused => {
                    tally.refused += 1;
                    progress.refused.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Failed(reason) => {
                    tally.failed += 1;
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%reason, "load item failed");
                    tally.first_failure.get_or_insert(reason);
                }
            }
        }
    }
    tally
}
