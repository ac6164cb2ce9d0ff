//! What the worker loop needs from the world, as three small interfaces:
//! the channel it consumes on ([`Channel`], with the deliveries as a
//! stream of [`Received`]), the database it applies batches to
//! ([`Store`]) and the broker it schedules retries with ([`Retries`]).
//! The production ones wrap lapin and PostgreSQL (below); the simulation
//! (`tests/it/simulation`) drives the same loop with in-memory ones that
//! fail, stall and lose connections on a seeded schedule.

use std::future::Future;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use lapin::Acker;
use lapin::options::BasicCancelOptions;
use shared::groups::ConsumerGroup;
use shared::publish::{OutgoingMessage, PublishError, Publisher};
use shared::topology::GroupQueues;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use super::super::attempts::{AttemptHistory, AttemptKey};
use super::super::batch::{BatchContext, BatchError, Outcome, process_batch};
use super::super::error::RuntimeError;
use super::super::incoming::Incoming;
use super::super::positions::Position;
use super::super::settlement::Acknowledge;

/// One delivery as the loop takes it: its tag and acker (to settle it)
/// and the message, decoded.
pub struct Received<A> {
    /// The channel's delivery tag.
    pub tag: u64,
    /// Settles this delivery.
    pub acker: A,
    /// The message.
    pub incoming: Incoming,
}

/// The consumer's channel, beyond its stream of deliveries.
pub trait Channel {
    /// How a delivery of this channel is settled.
    type Acker: Acknowledge + Send + Sync;
    /// Asks the broker to stop sending (basic.cancel); true once it
    /// confirmed, after which the stream holds what was sent, then ends.
    fn stop_deliveries(&self) -> impl Future<Output = bool> + Send;
    /// Whether the channel is still open (after the stream ended).
    fn connected(&self) -> bool;
}

/// The database a worker applies its batches to.
pub trait Store {
    /// One try of `batch`: its outcomes once committed, or why nothing of
    /// it took effect (the database's fault, never the events').
    fn apply(
        &mut self,
        batch: &[Incoming],
    ) -> impl Future<Output = Result<Vec<Outcome>, BatchError>> + Send;
    /// Forgets the connection a failed or abandoned try used.
    fn discard_connection(&mut self);
    /// Whether the database answers now (within `patience`).
    fn responds(&self, patience: Duration) -> impl Future<Output = bool> + Send;
    /// Reports how far the worker got (advisory; failures only logged).
    fn report(&mut self, position: &mut Position, force: bool) -> impl Future<Output = ()> + Send;
}

