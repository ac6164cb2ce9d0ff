//! The whole Switchyard stack in one process, the project's main job:
//! migrate, declare the topology, start the HTTP gateway, the outbox relay
//! and the workers of every group, feed them store traffic from the load
//! generator (through the gateway, a share of aggregates through the
//! outbox, a share of invalid events), show live progress, then drain and
//! end with a summary checked against the database.
//!
//! - [`accounting`]: expected deliveries against what the database holds.
//! - [`lag`]: end-to-end lag percentiles from the workers' histogram.

pub mod accounting;
pub mod lag;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use producers::gateway::api_keys::{self, NewApiKey};
use producers::gateway::grants::Grants;
use producers::gateway::{GatewayConfig, GatewayState};
use producers::load::senders::GatewayClient;
use producers::load::{Limit, LoadOptions, LoadProgress, LoadReport, Target, run_load};
use producers::relay::{Relay, RelayConfig};
use runtime::{WorkerOptions, spawn_workers};
use shared::groups::ConsumerGroup;
use shared::publish::Publisher;
use shared::settings::Settings;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use self::accounting::{GroupTotals, group_totals};
use self::lag::LagSnapshot;

/// What to run.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// How long to send traffic; `None` until stopped.
    pub duration: Option<Duration>,
    /// Events per second.
    pub rate: u64,
    /// Seed of the simulated store.
    pub seed: u64,
    /// Invalid events added per valid one (refused by the gateway).
    pub invalid_share: f64,
    /// Fraction of aggregates written through the outbox.
    pub outbox_share: f64,
    /// Where the gateway listens (also serves `/metrics` for everything).
    pub gateway_listen: SocketAddr,
    /// Workers per group.
    pub workers: usize,
    /// After sending stops, how long to wait for every event to be applied.
    pub drain: Duration,
    /// How often progress is printed.
    pub progress_every: Duration,
}

/// The run's outcome.
#[derive(Debug)]
pub struct StackSummary {
    /// What the load generator did.
    pub load: LoadReport,
    /// Per group, read from the database.
    pub groups: BTreeMap<ConsumerGroup, GroupTotals>,
}

impl StackSummary {
    /// Every expected delivery is applied or dead-lettered, and nothing
    /// failed to send.
    pub fn balanced(&self) -> bool {
        self.load.failed == 0 && self.groups.values().all(|totals| totals.missing() == 0)
    }
}

