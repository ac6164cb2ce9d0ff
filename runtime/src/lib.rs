//! The worker runtime: for each consumer group, N workers with prefetch and
//! batching, plus a mover for the broker's own dead letters. It applies
//! events through the [`handler::Handlers`] it is given and knows no store:
//! this crate depends on nothing of the store's rules (`consumers`'s
//! `handlers` implement the interface; the binary passes them in).
//!
//! - [`worker`]: consume, batch, commit, then ack; retries; outage pauses.
//! - [`batch`]: one transaction per batch, one savepoint per event, dedup.
//! - [`attempts`]: attempt history in headers.
//! - [`consuming`]: QoS, consume, and what the next delivery means.
//! - [`incoming`]: decoding deliveries (poison included).
//! - [`dead_letter_store`]: the PostgreSQL dead-letter table.
//! - [`broker_dead_letters`]: moving broker dead letters into the store.
//! - [`health`]: readiness flags.
//! - [`positions`]: how far the workers have got, for the oldest waiting age.
//! - [`settlement`]: the one rule for acks and nacks, and the ledger that enforces it.
//! - [`leases`]: which process runs which group.
//! - [`handler`]: the interface the runtime applies events through.
//! - [`metrics`]: every metric the workers emit.
//! - [`fnv`]: the FNV-1a hash of advisory-lock ids.

pub mod attempts;
pub mod batch;
pub mod broker_dead_letters;
pub mod consuming;
pub mod dead_letter_store;
pub mod error;
pub mod fnv;
pub mod handler;
pub mod health;
pub mod incoming;
pub mod leases;
pub mod metrics;
pub mod positions;
pub mod settlement;
pub mod worker;

use std::sync::Arc;

use lapin::Connection;
use shared::groups::ConsumerGroup;
use shared::publish::Publisher;
use shared::settings::Settings;
use shared::topology::Topology;
use sqlx::PgPool;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub use attempts::AttemptKey;
pub use batch::{BatchContext, Outcome};
pub use error::RuntimeError;
pub use health::Health;
pub use leases::Leases;
pub use worker::Worker;

/// Runs the workers of `options` in a task of their own, on a broker
/// connection of their own named `name`, until `shutdown` (see
/// [`run_workers_reconnecting`]). For callers that run workers beside other
/// work (the demo, tests, benchmarks).
pub fn spawn_workers(
    settings: Settings,
    topology: Topology,
    pool: PgPool,
    options: WorkerOptions,
    shutdown: CancellationToken,
    name: &'static str,
) -> tokio::task::JoinHandle<Result<(), RuntimeError>> {
    tokio::spawn(async move {
        run_workers_reconnecting(
            &settings,
            &topology,
            pool,
            &options,
            Health::default(),
            shutdown,
            name,
            |_| {},
        )
        .await
    })
}

/// How long the workers wait for the broker, at start and after their
/// connection is lost for good, before giving up.
pub const BROKER_PATIENCE: std::time::Duration = shared::startup::BROKER_PATIENCE;

/// Runs the workers on a connection named `name` until `shutdown`. When the
/// connection fails (a broker restart, a network cut), the workers stop (a
/// batch in hand may finish its commit for a few seconds, but is never
/// acked: its acker died with the connection, and the broker redelivers it
/// to be skipped as a duplicate), and a new connection is opened, retried
/// for [`BROKER_PATIENCE`], instead of the process exiting. lapin's own
/// recovery is not used here (see [`shared::broker::connect_once`]).
/// `connected` is told of each new connection (for readiness). Errors that
/// a new connection would not fix (the broker ended a consumer, a worker
/// panicked) stop the runtime.
#[allow(clippy::too_many_arguments)]
pub async fn run_workers_reconnecting(
    settings: &Settings,
    topology: &Topology,
    pool: PgPool,
    options: &WorkerOptions,
    health: Health,
    shutdown: CancellationToken,
    name: &str,
    mut connected: impl FnMut(&Arc<Connection>),
) -> Result<(), RuntimeError> {
    let attempt_key = AttemptKey::load(&pool)
        .await
        .map_err(RuntimeError::AttemptKey)?;
    // Leases outlive broker connections; they are freed once every batch
    // in hand has finished.
    let leases_stop = CancellationToken::new();
    let (leases, keeper) = Leases::start(
        &settings.namespace,
        &options.groups,
        options.group_concurrency,
        pool.clone(),
        leases_stop.clone(),
    );
    let mut lingering = Vec::new();
    let result = loop {
        let connection = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            connection = shared::broker::connect_once_with_retry(
                settings, name, &settings.retry, BROKER_PATIENCE,
            ) => match connection {
                Ok(connection) => Arc::new(connection),
                Err(error) => break Err(error.into()),
            },
        };
        connected(&connection);
        // A worker's error stops its siblings through this child token,
        // not the caller's.
        let workers_stop = shutdown.child_token();
        let (result, still_running) = run_workers(
            settings,
            &connection,
            topology,
            pool.clone(),
            options,
            health.clone(),
            &attempt_key,
            &leases,
            workers_stop,
        )
        .await;
        lingering.extend(still_running);
        // Bounded: a connection that died may never answer a close.
        let closing = connection.close(200, "workers stopped".into());
        let _ = tokio::time::timeout(LOST_CONNECTION_GRACE, closing).await;
        match result {
            Err(error) if error.is_connection_lost() && !shutdown.is_cancelled() => {
                crate::metrics::broker_reconnect();
                tracing::warn!(%error, "the broker connection is lost; reconnecting the workers");
            }
            other => break other,
        }
    };
    // Batches from lost connections finish their commit before we return.
    for task in lingering {
        let _ = task.await;
    }
    leases_stop.cancel();
    let _ = keeper.await;
    result
}