/// The broker's wait queues, where a retry is scheduled.
pub trait Retries {
    /// Publishes `incoming` to the wait queue for its next attempt, with
    /// `history`; `Ok` once the broker confirmed it.
    fn schedule(
        &self,
        incoming: &Incoming,
        history: &AttemptHistory,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// A lapin channel consuming a work queue as `consumer_tag`.
pub struct LapinChannel {
    /// The channel.
    pub channel: lapin::Channel,
    /// The consumer's tag (the worker's name).
    pub consumer_tag: String,
}

/// Longest wait for the broker's cancel-ok.
const CANCEL_PATIENCE: Duration = Duration::from_secs(5);

impl Channel for LapinChannel {
    type Acker = Acker;

    async fn stop_deliveries(&self) -> bool {
        let cancel = self.channel.basic_cancel(
            self.consumer_tag.as_str().into(),
            BasicCancelOptions::default(),
        );
        matches!(
            tokio::time::timeout(CANCEL_PATIENCE, cancel).await,
            Ok(Ok(()))
        )
    }

    fn connected(&self) -> bool {
        self.channel.status().connected()
    }
}

/// A lapin consumer's deliveries, each decoded as it is taken (its body
/// and properties moved into the [`Incoming`]; the acker kept).
/// An event `group` must not apply (misrouted, or of a type it does not
/// handle) is refused here, to be dead-lettered.
pub fn lapin_deliveries(
    consumer: lapin::Consumer,
    group: ConsumerGroup,
    max_event_bytes: usize,
    attempt_key: AttemptKey,
) -> impl Stream<Item = Result<Received<Acker>, RuntimeError>> + Unpin + Send {
    consumer.map(move |next| {
        let mut delivery = next?;
        let mut incoming = Incoming::take_from(&mut delivery, max_event_bytes, &attempt_key);
        incoming.check_route(group, !delivery.exchange.as_str().is_empty());
        Ok(Received {
            tag: delivery.delivery_tag,
            acker: delivery.acker,
            incoming,
        })
    })
}

/// PostgreSQL: the worker's own connection, taken from the pool on first
/// use and kept between batches, so a batch costs no acquire and no
/// release round trip.
pub struct PostgresStore {
    /// The pool.
    pub pool: PgPool,
    /// The group, worker and policy the batches are applied for.
    pub context: BatchContext,
    held: Option<PoolConnection<Postgres>>,
}

impl PostgresStore {
    /// A store on `pool` for `context`, holding no connection yet.
    pub fn new(pool: PgPool, context: BatchContext) -> Self {
        Self {
            pool,
            context,
            held: None,
        }
    }

    async fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        let connection = match self.held.take() {
            Some(connection) => connection,
            None => self.pool.acquire().await?,
        };
        Ok(&mut **self.held.insert(connection))
    }
}

impl Store for PostgresStore {
    async fn apply(&mut self, batch: &[Incoming]) -> Result<Vec<Outcome>, BatchError> {
        let context = self.context.clone();
        let connection = self.connection().await?;
        Ok(process_batch(connection, &context, batch).await?.outcomes)
    }

    fn discard_connection(&mut self) {
        // It may be broken, mid-statement, or its session stuck in a state
        // the failure came from (read-only after a failover): never give it
        // back to the pool. Its backend, checking for us every second,
        // ends a statement we gave up on.
        if let Some(connection) = self.held.take() {
            drop(connection.detach());
        }
    }

    async fn responds(&self, patience: Duration) -> bool {
        shared::database::responds(&self.pool, patience).await
    }

    async fn report(&mut self, position: &mut Position, force: bool) {
        let group = self.context.group;
        position
            .report(group, self.held.as_deref_mut(), force)
            .await;
    }
}

/// The group's wait queues, published to through the default exchange.
pub struct WaitQueues {
    /// The publisher (confirm mode).
    pub publisher: Publisher,
    /// The group's queue names.
    pub queues: GroupQueues,
    /// The group, worker and policy (delays, signing key).
    pub context: BatchContext,
}

impl Retries for WaitQueues {
    /// The jittered delay is the message's TTL; the signed history goes in
    /// its headers.
    async fn schedule(
        &self,
        incoming: &Incoming,
        history: &AttemptHistory,
    ) -> Result<(), PublishError> {
        let failed_attempts = history.records.len() as u32;
        let policy = &self.context.policy;
        let delay = policy
            .delay_after_attempt(failed_attempts)
            .unwrap_or(policy.max_delay);
        let retry = &self.queues.retry;
        let index = (failed_attempts as usize).saturating_sub(1);
        let Some(wait_queue) = retry.get(index).or(retry.last()) else {
            return Err(PublishError::Unroutable {
                routing_key: String::new(),
                reply_text: "the group has no wait queues (an attempt budget of one)".to_owned(),
            });
        };
        let mut headers = incoming.properties.headers().clone().unwrap_or_default();
        history.write_to(&mut headers, &incoming.body, &self.context.attempt_key);
        let properties = incoming
            .properties
            .clone()
            .with_headers(headers)
            .with_expiration(delay.as_millis().to_string().into());
        self.publisher
            .publish_message(OutgoingMessage {
                routing_key: wait_queue.clone(),
                exchange: Some(String::new()),
                body: incoming.body.clone(),
                properties,
            })
            .await
    }
}
