//! One worker: a channel with prefetch, a consumer on the group's work
//! queue, and a loop that takes what is ready (up to the batch size, waiting
//! at most the batch linger after its first event for more), applies it in
//! one transaction and settles it only after the commit. Pipelined:
//! while one batch is applied, committed and settled, the next is taken
//! and decoded; it is applied (and settled) only after.
//!
//! The loop ([`consume`]) knows the world only through the interfaces of
//! [`ports`]; [`Worker::run`] gives it lapin and PostgreSQL. Settling
//! follows the one rule of [`super::settlement`]: a delivery is acked only
//! once its own outcome is committed, and on a stop whatever is not
//! settled goes back to the broker.

use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use shared::publish::Publisher;
use shared::retry::Pauses;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::batch::{BatchContext, BatchError, Outcome};
use super::consuming;
use super::error::RuntimeError;
use super::health::Health;
use super::incoming::Incoming;
use super::positions::Position;
use super::settlement::{Acknowledge, Ledger};

pub mod ports;
mod settle;
use ports::{Channel, LapinChannel, PostgresStore, Received, Retries, Store, WaitQueues};
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
    /// How it batches.
    pub batching: Batching,
    /// Largest accepted event body.
    pub max_event_bytes: usize,
    /// Readiness flags.
    pub health: Health,
}

/// How a worker forms and applies batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most deliveries applied in one transaction.
    pub size: usize,
    /// Longest wait, after a batch's first delivery arrived, for more.
    pub linger: Duration,
    /// Longest a batch's database work may take (one try of it).
    pub timeout: Duration,
}

/// Longest wait for the next received delivery while finishing up after
/// the broker's cancel-ok.
const DRAIN_PATIENCE: Duration = Duration::from_secs(5);

impl Worker {
    /// Consumes until `shutdown` is cancelled, then stops the broker's
    /// deliveries (basic.cancel) and finishes, commits and settles what it
    /// already received — the batch in hand and the rest of its prefetch.
    /// A batch the database cannot take by then is given back to the
    /// broker, with everything received after it.
    pub async fn run(
        self,
        channel: lapin::Channel,
        shutdown: CancellationToken,
    ) -> Result<(), RuntimeError> {
        let queue = self.queues.work.as_str();
        let consumer =
            consuming::start(&channel, queue, &self.context.worker, self.prefetch).await?;
        tracing::info!(group = %self.context.group, worker = %self.context.worker, "worker consuming");
        let mut deliveries = ports::lapin_deliveries(
            consumer,
            self.context.group,
            self.max_event_bytes,
            self.context.attempt_key.clone(),
        );
        let control = LapinChannel {
            channel: channel.clone(),
            consumer_tag: self.context.worker.clone(),
        };
        let store = PostgresStore::new(self.pool.clone(), self.context.clone());
        let retries = WaitQueues {
            publisher: self.retry_publisher.clone(),
            queues: self.queues.clone(),
            context: self.context.clone(),
        };
        let parts = Parts {
            context: &self.context,
            batching: self.batching,
            health: &self.health,
            queue,
        };
        let result = consume(parts, &mut deliveries, &control, store, &retries, &shutdown).await;
        let _ = channel.close(200, "worker stopping".into()).await;
        result
    }
}

/// What [`consume`] is told about the worker.
pub struct Parts<'a> {
    /// Group, worker name, retry policy.
    pub context: &'a BatchContext,
    /// How it batches.
    pub batching: Batching,
    /// Readiness flags, set while the database fails.
    pub health: &'a Health,
    /// The queue consumed (for messages).
    pub queue: &'a str,
}

