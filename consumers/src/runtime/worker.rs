//! One worker: a channel with prefetch, a consumer on the group's work
//! queue, and a loop that takes what is ready (up to the batch size, waiting
//! at most the batch linger after its first event for more), applies it in
//! one transaction and acknowledges only after the commit. Pipelined:
//! while one batch is applied, committed and acknowledged, the next is
//! taken and decoded; it is applied (and acknowledged) only after.

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::BasicCancelOptions;
use shared::publish::Publisher;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio_util::sync::CancellationToken;

use super::RuntimeError;
use super::batch::{BatchContext, BatchError, Outcome, process_batch};
use super::consuming;
use super::health::Health;
use super::incoming::Incoming;
use super::positions::Position;

mod settle;
use shared::topology::GroupQueues;

/// First and longest pause while the database fails a batch (and between
/// probes of it).
const PAUSE_FIRST: Duration = Duration::from_millis(100);
const PAUSE_LONGEST: Duration = Duration::from_secs(5);
/// Longest wait for the database's answer to a probe.
const PROBE_PATIENCE: Duration = Duration::from_secs(5);

/// Everything one worker needs.
#[derive(Clone)]
pub struct Worker {
    /// Group, worker name, retry policy.
    pub context: BatchContext,
    /// The group's queue names.
    pub queues: GroupQueues,
    /// The database.
    pub pool: PgPool,
    /// Publishes retries to the wait queues (default exchange).
    pub retry_publisher: Publisher,
    /// Unacknowledged deliveries the broker may send ahead.
    pub prefetch: u16,
    /// Most deliveries applied in one transaction.
    pub batch_size: usize,
    /// Longest wait, after a batch's first delivery arrived, for more.
    pub batch_linger: Duration,
    /// Longest a batch's database work may take (one try of it).
    pub batch_timeout: Duration,
    /// Largest accepted event body.
    pub max_event_bytes: usize,
    /// Readiness flags.
    pub health: Health,
}

/// Longest wait for the broker's cancel-ok, and for the next received
/// delivery while finishing up, when stopping.
const DRAIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

impl Worker {
    /// Consumes until `shutdown` is cancelled, then stops the broker's
    /// deliveries (basic.cancel) and finishes, commits and acknowledges
    /// everything it already received — the batch in hand and the rest of
    /// its prefetch — before returning: a stopped worker hands nothing back
    /// to be redelivered (unless the database or broker fails meanwhile).
    pub async fn run(
        self,
        channel: Channel,
        shutdown: CancellationToken,
    ) -> Result<(), RuntimeError> {
        let queue = self.queues.work.as_str();
        let mut consumer =
            consuming::start(&channel, queue, &self.context.worker, self.prefetch).await?;
        tracing::info!(group = %self.context.group, worker = %self.context.worker, "worker consuming");
        let mut connection = None;
        let mut draining = false;
        let mut finished_after_stop = 0_usize;
        let mut position = Position::default();
        // Taken and decoded while the previous batch was applied.
        let mut ahead: Option<Taken> = None;
        loop {
            // Under steady load a batch is always waiting ahead: look at the
            // stop request here too, not only while waiting for a delivery.
            if !draining && shutdown.is_cancelled() && ahead.is_some() {
                if !self.stop_deliveries(&channel).await {
                    break;
                }
                draining = true;
            }
            let mut taken = match ahead.take() {
                Some(taken) if !taken.deliveries.is_empty() => taken,
                Some(Taken {
                    ended: Some(ended), ..
                }) => {
                    stream_ended(ended, draining, &channel, queue)?;
                    break;
                }
                _ => {
                    let first = if draining {
                        // After cancel-ok the stream holds exactly what was sent, then ends.
                        match tokio::time::timeout(DRAIN_PATIENCE, consumer.next()).await {
                            Ok(Some(Ok(delivery))) => delivery,
                            Ok(_) => break,
                            Err(_) => {
                                tracing::warn!(worker = %self.context.worker, "stopping: the broker's cancel did not end the deliveries in time");
                                break;
                            }
                        }
                    } else {
                        match consuming::next_delivery(&channel, &mut consumer, queue, &shutdown)
                            .await?
                        {
                            Some(delivery) => delivery,
                            None => {
                                if !self.stop_deliveries(&channel).await {
                                    break;
                                }
                                draining = true;
                                continue;
                            }
                        }
                    };
                    let mut taken = Taken::default();
                    taken.push(&self, first);
                    taken
                }
            };
            // Take what is already here, then what arrives within the
            // linger of the first (a batch taken during the previous call has
            // usually waited that long already); not when stopping. The
            // stream's end (or error) may come here; it is not polled again.
            while taken.ended.is_none() && taken.deliveries.len() < self.batch_size {
                match consumer.next().now_or_never() {
                    Some(next) => taken.take(&self, next),
                    None => break,
                }
            }
            if !draining && !self.batch_linger.is_zero() {
                self.linger(&mut consumer, &mut taken, &shutdown).await;
            }
            if draining {
                finished_after_stop += taken.deliveries.len();
            }
            let count = taken.deliveries.len() as f64;
            position.taken(&taken.batch);
            crate::metrics::in_flight(self.context.group, count);
            // Pipelined: while this batch is applied, committed and acked,
            // the next one is taken and decoded (and acked only after its
            // own commit, so acks stay in order).
            let mut next = Taken::default();
            let outcomes = {
                let handling =
                    self.handle(&taken.deliveries, &taken.batch, &mut connection, &shutdown);
                tokio::pin!(handling);
                loop {
                    tokio::select! {
                        biased;
                        outcomes = &mut handling => break outcomes,
                        delivery = consumer.next(), if taken.ended.is_none()
                            && next.ended.is_none()
                            && next.deliveries.len() < self.batch_size =>
                        {
                            next.take(&self, delivery);
                        }
                    }
                }
            };
            crate::metrics::in_flight(self.context.group, -count);
            position.applied(&taken.batch, &outcomes);
            position
                .report(self.context.group, connection.as_deref_mut(), false)
                .await;
            if let Some(ended) = taken.ended {
                // Stopping: everything the broker sent has been finished.
                stream_ended(ended, draining, &channel, queue)?;
                break;
            }
            ahead = Some(next);
        }
        position
            .report(self.context.group, connection.as_deref_mut(), true)
            .await;
        let _ = channel.close(200, "worker stopping".into()).await;
        tracing::info!(worker = %self.context.worker, finished_after_stop, "worker stopped");
        Ok(())
    }