/// How long workers whose broker connection is lost wait for the batches
/// in hand (which can no longer be acked) before reconnecting without them.
const LOST_CONNECTION_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Deliveries the broker may send a worker ahead of its acks, by default:
/// a batch in hand, the next one taken while it commits, and as many again
/// in flight from the broker.
pub const DEFAULT_PREFETCH: u16 = 256;
/// Most events in one batch, by default. One call of the group's
/// function per batch: larger batches spread its fixed cost (the round
/// trip, the commit's WAL flush) over more events; draining the store mix
/// on the 2-core benchmark machine, 128 applied 8,672 events/s against
/// 6,078 with 32 (bench/experiments.md, "Batch size"). A batch only grows with load: a
/// lone event is applied as soon as it arrives.
pub const DEFAULT_BATCH_SIZE: u16 = 128;

/// How long a batch waits for more events after its first arrives, by
/// default: not at all, a lone event is applied as soon as it arrives. A
/// call of the group's function costs the database nearly as much for
/// three events as for thirty (executor start-up, the commit), so at
/// moderate rates a wait of a millisecond (`--batch-linger-ms 1`) makes
/// fewer, fuller calls: on the 2-core benchmark machine at 2,000 events/s,
/// PostgreSQL 131 against 163 µs of CPU per delivery on the store mix, 84
/// against 110 on `order.placed`. It costs up to two milliseconds of
/// latency (the timer's resolution is a millisecond): p50 at 500/s 3.7
/// against 1.8 ms, and no p99 gained at 2,000/s in nine runs each
/// (bench/experiments.md, "Batch linger"); hence off by default, for hosts
/// short of CPU.
pub const DEFAULT_BATCH_LINGER: std::time::Duration = std::time::Duration::ZERO;

/// Longest a batch's database work may take, by default: 30 s, some
/// thousand times what a full batch takes. Past it the worker gives up on
/// the connection, holds the batch as in an outage (`/readyz` not ready,
/// `switchyard_batches_held_total`, a warning naming the group), pauses
/// and tries again on a fresh connection: a lock held elsewhere or a
/// server that stopped answering shows, and a stop request waits at most
/// this long for a batch in the database.
pub const DEFAULT_BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
    /// Longest wait, after a batch's first event arrives, for more to
    /// join it (while it is not full).
    pub batch_linger: std::time::Duration,
    /// Longest a batch's database work may take before the worker gives
    /// up on its connection and tries it again.
    pub batch_timeout: std::time::Duration,
    /// Processes that may consume a group at once (its lease slots; see
    /// [`leases`]): 1 by default, the others standing by.
    pub group_concurrency: u16,
    /// What applies the groups' events (the store's: `handlers::Store`).
    pub handlers: Arc<dyn handler::Handlers>,
}

impl WorkerOptions {
    /// Every group, `workers` per group, and the defaults for the rest
    /// (prefetch, batch size, linger, timeout, group concurrency) — the
    /// values `consumers run` starts with when given no flags.
    pub fn defaults(workers: usize, handlers: Arc<dyn handler::Handlers>) -> Self {
        Self {
            groups: ConsumerGroup::ALL.to_vec(),
            workers,
            prefetch: DEFAULT_PREFETCH,
            batch_size: usize::from(DEFAULT_BATCH_SIZE),
            batch_linger: DEFAULT_BATCH_LINGER,
            batch_timeout: DEFAULT_BATCH_TIMEOUT,
            group_concurrency: DEFAULT_GROUP_CONCURRENCY,
            handlers,
        }
    }
}

/// Processes consuming a group at once, by default: one. On the store mix
/// two or three processes competing for a group were slower than one
/// (hot aggregates' locks, orders overtaken by their payments).
pub const DEFAULT_GROUP_CONCURRENCY: u16 = 1;

