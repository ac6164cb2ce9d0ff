//! The main job: the whole stack on one machine — migrate, declare, start
//! the workers of every group, feed them simulated store traffic, show live
//! progress, and end with totals read from the database.

use std::time::{Duration, Instant};

use std::sync::Arc;

use producers::load::{Limit, LoadOptions, LoadProgress, Target, run_load};
use shared::groups::ConsumerGroup;
use shared::publish::Publisher;
use shared::settings::Settings;
use shared::simulation::StoreTraffic;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use runtime::{WorkerOptions, spawn_workers};

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Events to publish.
    pub count: u64,
    /// Target publish rate; `None` is flat out.
    pub rate: Option<u64>,
    /// Seed of the simulated store.
    pub seed: u64,
    /// Worker settings (all groups).
    pub workers: WorkerOptions,
    /// Stop after this long even if work remains.
    pub deadline: Duration,
}

/// Runs the stack until every published event is applied or dead-lettered
/// by every group that receives it (or the deadline, or `shutdown`).
pub async fn run_demo(
    settings: &Settings,
    options: DemoOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let connections = options.workers.groups.len() as u32 * options.workers.workers as u32 + 4;
    let pool = shared::startup::prepare_database(settings, connections).await?;
    let (connection, topology) =
        shared::startup::prepare_broker(settings, "switchyard-demo").await?;
    let before = applied_and_dead(&pool).await?;
    let expected = routed_deliveries(options.seed, options.count);
    let workers = spawn_workers(
        settings.clone(),
        topology.clone(),
        pool.clone(),
        options.workers.clone(),
        shutdown.clone(),
        "switchyard-demo-workers",
    );
    let publisher =
        Publisher::connect(settings, topology.events_exchange(), "switchyard-demo-load").await?;
    // The load generator of `producers load`, straight to the broker with
    // confirms: the store's events in order of partition key, nothing
    // invalid, nothing through the outbox.
    let load = tokio::spawn(run_load(
        Target::Amqp(publisher.clone()),
        None,
        LoadOptions {
            limit: Limit::Count(options.count),
            rate: options.rate,
            seed: options.seed,
            ..LoadOptions::default()
        },
        Arc::new(LoadProgress::default()),
        shutdown.clone(),
    ));
    println!(
        "switchyard demo: {} store events → {expected} deliveries to {} groups",
        options.count,
        options.workers.groups.len()
    );
    let started = Instant::now();
    let mut last = (started, 0i64);
    let mut unfinished = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let (applied, dead) = applied_and_dead(&pool).await?;
        let done = applied - before.0 + dead - before.1;
        let depths = topology.depths(&connection).await?;
        let retrying: u32 = depths.iter().map(|depth| depth.retrying).sum();
        let backlog: u32 = depths.iter().map(|depth| depth.work).sum();
        let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), done);
        println!(
            "[{:>5.1}s] applied {done:>8}/{expected}  {rate:>7.0}/s  queued {backlog:>6}  retrying {retrying:>4}  dead-lettered {:>4}",
            started.elapsed().as_secs_f64(),
            dead - before.1,
        );
        if done as u64 >= expected && load.is_finished() {
            break;
        }
        if started.elapsed() > options.deadline {
            println!("deadline reached; stopping with work left");
            unfinished = Some(done);
            break;
        }
    }
    shutdown.cancel();
    let report = load.await??;
    workers.await??;
    publisher.close().await;
    let _ = connection.close(200, "OK".into()).await;
    println!(
        "\npublished {} ({} failed) at {:.0}/s; confirm {}",
        report.accepted_direct,
        report.failed,
        report.rate(),
        report
            .latency
            .map_or("-".to_owned(), |latency| latency.to_string())
    );
    crate::report::print_batch_paths();
    crate::report::print_totals(&pool).await?;
    shared::database::close(&pool).await;
    if let Some(done) = unfinished {
        anyhow::bail!(
            "the deadline ({} s) passed with {done} of {expected} deliveries applied or dead-lettered",
            options.deadline.as_secs()
        );
    }
    Ok(())
}

/// How many (event, group) deliveries `count` events of `seed` make.
fn routed_deliveries(seed: u64, count: u64) -> u64 {
    let mut store = StoreTraffic::new(seed);
    (0..count)
        .map(|_| {
            let event_type = store.next_event().event_type();
            ConsumerGroup::ALL
                .iter()
                .filter(|group| group.handles(event_type))
                .count() as u64
        })
        .sum()
}

async fn applied_and_dead(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM processed_events), (SELECT count(*) FROM dead_letters WHERE status = 'open')",
    )
    .fetch_one(pool)
    .await
}