    /// Takes what arrives until the batch is full or the linger has passed
    /// since its first delivery arrived; a stop request ends the wait.
    async fn linger(
        &self,
        consumer: &mut lapin::Consumer,
        taken: &mut Taken,
        shutdown: &CancellationToken,
    ) {
        let Some(first_arrived) = taken.first_arrived else {
            return;
        };
        let deadline = first_arrived + self.batch_linger;
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        let lingering = tokio::time::sleep_until(deadline);
        tokio::pin!(lingering);
        while taken.ended.is_none() && taken.deliveries.len() < self.batch_size {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                next = consumer.next() => taken.take(self, next),
                () = &mut lingering => break,
            }
        }
    }

    /// Asks the broker to stop sending (basic.cancel) and waits for its
    /// cancel-ok; false when it did not come in time.
    async fn stop_deliveries(&self, channel: &Channel) -> bool {
        let cancel = channel.basic_cancel(
            self.context.worker.as_str().into(),
            BasicCancelOptions::default(),
        );
        if !matches!(
            tokio::time::timeout(DRAIN_PATIENCE, cancel).await,
            Ok(Ok(()))
        ) {
            return false;
        }
        tracing::info!(worker = %self.context.worker, "stopping: finishing what was received");
        true
    }

    async fn handle(
        &self,
        deliveries: &[Delivery],
        batch: &[Incoming],
        held: &mut Option<PoolConnection<Postgres>>,
        shutdown: &CancellationToken,
    ) -> Vec<Outcome> {
        // A failure here is the database's, never the events': hold the
        // batch (the prefetch window stops new deliveries), burn no attempt,
        // and try it again after a pause that grows while it keeps failing
        // (a read-only database still answers a probe, so the probe alone
        // would not slow the retries down).
        let mut pause = self.context.policy.pauses(PAUSE_FIRST, PAUSE_LONGEST);
        let outcomes = loop {
            let result = match held_connection(&self.pool, held).await {
                // Past the deadline the try is dropped mid-statement: its
                // connection is thrown away below (its backend, checking
                // for us every second, gives up too).
                Ok(connection) => tokio::time::timeout(
                    self.batch_timeout,
                    process_batch(connection, &self.context, batch),
                )
                .await
                .unwrap_or(Err(BatchError::TimedOut(self.batch_timeout))),
                Err(error) => Err(BatchError::from(error)),
            };
            let error = match result {
                Ok(applied) => break applied.outcomes,
                Err(error) => error,
            };
            // It may be broken, or its session stuck in a state the
            // failure came from (read-only after a failover): never give it
            // back to the pool; the next try opens a fresh one.
            if let Some(connection) = held.take() {
                drop(connection.detach());
            }
            tracing::warn!(worker = %self.context.worker, %error,
                "batch not applied: the database failed or did not answer in time (not its events); holding it and trying again");
            crate::metrics::batch_held(self.context.group);
            self.health.set_database_ready(false);
            let wait = backoff::backoff::Backoff::next_backoff(&mut pause).unwrap_or(PAUSE_LONGEST);
            if !pause_then_probe(&self.pool, &self.context, wait, shutdown).await {
                return Vec::new(); // shutting down: unacked deliveries go back to the queue
            }
        };
        if !self.health.database_ready() {
            self.health.set_database_ready(true);
            tracing::info!(worker = %self.context.worker, "batch applied; database back");
        }
        self.settle(deliveries, batch, &outcomes, shutdown).await;
        outcomes
    }
}

