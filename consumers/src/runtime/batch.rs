//! One batch, one transaction: each event in its own savepoint, so a failing
//! event is isolated from its neighbours, which still commit.

use std::collections::HashSet;

use chrono::Utc;
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use shared::retry::RetryPolicy;
use sqlx::{Connection, PgConnection};

use super::attempts::{AttemptHistory, AttemptRecord};
use super::dead_letter_store;
use super::incoming::Incoming;
use crate::handlers::{self, Disposition, HandlerError, classify_database_error};

/// What happened to one event of a committed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its effects are committed.
    Applied,
    /// It had been applied before; nothing changed.
    Duplicate,
    /// Failed transiently; send it to the retry path with this history.
    Retry(AttemptHistory),
    /// Recorded in the dead-letter store (in the same transaction).
    DeadLettered,
}

/// Why a batch was not committed. Nothing of it took effect, and it is not
/// the events' fault: the worker holds the batch and tries it again.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// PostgreSQL is unreachable or cannot work (read-only, out of
    /// resources, shutting down…): hold the batch, probe, try again.
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(#[source] sqlx::Error),
    /// A runtime statement (claim, savepoint, dead-letter record) lost a
    /// race or failed otherwise: hold the batch, back off, try again.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for BatchError {
    fn from(error: sqlx::Error) -> Self {
        match classify_database_error(&error) {
            Disposition::DatabaseOutage => BatchError::DatabaseUnavailable(error),
            Disposition::Retry | Disposition::DeadLetter => BatchError::Database(error),
        }
    }
}

/// How a committed batch was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchPath {
    /// All `order.placed`: one autocommit statement.
    OneStatement,
    /// One transaction, no savepoints (the optimistic path).
    Transaction,
    /// Redone with a savepoint per event, because something failed.
    EventByEvent,
}

impl BatchPath {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchPath::OneStatement => "one_statement",
            BatchPath::Transaction => "transaction",
            BatchPath::EventByEvent => "event_by_event",
        }
    }
}

/// How long a committed batch took, and along which path.
#[derive(Debug, Clone, Copy)]
pub struct BatchTiming {
    /// The path.
    pub path: BatchPath,
    /// Applying (including the commit for [`BatchPath::OneStatement`]).
    pub handling: std::time::Duration,
    /// The commit, when it was a step of its own.
    pub commit: Option<std::time::Duration>,
}

impl BatchTiming {
    fn one_statement(handling: std::time::Duration) -> Self {
        Self {
            path: BatchPath::OneStatement,
            handling,
            commit: None,
        }
    }
}

/// Who processes, for which group, under which retry policy.
#[derive(Debug, Clone)]
pub struct BatchContext {
    /// The consumer group.
    pub group: ConsumerGroup,
    /// The worker's name (recorded in attempt logs).
    pub worker: String,
    /// Attempt budget.
    pub policy: RetryPolicy,
    /// Signs and checks attempt histories.
    pub attempt_key: super::attempts::AttemptKey,
}

/// A committed batch: one outcome per message, in order, and the path it
/// took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What happened to each message.
    pub outcomes: Vec<Outcome>,
    /// How the batch was applied.
    pub path: BatchPath,
}

/// Applies `batch` in one transaction and returns one outcome per message,
/// in order, with the path taken. On `Err` nothing was committed and every
/// message must be tried again.
///
/// Optimistic first: one set-based dedup insert, runs of `order.placed`
/// applied set-wise, the other events without savepoints. When one event's
/// handler fails, that transaction is rolled back and the batch is tried
/// again without it (the failed event then only gets its retry or dead
/// letter), up to [`MAX_EXCLUDED`] events. Beyond that, or when a set-wise
/// run or poison fails, the batch is redone with one savepoint per event,
/// which isolates and classifies every failure.
pub async fn process_batch(
    connection: &mut PgConnection,
    context: &BatchContext,
    batch: &[Incoming],
) -> Result<Applied, BatchError> {
    let mut excluded: Vec<(usize, HandlerError)> = Vec::new();
    loop {
        match process_batch_optimistically(connection, context, batch, &excluded).await? {
            Attempt::Committed(applied) => return Ok(applied),
            Attempt::EventFailed(index, error) if excluded.len() < MAX_EXCLUDED => {
                excluded.push((index, error));
            }
            Attempt::EventFailed(..) | Attempt::NotSetWise => break,
        }
    }
    process_batch_isolating_failures(connection, context, batch).await
}

