//! The worker runtime: for each consumer group, N workers with prefetch and
//! batching, plus a mover for the broker's own dead letters.
//!
//! - [`worker`]: consume, batch, commit, then ack; retries; outage pauses.
//! - [`batch`]: one transaction per batch, one savepoint per event, dedup.
//! - [`attempts`]: attempt history in headers.
//! - [`consuming`]: QoS, consume, and what the next delivery means.
//! - [`incoming`]: decoding deliveries (poison included).
//! - [`dead_letter_store`]: the PostgreSQL dead-letter table.
//! - [`broker_dead_letters`]: moving broker dead letters into the store.
//! - [`health`]: readiness flags.

pub mod attempts;
pub mod batch;
pub mod broker_dead_letters;
pub mod consuming;
pub mod dead_letter_store;
pub mod health;
pub mod incoming;
pub mod worker;

use lapin::Connection;
use shared::groups::ConsumerGroup;
use shared::publish::Publisher;
use shared::settings::Settings;
use shared::topology::Topology;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use batch::{BatchContext, Outcome};
pub use health::Health;
pub use worker::Worker;

/// Why the runtime stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The broker failed in a way lapin could not recover from.
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    /// The workers' broker connection could not be opened.
    #[error(transparent)]
    Connect(#[from] shared::broker::ConnectError),
    /// The broker ended a worker's consumer (its queue was deleted, or the
    /// consumer was cancelled) while the worker was not stopping.
    #[error("the broker ended the consumer on {queue}")]
    ConsumerEnded {
        /// The queue consumed.
        queue: String,
    },
    /// A worker panicked; the others were stopped.
    #[error("a worker panicked: {0}")]
    WorkerPanicked(String),
}

/// Runs the workers of `options` in a task of their own, on a broker
/// connection of their own named `name`, until `shutdown`; the connection is
/// closed when they stop. For callers that run workers beside other work
/// (the demo, tests, benchmarks).
pub fn spawn_workers(
    settings: Settings,
    topology: Topology,
    pool: PgPool,
    options: WorkerOptions,
    shutdown: CancellationToken,
    name: &'static str,
) -> tokio::task::JoinHandle<Result<(), RuntimeError>> {
    tokio::spawn(async move {
        let connection = shared::broker::connect(&settings, name).await?;
        let result = run_workers(
            &settings,
            &connection,
            &topology,
            pool,
            &options,
            Health::default(),
            shutdown,
        )
        .await;
        let _ = connection.close(200, "workers stopped".into()).await;
        result
    })
}

/// How many workers, and how they batch.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Groups to run.
    pub groups: Vec<ConsumerGroup>,
    /// Workers (channels) per group.
    pub workers: usize,
    /// Prefetch per worker.
    pub prefetch: u16,
    /// Most events per transaction.
    pub batch_size: usize,
}

/// Runs every worker of `options` until `shutdown` is cancelled, then lets
/// each finish its batch. Returns the first worker error, if any.
pub async fn run_workers(
    settings: &Settings,
    connection: &Connection,
    topology: &Topology,
    pool: PgPool,
    options: &WorkerOptions,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let retry_publisher = Publisher::new(settings, "", "switchyard-retries");
    let mut tasks = JoinSet::new();
    for group in &options.groups {
        let queues = topology.group(*group).clone();
        for index in 1..=options.workers {
            let worker = Worker {
                context: BatchContext {
                    group: *group,
                    worker: format!("{group}-{}-{index}", std::process::id()),
                    policy: settings.retry.clone(),
                },
                queues: queues.clone(),
                pool: pool.clone(),
                retry_publisher: retry_publisher.clone(),
                prefetch: options.prefetch,
                batch_size: options.batch_size,
                max_event_bytes: settings.max_event_bytes,
                health: health.clone(),
            };
            let channel = connection.create_channel().await?;
            let shutdown = shutdown.clone();
            tasks.spawn(async move { worker.run(channel, shutdown).await });
        }
        let (channel, pool, shutdown) = (
            connection.create_channel().await?,
            pool.clone(),
            shutdown.clone(),
        );
        let (dead_letter_queue, max_bytes, policy, group) = (
            queues.dead_letter.clone(),
            settings.max_event_bytes,
            settings.retry.clone(),
            *group,
        );
        tasks.spawn(async move {
            broker_dead_letters::move_broker_dead_letters(
                channel,
                group,
                &dead_letter_queue,
                pool,
                max_bytes,
                policy,
                shutdown,
            )
            .await
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "a worker stopped with an error; stopping the others");
                shutdown.cancel();
                first_error.get_or_insert(error);
            }
            Err(panic) => {
                tracing::error!(%panic, "a worker panicked; stopping the others");
                shutdown.cancel();
                first_error.get_or_insert(RuntimeError::WorkerPanicked(panic.to_string()));
            }
        }
    }
    retry_publisher.close().await;
    first_error.map_or(Ok(()), Err)
}