/// The worker loop, on any [`ports`]: consumes `deliveries` until
/// `shutdown`, then stops them and finishes what was received. Returns
/// with every received delivery settled (acked after its commit, or given
/// back), unless the channel failed (then the broker gives back what it
/// did not see acked).
pub async fn consume<C, D, S, R>(
    parts: Parts<'_>,
    deliveries: &mut D,
    channel: &C,
    mut store: S,
    retries: &R,
    shutdown: &CancellationToken,
) -> Result<(), RuntimeError>
where
    C: Channel,
    D: Stream<Item = Result<Received<C::Acker>, RuntimeError>> + Unpin,
    S: Store,
    R: Retries,
{
    let worker = parts.context.worker.as_str();
    let mut ledger = Ledger::default();
    let mut draining = false;
    let mut finished_after_stop = 0_usize;
    let mut position = Position::default();
    // Taken and decoded while the previous batch was applied.
    let mut ahead: Option<Taken> = None;
    let result = loop {
        // Under steady load a batch is always waiting ahead: look at the
        // stop request here too, not only while waiting for a delivery.
        if !draining && shutdown.is_cancelled() && ahead.is_some() {
            if !stop_deliveries(channel, worker).await {
                break Ok(());
            }
            draining = true;
        }
        let mut taken = match ahead.take() {
            Some(taken) if !taken.batch.is_empty() => taken,
            Some(Taken {
                ended: Some(ended), ..
            }) => break stream_ended(ended, draining, channel, parts.queue),
            _ => {
                let first = if draining {
                    // After cancel-ok the stream holds exactly what was sent, then ends.
                    match tokio::time::timeout(DRAIN_PATIENCE, deliveries.next()).await {
                        Ok(Some(Ok(received))) => received,
                        Ok(_) => break Ok(()),
                        Err(_) => {
                            tracing::warn!(
                                worker,
                                "stopping: the broker's cancel did not end the deliveries in time"
                            );
                            break Ok(());
                        }
                    }
                } else {
                    let next = tokio::select! {
                        biased;
                        () = shutdown.cancelled() => None,
                        next = deliveries.next() => Some(next),
                    };
                    match next {
                        Some(Some(Ok(received))) => received,
                        Some(ended @ (Some(Err(_)) | None)) => {
                            let error = ended.and_then(Result::err);
                            break stream_ended(error, false, channel, parts.queue);
                        }
                        None => {
                            if !stop_deliveries(channel, worker).await {
                                break Ok(());
                            }
                            draining = true;
                            continue;
                        }
                    }
                };
                let mut taken = Taken::default();
                taken.push(first, &mut ledger);
                taken
            }
        };
        // Take what is already here, then what arrives within the
        // linger of the first (a batch taken during the previous call has
        // usually waited that long already); not when stopping. The
        // stream's end (or error) may come here; it is not polled again.
        let batching = parts.batching;
        while taken.ended.is_none() && taken.batch.len() < batching.size {
            match deliveries.next().now_or_never() {
                Some(next) => taken.take(next, &mut ledger),
                None => break,
            }
        }
        if !draining && !batching.linger.is_zero() {
            linger(deliveries, &mut taken, &mut ledger, batching, shutdown).await;
        }
        if draining {
            finished_after_stop += taken.batch.len();
        }
        let count = taken.batch.len() as f64;
        position.taken(&taken.batch);
        crate::metrics::in_flight(parts.context.group, count);
        // Pipelined: while this batch is applied, committed and settled,
        // the next one is taken and decoded (and settled only after its
        // own commit, so acks stay in order).
        let mut next = Taken::default();
        let outcomes = {
            let handling = apply_until_committed(&parts, &mut store, &taken.batch, shutdown);
            tokio::pin!(handling);
            loop {
                tokio::select! {
                    biased;
                    outcomes = &mut handling => break outcomes,
                    received = deliveries.next(), if taken.ended.is_none()
                        && next.ended.is_none()
                        && next.batch.len() < batching.size =>
                    {
                        next.take(received, &mut ledger);
                    }
                }
            }
        };
        crate::metrics::in_flight(parts.context.group, -count);
        let Some(outcomes) = outcomes else {
            // Stopping while the database fails this batch: nothing of it
            // is settled. It goes back to the broker, with everything
            // received after it; the rest of the prefetch goes back when
            // the channel closes.
            let returned = ledger.return_all().await;
            tracing::warn!(
                worker,
                returned,
                "stopping while the database fails a batch: its deliveries and those received after it are given back to the broker"
            );
            break Ok(());
        };
        settle::settle(&parts, retries, &mut ledger, &taken, &outcomes, shutdown).await;
        position.applied(&taken.batch, &outcomes);
        store.report(&mut position, false).await;
        if let Some(ended) = taken.ended {
            // Stopping: everything the broker sent has been finished.
            break stream_ended(ended, draining, channel, parts.queue);
        }
        ahead = Some(next);
    };
    if ledger.outstanding() > 0 && channel.connected() {
        let returned = ledger.return_all().await;
        tracing::info!(
            worker,
            returned,
            "stopping: deliveries not applied are given back to the broker"
        );
    }
    store.report(&mut position, true).await;
    tracing::info!(worker, finished_after_stop, "worker stopped");
    result
}

/// Asks the broker to stop sending; false when it did not confirm in time.
async fn stop_deliveries(channel: &impl Channel, worker: &str) -> bool {
    if !channel.stop_deliveries().await {
        tracing::warn!(
            worker,
            "stopping: the broker did not confirm the cancel in time"
        );
        return false;
    }
    tracing::info!(worker, "stopping: finishing what was received");
    true
}

/// Takes what arrives until the batch is full or the linger has passed
/// since its first delivery arrived; a stop request ends the wait.
async fn linger<A, D>(
    deliveries: &mut D,
    taken: &mut Taken,
    ledger: &mut Ledger<A>,
    batching: Batching,
    shutdown: &CancellationToken,
) where
    A: Acknowledge,
    D: Stream<Item = Result<Received<A>, RuntimeError>> + Unpin,
{
    let Some(first_arrived) = taken.first_arrived else {
        return;
    };
    let deadline = first_arrived + batching.linger;
    if tokio::time::Instant::now() >= deadline {
        return;
    }
    let lingering = tokio::time::sleep_until(deadline);
    tokio::pin!(lingering);
    while taken.ended.is_none() && taken.batch.len() < batching.size {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            next = deliveries.next() => taken.take(next, ledger),
            () = &mut lingering => break,
        }
    }
}