/// Most failed events taken out of a batch before it is redone event by
/// event instead (each exclusion costs one rolled-back attempt).
pub const MAX_EXCLUDED: usize = 4;

/// How an optimistic attempt ended. Unless committed, nothing was kept.
enum Attempt {
    Committed(Applied),
    /// The handler of the event at this index failed.
    EventFailed(usize, HandlerError),
    /// Poison, or a set-wise run that cannot be pinned on one event.
    NotSetWise,
}

/// The fast path, without the events of `excluded` (their failures are
/// recorded as retries or dead letters in the same transaction).
async fn process_batch_optimistically(
    connection: &mut PgConnection,
    context: &BatchContext,
    batch: &[Incoming],
    excluded: &[(usize, HandlerError)],
) -> Result<Attempt, BatchError> {
    let events: Vec<&Event> = batch
        .iter()
        .filter_map(|incoming| incoming.event.as_ref().ok())
        .collect();
    if events.len() < batch.len() {
        return Ok(Attempt::NotSetWise); // poison: the isolating path records it
    }
    let is_excluded = |index: usize| excluded.iter().any(|(excluded, _)| *excluded == index);
    let started = std::time::Instant::now();
    if events
        .iter()
        .all(|event| matches!(event.payload, EventPayload::OrderPlaced(_)))
    {
        // One statement, its own transaction: lock, claim, apply, commit.
        let lock_ids = known_lock_ids(context.group, &events);
        let Some(mut claimed) =
            apply_run(&mut *connection, context.group, &lock_ids, &events).await?
        else {
            return Ok(Attempt::NotSetWise);
        };
        let outcomes = events
            .iter()
            .map(|event| applied_or_duplicate(&mut claimed, event))
            .collect::<Vec<_>>();
        let timing = BatchTiming::one_statement(started.elapsed());
        record_metrics(context.group, batch, &outcomes, timing);
        return Ok(Attempt::Committed(Applied {
            outcomes,
            path: BatchPath::OneStatement,
        }));
    }
    let mut transaction = connection.begin().await?;
    lock_aggregates(&mut transaction, context.group, batch).await?;
    // Claim every event but `order.placed`, which its run's step claims.
    let mut others: Vec<(uuid::Uuid, &str)> = events
        .iter()
        .enumerate()
        .filter(|(index, event)| {
            !matches!(event.payload, EventPayload::OrderPlaced(_)) && !is_excluded(*index)
        })
        .map(|(_, event)| (event.id, event.event_type().as_str()))
        .collect();
    others.sort_unstable();
    let (ids, types): (Vec<uuid::Uuid>, Vec<&str>) = others.into_iter().unzip();
    let mut fresh: HashSet<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO processed_events (consumer_group, event_id, event_type) \
         SELECT $1, * FROM UNNEST($2::uuid[], $3::text[]) ON CONFLICT DO NOTHING RETURNING event_id",
    )
    .bind(context.group.as_str())
    .bind(&ids)
    .bind(&types)
    .fetch_all(&mut *transaction)
    .await?
    .into_iter()
    .collect();
    let mut outcomes = vec![Outcome::Duplicate; batch.len()];
    // Consecutive `order.placed` events go in one set-based step; anything
    // else is applied one by one, in order, after the run before it.
    let mut run: Vec<usize> = Vec::new();
    // One step past the last event, to flush a run that ends the batch.
    for index in 0..=events.len() {
        let event = events.get(index);
        if let Some(event) = event
            && matches!(event.payload, EventPayload::OrderPlaced(_))
        {
            run.push(index);
            continue;
        }
        let flushed = flush_run(
            &mut transaction,
            context.group,
            &events,
            &mut run,
            &mut outcomes,
        )
        .await?;
        if !flushed {
            return Ok(Attempt::NotSetWise);
        }
        let Some(event) = event else { break };
        // `remove`: a second copy of an id within the batch is a duplicate too.
        if is_excluded(index) || !fresh.remove(&event.id) {
            continue;
        }
        match handlers::apply(context.group, &mut transaction, event).await {
            Ok(()) => outcomes[index] = Outcome::Applied,
            Err(error) => {
                return match outage(error) {
                    Ok(error) => Ok(Attempt::EventFailed(index, error)),
                    Err(outage) => Err(outage),
                };
            }
        }
    }
    for (index, error) in excluded {
        outcomes[*index] = failed_outcome(
            &mut transaction,
            context,
            &batch[*index],
            events[*index],
            error,
        )
        .await?;
    }
    let path = BatchPath::Transaction;
    commit_and_record(transaction, context.group, batch, &outcomes, started, path).await?;
    Ok(Attempt::Committed(Applied { outcomes, path }))
}