/// Runs `workers` (of `group`) on `connection` while this process holds
/// the group's lease, waiting for it first, until `shutdown`. When the
/// lease is revoked (handed to another process), the workers stop as on
/// shutdown — finishing, committing and acknowledging what they received
/// — then the lease is freed and waited for again.
async fn run_leased_group(
    group: ConsumerGroup,
    workers: Vec<Worker>,
    connection: Arc<Connection>,
    leases: Leases,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    loop {
        let Some(lease) = leases.acquire(group, &shutdown).await else {
            return Ok(());
        };
        let stop = shutdown.child_token();
        let mut running = JoinSet::new();
        for worker in workers.iter().cloned() {
            let (connection, stop) = (Arc::clone(&connection), stop.clone());
            running.spawn(async move {
                let channel = connection.create_channel().await?;
                worker.run(channel, stop).await
            });
        }
        let mut first_error = None;
        loop {
            let joined = tokio::select! {
                joined = running.join_next() => joined,
                () = lease.revoked.cancelled(), if !stop.is_cancelled() => {
                    stop.cancel();
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let error = match joined {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error,
                Err(panic) => RuntimeError::WorkerPanicked(panic.to_string()),
            };
            // One worker's failure stops its siblings; the first error is
            // the group's.
            stop.cancel();
            first_error.get_or_insert(error);
        }
        if lease.revoked.is_cancelled() {
            leases.released(group);
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

/// Runs every worker of `options` on `connection` until `shutdown` is
/// cancelled, then lets each finish its batch. Returns the first worker
/// error, if any, and, when the connection was lost and some batch was
/// still in the database after [`LOST_CONNECTION_GRACE`], the task that
/// lets those finish (committed, never acked) while the caller reconnects.
#[allow(clippy::too_many_arguments)]
async fn run_workers(
    settings: &Settings,
    connection: &Arc<Connection>,
    topology: &Topology,
    pool: PgPool,
    options: &WorkerOptions,
    health: Health,
    attempt_key: &AttemptKey,
    leases: &Leases,
    shutdown: CancellationToken,
) -> (Result<(), RuntimeError>, Option<JoinHandle<()>>) {
    let retry_publisher = Publisher::new(settings, "", "switchyard-retries");
    let mut tasks = JoinSet::new();
    for group in &options.groups {
        let queues = topology.group(*group).clone();
        let workers: Vec<Worker> = (1..=options.workers)
            .map(|index| Worker {
                context: BatchContext {
                    group: *group,
                    handlers: Arc::clone(&options.handlers),
                    worker: format!("{group}-{}-{index}", std::process::id()),
                    policy: settings.retry.clone(),
                    attempt_key: attempt_key.clone(),
                },
                queues: queues.clone(),
                pool: pool.clone(),
                retry_publisher: retry_publisher.clone(),
                prefetch: options.prefetch,
                batching: worker::Batching {
                    size: options.batch_size,
                    linger: options.batch_linger,
                    timeout: options.batch_timeout,
                },
                max_event_bytes: settings.max_event_bytes,
                health: health.clone(),
            })
            .collect();
        tasks.spawn(run_leased_group(
            *group,
            workers,
            Arc::clone(connection),
            leases.clone(),
            shutdown.clone(),
        ));
        let (connection, pool, shutdown) = (Arc::clone(connection), pool.clone(), shutdown.clone());
        let (dead_letter_queue, max_bytes) = (queues.dead_letter.clone(), settings.max_event_bytes);
        let context = BatchContext {
            group: *group,
            handlers: Arc::clone(&options.handlers),
            worker: format!("{group}-{}-dead-letter-mover", std::process::id()),
            policy: settings.retry.clone(),
            attempt_key: attempt_key.clone(),
        };
        tasks.spawn(async move {
            let channel = connection.create_channel().await?;
            broker_dead_letters::move_broker_dead_letters(
                channel,
                context,
                &dead_letter_queue,
                pool,
                max_bytes,
                shutdown,
            )
            .await
        });
    }
    let mut first_error = None;
    let mut lingering = None;
    loop {
        let joined = if first_error
            .as_ref()
            .is_some_and(RuntimeError::is_connection_lost)
        {
            // The connection is gone for good: no batch still in hand can be
            // acked any more. Give them a moment to finish their commit, then
            // drop them (an open transaction rolls back); either way the
            // broker redelivers them and what committed is skipped.
            match tokio::time::timeout(LOST_CONNECTION_GRACE, tasks.join_next()).await {
                Ok(joined) => joined,
                Err(_) => {
                    tracing::warn!(
                        workers = tasks.len(),
                        "batches taken on the lost connection are still in the database; reconnecting meanwhile"
                    );
                    let mut remaining = std::mem::take(&mut tasks);
                    lingering = Some(tokio::spawn(async move {
                        while remaining.join_next().await.is_some() {}
                    }));
                    None
                }
            }
        } else {
            tasks.join_next().await
        };
        let Some(joined) = joined else { break };
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
    if lingering.is_none() {
        retry_publisher.close().await;
    }
    (first_error.map_or(Ok(()), Err), lingering)
}