/// Deliveries taken for one batch, decoded as they were taken, and how the
/// stream stood after the last of them (`Some`: it ended, with the error
/// if it failed; it is not polled again).
#[derive(Default)]
struct Taken {
    deliveries: Vec<Delivery>,
    batch: Vec<Incoming>,
    ended: Option<Option<lapin::Error>>,
    /// When the first delivery was received.
    first_arrived: Option<tokio::time::Instant>,
}

impl Taken {
    /// Decodes `delivery`, moving its body and properties into the batch;
    /// what is kept of it serves to acknowledge it.
    fn push(&mut self, worker: &Worker, mut delivery: Delivery) {
        self.first_arrived
            .get_or_insert_with(tokio::time::Instant::now);
        self.batch.push(Incoming::take_from(
            &mut delivery,
            worker.max_event_bytes,
            &worker.context.attempt_key,
        ));
        self.deliveries.push(delivery);
    }

    /// What the consumer stream gave next.
    fn take(&mut self, worker: &Worker, next: Option<Result<Delivery, lapin::Error>>) {
        match next {
            Some(Ok(delivery)) => self.push(worker, delivery),
            Some(Err(error)) => self.ended = Some(Some(error)),
            None => self.ended = Some(None),
        }
    }
}

/// After the consumer stream ended: `Ok` when stopping (everything the
/// broker sent has been finished), else why the worker must stop.
fn stream_ended(
    ended: Option<lapin::Error>,
    draining: bool,
    channel: &Channel,
    queue: &str,
) -> Result<(), RuntimeError> {
    match ended {
        _ if draining => Ok(()),
        Some(error) => {
            tracing::warn!(queue, %error, "consumer error: the connection failed");
            Err(RuntimeError::Broker(error))
        }
        None if channel.status().connected() => Err(RuntimeError::ConsumerEnded {
            queue: queue.to_owned(),
        }),
        None => Err(RuntimeError::ConnectionLost {
            queue: queue.to_owned(),
        }),
    }
}

/// The worker's own connection: taken from the pool on first use and kept
/// between batches, so a batch costs no acquire and no release round trip.
async fn held_connection<'a>(
    pool: &PgPool,
    held: &'a mut Option<PoolConnection<Postgres>>,
) -> Result<&'a mut PgConnection, sqlx::Error> {
    let connection = match held.take() {
        Some(connection) => connection,
        None => pool.acquire().await?,
    };
    Ok(&mut **held.insert(connection))
}

/// Waits `pause`, then probes the database with the retry policy's backoff
/// until it answers (true) or shutdown is requested (false).
async fn pause_then_probe(
    pool: &PgPool,
    context: &BatchContext,
    pause: Duration,
    shutdown: &CancellationToken,
) -> bool {
    use backoff::backoff::Backoff;
    if shutdown
        .run_until_cancelled(tokio::time::sleep(pause))
        .await
        .is_none()
    {
        return false;
    }
    let mut schedule = context.policy.pauses(PAUSE_FIRST, PAUSE_LONGEST);
    loop {
        let wait = schedule.next_backoff().unwrap_or(PAUSE_LONGEST);
        if shutdown
            .run_until_cancelled(tokio::time::sleep(wait))
            .await
            .is_none()
        {
            return false;
        }
        if shared::database::responds(pool, PROBE_PATIENCE).await {
            return true;
        }
    }
}