/// `Err` when `error` means the database is unreachable; the error otherwise.
fn outage(error: HandlerError) -> Result<HandlerError, BatchError> {
    match error {
        HandlerError::Database(error)
            if classify_database_error(&error) == Disposition::DatabaseOutage =>
        {
            Err(BatchError::DatabaseUnavailable(error))
        }
        other => Ok(other),
    }
}

/// `Applied` for the first copy of a claimed id, `Duplicate` otherwise.
fn applied_or_duplicate(claimed: &mut HashSet<uuid::Uuid>, event: &Event) -> Outcome {
    if claimed.remove(&event.id) {
        Outcome::Applied
    } else {
        Outcome::Duplicate
    }
}

/// The advisory-lock ids of events whose aggregates need no lookup, ascending.
fn known_lock_ids(group: ConsumerGroup, events: &[&Event]) -> Vec<i64> {
    let keys = events
        .iter()
        .filter_map(|event| handlers::known_lock_keys(group, event))
        .flatten();
    lock_ids(group, keys)
}

/// The advisory-lock ids of `keys`, ascending and distinct: the one order
/// every batch takes its locks in.
fn lock_ids(group: ConsumerGroup, keys: impl IntoIterator<Item = String>) -> Vec<i64> {
    let mut ids: Vec<i64> = keys
        .into_iter()
        .map(|key| handlers::advisory_lock_id(group, &key))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Claims and applies a run of `order.placed` events set-wise; `None` sends
/// the batch to the isolating path.
async fn apply_run<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    group: ConsumerGroup,
    lock_ids: &[i64],
    events: &[&Event],
) -> Result<Option<HashSet<uuid::Uuid>>, BatchError> {
    match handlers::apply_orders_placed(group, executor, lock_ids, events).await {
        Ok(claimed) => Ok(claimed),
        Err(error) => outage(error).map(|_| None),
    }
}

/// Applies the pending run (indices into `events`) and sets its outcomes;
/// `false` sends the batch to the isolating path.
async fn flush_run(
    connection: &mut PgConnection,
    group: ConsumerGroup,
    events: &[&Event],
    run: &mut Vec<usize>,
    outcomes: &mut [Outcome],
) -> Result<bool, BatchError> {
    if run.is_empty() {
        return Ok(true);
    }
    let members: Vec<&Event> = run.iter().map(|&index| events[index]).collect();
    // The batch's locks are already held.
    let Some(mut claimed) = apply_run(&mut *connection, group, &[], &members).await? else {
        return Ok(false);
    };
    for index in run.drain(..) {
        outcomes[index] = applied_or_duplicate(&mut claimed, events[index]);
    }
    Ok(true)
}

/// The isolating path: each event in its own savepoint.
async fn process_batch_isolating_failures(
    connection: &mut PgConnection,
    context: &BatchContext,
    batch: &[Incoming],
) -> Result<Applied, BatchError> {
    let started = std::time::Instant::now();
    let mut transaction = connection.begin().await?;
    lock_aggregates(&mut transaction, context.group, batch).await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for incoming in batch {
        let outcome = match &incoming.event {
            Ok(event) => process_event(&mut transaction, context, incoming, event).await?,
            Err(poison) => {
                let history =
                    incoming
                        .history
                        .with(failure(context, poison.code(), poison.to_string()));
                tracing::warn!(group = %context.group, message_id = ?incoming.message_id, error = %poison, "poison message dead-lettered");
                dead_letter_store::record(
                    &mut transaction,
                    context.group,
                    incoming,
                    &history,
                    &poison.to_string(),
                    "poison",
                )
                .await?;
                Outcome::DeadLettered
            }
        };
        outcomes.push(outcome);
    }
    let path = BatchPath::EventByEvent;
    commit_and_record(transaction, context.group, batch, &outcomes, started, path).await?;
    Ok(Applied { outcomes, path })
}

/// Takes a transaction-scoped advisory lock on every aggregate the batch
/// touches, in ascending id order: two batches sharing an aggregate then
/// wait for one another instead of deadlocking on rows locked in different orders.
async fn lock_aggregates(
    connection: &mut PgConnection,
    group: ConsumerGroup,
    batch: &[Incoming],
) -> Result<(), BatchError> {
    let events: Vec<&Event> = batch
        .iter()
        .filter_map(|incoming| incoming.event.as_ref().ok())
        .collect();
    let ids = lock_ids(
        group,
        handlers::lock_keys(group, connection, &events).await?,
    );
    sqlx::query("SELECT pg_advisory_xact_lock(id) FROM UNNEST($1::bigint[]) WITH ORDINALITY AS t(id, n) ORDER BY n")
        .bind(&ids)
        .execute(connection)
        .await?;
    Ok(())
}