/// Runs the stack until the duration is over or `stop`, drains, stops
/// everything and returns the summary (already printed).
pub async fn run_stack(
    settings: &Settings,
    options: StackOptions,
    stop: CancellationToken,
) -> anyhow::Result<StackSummary> {
    // One recorder for the workers and the gateway, which serves `/metrics`.
    shared::metrics_recorder::install();
    let groups = ConsumerGroup::ALL.len() as u32;
    let connections = groups * (options.workers as u32 + 1) + 32 + 3 + 10;
    let pool = shared::startup::prepare_database(settings, connections).await?;
    let (connection, topology) =
        shared::startup::prepare_broker(settings, "switchyard-stack").await?;
    let publisher =
        Publisher::connect(settings, topology.events_exchange(), "switchyard-stack").await?;

    // The load generator's own producer key, revoked at the end.
    let grants = Grants::new(vec!["*".into()], vec!["*".into()])?;
    let (key, secret) = api_keys::create(
        &pool,
        NewApiKey {
            producer: "switchyard-stack-load".into(),
            grants,
            rate_per_second: (options.rate.max(1) * 4).min(u64::from(u32::MAX)) as u32,
            burst: 10_000,
        },
    )
    .await?;

    let services = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(options.gateway_listen).await?;
    let gateway_address = listener.local_addr()?;
    let gateway = tokio::spawn(producers::gateway::serve(
        listener,
        GatewayState::new(
            settings.clone(),
            GatewayConfig {
                listen: gateway_address,
                ..GatewayConfig::default()
            },
            pool.clone(),
            publisher.clone(),
        ),
        services.clone(),
    ));
    let relay = {
        let relay = Relay::new(pool.clone(), publisher.clone(), RelayConfig::default());
        let token = services.clone();
        tokio::spawn(async move { relay.run(token).await })
    };
    let workers = spawn_workers(
        settings.clone(),
        topology.clone(),
        pool.clone(),
        WorkerOptions::defaults(options.workers, consumers::handlers::Store::shared()),
        services.clone(),
        "switchyard-stack-workers",
    );

    println!(
        "switchyard: gateway http://{gateway_address} (metrics at /metrics), outbox relay, {} worker(s) per group; store traffic at {}/s{} — Ctrl-C to stop",
        options.workers,
        options.rate,
        options
            .duration
            .map_or(String::new(), |duration| format!(" for {duration:?}"))
    );
    let progress = Arc::new(LoadProgress::default());
    let load_stop = stop.child_token();
    let load = tokio::spawn(run_load(
        Target::Gateway(GatewayClient::new(
            &format!("http://{gateway_address}"),
            secret,
        )),
        Some(pool.clone()),
        LoadOptions {
            limit: Limit::Duration(options.duration.unwrap_or(Duration::MAX)),
            rate: Some(options.rate.max(1)),
            seed: options.seed,
            invalid_share: options.invalid_share,
            outbox_share: options.outbox_share,
            lanes: 8,
            batch_size: 50,
            record: None,
            // The summary checks each accepted event in the database.
            keep_accepted: true,
        },
        progress.clone(),
        load_stop.clone(),
    ));

    let started = Instant::now();
    let mut lag_before = LagSnapshot::take();
    let mut applied_before = (started, database_counts(&pool).await?.applied);
    let mut print_progress = async |phase: &str| -> anyhow::Result<()> {
        let depths = topology.depths(&connection).await?;
        let queued: u32 = depths.iter().map(|depth| depth.work).sum();
        let retrying: u32 = depths.iter().map(|depth| depth.retrying).sum();
        let DatabaseCounts {
            applied,
            dead,
            outbox_pending,
        } = database_counts(&pool).await?;
        let rate = (applied - applied_before.1) as f64
            / applied_before.0.elapsed().as_secs_f64().max(0.001);
        applied_before = (Instant::now(), applied);
        let lag_now = LagSnapshot::take();
        let lag = |quantile| {
            lag_now
                .quantile_since(&lag_before, quantile)
                .map_or("-".to_owned(), |ms| format!("{ms:.0}"))
        };
        println!(
            "[{:>6.1}s {phase}] sent {:>7} accepted {:>7} refused {:>4} | applied {rate:>6.0} deliveries/s lag p50 {}ms p99 {}ms | queued {queued:>6} retrying {retrying:>4} dead {dead:>4} outbox {outbox_pending:>4}",
            started.elapsed().as_secs_f64(),
            progress.sent.load(Ordering::Relaxed),
            progress.accepted.load(Ordering::Relaxed),
            progress.refused.load(Ordering::Relaxed),
            lag(0.5),
            lag(0.99),
        );
        lag_before = lag_now;
        Ok(())
    };
    while !load.is_finished() {
        tokio::select! {
            () = tokio::time::sleep(options.progress_every) => print_progress("sending").await?,
            () = stop.cancelled() => break,
        }
    }
    load_stop.cancel();
    let load_report = load.await??;
    println!(
        "sending stopped: {} accepted; draining (up to {:?}, Ctrl-C again to exit at once)",
        load_report.accepted.len(),
        options.drain
    );
    let drain_started = Instant::now();
    let mut totals = group_totals(&pool, &load_report.accepted).await?;
    while totals.values().any(|group| group.missing() > 0)
        && drain_started.elapsed() < options.drain
    {
        tokio::time::sleep(options.progress_every).await;
        print_progress("draining").await?;
        totals = group_totals(&pool, &load_report.accepted).await?;
    }

    services.cancel();
    gateway.await??;
    relay.await?;
    workers.await??;
    api_keys::revoke(&pool, key.key_id).await?;
    publisher.close().await;
    let _ = connection.close(200, "OK".into()).await;
    let summary = StackSummary {
        load: load_report,
        groups: totals,
    };
    print_summary(&summary);
    consumers::report::print_totals(&pool).await?;
    shared::database::close(&pool).await;
    Ok(summary)
}

/// What the progress line reads from the database, in one round trip.
struct DatabaseCounts {
    applied: i64,
    dead: i64,
    outbox_pending: i64,
}

async fn database_counts(pool: &PgPool) -> Result<DatabaseCounts, sqlx::Error> {
    let (applied, dead, outbox_pending) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM processed_events),
                (SELECT count(*) FROM dead_letters WHERE status = 'open'),
                (SELECT count(*) FROM outbox WHERE sent_at IS NULL)",
    )
    .fetch_one(pool)
    .await?;
    Ok(DatabaseCounts {
        applied,
        dead,
        outbox_pending,
    })
}

fn print_summary(summary: &StackSummary) {
    let load = &summary.load;
    println!("\nsummary");
    println!(
        "  sent            {} in {:.1?} ({:.0} accepted/s)",
        load.sent,
        load.elapsed,
        load.rate()
    );
    println!(
        "  accepted        {} through the gateway, {} through the outbox",
        load.accepted_direct, load.accepted_outbox
    );
    println!(
        "  invalid         {} refused by the gateway (400)",
        load.refused_invalid
    );
    println!("  failed to send  {}", load.failed);
    if let Some(latency) = &load.latency {
        println!("  gateway 202     {latency}");
    }
    if let Some(latency) = &load.outbox_latency {
        println!("  outbox commit   {latency}");
    }
    println!("  per group (from the database, for the events accepted in this run):");
    for (group, totals) in &summary.groups {
        println!(
            "    {:<10} expected {:>8}  applied {:>8}  dead-lettered {:>5}  missing {:>5}",
            group.as_str(),
            totals.expected,
            totals.applied,
            totals.dead_lettered,
            totals.missing()
        );
    }
    consumers::report::print_batch_paths();
    if summary.balanced() {
        println!(
            "  totals match the database: every accepted event was applied or dead-lettered by each group that receives it"
        );
    } else {
        println!(
            "  TOTALS DO NOT MATCH: see `missing` above (raise --drain-secs if work was still queued)"
        );
    }
}