/// Applies `batch` until it is committed, holding it while the database
/// fails: such a failure is the database's, never the events' — burn no
/// attempt, and try again after a pause that grows while it keeps failing
/// (a read-only database still answers a probe, so the probe alone would
/// not slow the retries down). Each try is bounded by the batch timeout:
/// past it the try is dropped mid-statement and its connection discarded.
/// `None` when a stop came while the batch was held: nothing of it is
/// committed, and it must be given back.
async fn apply_until_committed<S: Store>(
    parts: &Parts<'_>,
    store: &mut S,
    batch: &[Incoming],
    shutdown: &CancellationToken,
) -> Option<Vec<Outcome>> {
    let context = parts.context;
    let timeout = parts.batching.timeout;
    let mut pause = context.policy.pauses(PAUSE_FIRST, PAUSE_LONGEST);
    let outcomes = loop {
        let error = match tokio::time::timeout(timeout, store.apply(batch)).await {
            Ok(Ok(outcomes)) => break outcomes,
            Ok(Err(error)) => error,
            Err(_) => BatchError::TimedOut(timeout),
        };
        store.discard_connection();
        tracing::warn!(worker = %context.worker, %error,
            "batch not applied: the database failed or did not answer in time (not its events); holding it and trying again");
        crate::metrics::batch_held(context.group);
        parts.health.set_database_ready(false);
        if !pause_then_probe(store, context, pause.next_pause(), shutdown).await {
            return None;
        }
    };
    if !parts.health.database_ready() {
        parts.health.set_database_ready(true);
        tracing::info!(worker = %context.worker, "batch applied; database back");
    }
    Some(outcomes)
}

/// Deliveries taken for one batch, decoded as they were taken, and how the
/// stream stood after the last of them (`Some`: it ended, with the error
/// if it failed; it is not polled again). Each delivery's acker goes to
/// the [`Ledger`] the moment it is taken — the ledger alone settles — so
/// what a batch keeps is its messages and, beside each, its tag.
#[derive(Default)]
pub(super) struct Taken {
    /// The messages, in the order received (the slice a batch applies).
    pub(super) batch: Vec<Incoming>,
    /// `tags[i]` is `batch[i]`'s delivery tag; both are written only by
    /// [`Taken::push`], together.
    tags: Vec<u64>,
    ended: Option<Option<RuntimeError>>,
    /// When the first delivery was received.
    first_arrived: Option<tokio::time::Instant>,
}

impl Taken {
    fn push<A: Acknowledge>(&mut self, received: Received<A>, ledger: &mut Ledger<A>) {
        self.first_arrived
            .get_or_insert_with(tokio::time::Instant::now);
        ledger.received(received.tag, received.acker);
        self.tags.push(received.tag);
        self.batch.push(received.incoming);
    }

    /// What the stream gave next.
    fn take<A: Acknowledge>(
        &mut self,
        next: Option<Result<Received<A>, RuntimeError>>,
        ledger: &mut Ledger<A>,
    ) {
        match next {
            Some(Ok(received)) => self.push(received, ledger),
            Some(Err(error)) => self.ended = Some(Some(error)),
            None => self.ended = Some(None),
        }
    }

    /// Each message with its delivery tag, in order.
    pub(super) fn deliveries(&self) -> impl Iterator<Item = (u64, &Incoming)> {
        self.tags.iter().copied().zip(&self.batch)
    }
}

/// After the consumer stream ended: `Ok` when stopping (everything the
/// broker sent has been finished), else why the worker must stop.
fn stream_ended(
    ended: Option<RuntimeError>,
    draining: bool,
    channel: &impl Channel,
    queue: &str,
) -> Result<(), RuntimeError> {
    match ended {
        _ if draining => Ok(()),
        Some(error) => {
            tracing::warn!(queue, %error, "consumer error: the connection failed");
            Err(error)
        }
        None if channel.connected() => Err(RuntimeError::ConsumerEnded {
            queue: queue.to_owned(),
        }),
        None => Err(RuntimeError::ConnectionLost {
            queue: queue.to_owned(),
        }),
    }
}

/// Waits `pause`, then probes the database with the retry policy's backoff
/// until it answers (true) or shutdown is requested (false).
async fn pause_then_probe(
    store: &impl Store,
    context: &BatchContext,
    pause: Duration,
    shutdown: &CancellationToken,
) -> bool {
    if !Pauses::sleep(pause, shutdown).await {
        return false;
    }
    let mut pauses = context.policy.pauses(PAUSE_FIRST, PAUSE_LONGEST);
    loop {
        if !pauses.wait(shutdown).await {
            return false;
        }
        if store.responds(PROBE_PATIENCE).await {
            return true;
        }
    }
}