async fn process_event(
    connection: &mut PgConnection,
    context: &BatchContext,
    incoming: &Incoming,
    event: &Event,
) -> Result<Outcome, BatchError> {
    sqlx::query("SAVEPOINT event")
        .execute(&mut *connection)
        .await?;
    let first_time = sqlx::query(
        "INSERT INTO processed_events (consumer_group, event_id, event_type) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(context.group.as_str())
    .bind(event.id)
    .bind(event.event_type().as_str())
    .execute(&mut *connection)
    .await?
    .rows_affected()
        == 1;
    if !first_time {
        sqlx::query("RELEASE SAVEPOINT event")
            .execute(&mut *connection)
            .await?;
        return Ok(Outcome::Duplicate);
    }
    let error = match handlers::apply(context.group, connection, event).await {
        Ok(()) => {
            sqlx::query("RELEASE SAVEPOINT event")
                .execute(&mut *connection)
                .await?;
            return Ok(Outcome::Applied);
        }
        Err(error) => error,
    };
    sqlx::query("ROLLBACK TO SAVEPOINT event")
        .execute(&mut *connection)
        .await?;
    let error = outage(error)?;
    failed_outcome(connection, context, incoming, event, &error).await
}

/// What becomes of an event whose handler failed, once its effects are
/// undone: a retry while attempts remain for a transient failure, otherwise
/// a record in the dead-letter store (written on `connection`).
async fn failed_outcome(
    connection: &mut PgConnection,
    context: &BatchContext,
    incoming: &Incoming,
    event: &Event,
    error: &HandlerError,
) -> Result<Outcome, BatchError> {
    let disposition = error.disposition();
    let history = incoming
        .history
        .with(failure(context, error.kind(), error.to_string()));
    let attempt = incoming.history.current_attempt();
    let span = tracing::info_span!("event", event_id = %event.id, event_type = %event.event_type(), group = %context.group);
    let _entered = span.enter();
    if disposition == Disposition::Retry && attempt < context.policy.max_attempts {
        tracing::info!(attempt, %error, "event failed transiently; will retry");
        return Ok(Outcome::Retry(history));
    }
    tracing::warn!(attempt, %error, "event dead-lettered");
    dead_letter_store::record(
        connection,
        context.group,
        incoming,
        &history,
        &error.to_string(),
        error.kind(),
    )
    .await?;
    Ok(Outcome::DeadLettered)
}

/// Commits, then records the batch's metrics (apply time = until the commit).
async fn commit_and_record(
    transaction: sqlx::Transaction<'_, sqlx::Postgres>,
    group: ConsumerGroup,
    batch: &[Incoming],
    outcomes: &[Outcome],
    started: std::time::Instant,
    path: BatchPath,
) -> Result<(), BatchError> {
    let handling = started.elapsed();
    transaction.commit().await?;
    let timing = BatchTiming {
        path,
        handling,
        commit: Some(started.elapsed() - handling),
    };
    record_metrics(group, batch, outcomes, timing);
    Ok(())
}

fn record_metrics(
    group: ConsumerGroup,
    batch: &[Incoming],
    outcomes: &[Outcome],
    timing: BatchTiming,
) {
    crate::metrics::batch_committed(group, batch.len(), timing);
    let now = Utc::now();
    for (incoming, outcome) in batch.iter().zip(outcomes) {
        let event_type = incoming
            .event
            .as_ref()
            .map_or("poison", |event| event.event_type().as_str());
        let name = match outcome {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Retry(_) => "retried",
            Outcome::DeadLettered => "dead_lettered",
        };
        crate::metrics::event_outcome(group, event_type, name);
        if let (Outcome::Applied, Ok(event)) = (outcome, &incoming.event) {
            crate::metrics::lag(group, (now - event.time).to_std().unwrap_or_default());
        }
    }
}

fn failure(context: &BatchContext, kind: &str, message: String) -> AttemptRecord {
    AttemptRecord {
        at: Utc::now(),
        worker: context.worker.clone(),
        kind: kind.to_owned(),
        message,
    }
}
