//! One batch: applied set-wise in one call of the group's database function
//! (a failing event writes nothing and its neighbours commit), or, for
//! poison or when that call raises, in one transaction with each event in
//! its own savepoint, so a failure is isolated and classified.

use chrono::Utc;
use shared::events::Event;
use shared::groups::ConsumerGroup;
use shared::retry::RetryPolicy;
use sqlx::{Connection, PgConnection};

use super::attempts::{AttemptHistory, AttemptRecord};
use super::dead_letter_store;
use super::handler::{Disposition, HandlerError, Handlers, Verdict, classify_database_error};
use super::incoming::Incoming;
pub use crate::metrics::BatchPath;
use crate::metrics::BatchTiming;

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
    /// The database did not finish the batch within the worker's batch
    /// deadline (a lock held elsewhere, a server or network that stopped
    /// answering): what it committed, if anything, is claimed, so trying
    /// again changes nothing twice.
    #[error("the database did not finish the batch within {} ms", .0.as_millis())]
    TimedOut(std::time::Duration),
}

impl From<sqlx::Error> for BatchError {
    fn from(error: sqlx::Error) -> Self {
        match classify_database_error(&error) {
            Disposition::DatabaseOutage => BatchError::DatabaseUnavailable(error),
            Disposition::Retry | Disposition::DeadLetter => BatchError::Database(error),
        }
    }
}

/// Who processes, for which group, with which handlers, under which
/// retry policy.
#[derive(Debug, Clone)]
pub struct BatchContext {
    /// The consumer group.
    pub group: ConsumerGroup,
    /// What applies its events.
    pub handlers: std::sync::Arc<dyn Handlers>,
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

/// Applies `batch` and returns one outcome per message, in order, with the
/// path taken. On `Err` nothing was committed that a redelivery would not
/// find claimed, and every message must be tried again.
///
/// Set-wise first: the whole batch in one call of the group's function,
/// which applies what it can and reports the rest (duplicates, failures
/// that wrote nothing); failures get their retry or dead letter. When the
/// batch holds poison or the call raised, it is redone with one savepoint
/// per event, which isolates and classifies every failure.
pub async fn process_batch(
    connection: &mut PgConnection,
    context: &BatchContext,
    batch: &[Incoming],
) -> Result<Applied, BatchError> {
    if let Some(applied) = process_batch_set_wise(connection, context, batch).await? {
        return Ok(applied);
    }
    process_batch_isolating_failures(connection, context, batch).await
}

/// Applies `batch` with a savepoint per event only, never set-wise: the
/// reference the set-wise path is compared with (convergence tests), and
/// the path [`process_batch`] falls back to.
pub async fn process_batch_event_by_event(
    connection: &mut PgConnection,
    context: &BatchContext,
    batch: &[Incoming],
) -> Result<Applied, BatchError> {
    process_batch_isolating_failures(connection, context, batch).await
}

/// The set-wise path; `None` sends the batch to the isolating path.
async fn process_batch_set_wise(
    connection: &mut PgConnection,
    context: &BatchContext,
    batch: &[Incoming],
) -> Result<Option<Applied>, BatchError> {
    let events: Vec<&Event> = batch
        .iter()
        .filter_map(|incoming| incoming.event.as_ref().ok())
        .collect();
    if events.len() < batch.len() {
        return Ok(None); // poison: the isolating path records it
    }
    let started = std::time::Instant::now();
    let verdicts = match context
        .handlers
        .apply(context.group, &mut *connection, &events)
        .await
    {
        Ok(verdicts) => verdicts,
        Err(error) => {
            outage(error)?;
            // It raised (the isolating path finds the event at fault), or
            // contention (the isolating path takes its time).
            return Ok(None);
        }
    };
    let handling = started.elapsed();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut dead = Vec::new();
    for (index, verdict) in verdicts.into_iter().enumerate() {
        outcomes.push(match verdict {
            Verdict::Applied => Outcome::Applied,
            Verdict::Duplicate => Outcome::Duplicate,
            Verdict::Failed(error) => match retry(context, &batch[index], events[index], &error) {
                Some(retry) => retry,
                None => {
                    dead.push((index, error));
                    Outcome::DeadLettered
                }
            },
        });
    }
    let mut commit = None;
    if !dead.is_empty() {
        let recording = std::time::Instant::now();
        let mut transaction = connection.begin().await?;
        for (index, error) in &dead {
            outcomes[*index] = failed_outcome(
                &mut transaction,
                context,
                &batch[*index],
                events[*index],
                error,
            )
            .await?;
        }
        transaction.commit().await?;
        commit = Some(recording.elapsed());
    }
    let path = BatchPath::SetWise;
    record_metrics(
        context.group,
        batch,
        &outcomes,
        BatchTiming {
            path,
            handling,
            commit,
        },
    );
    Ok(Some(Applied { outcomes, path }))
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

/// The isolating path: each event in its own savepoint.
async fn process_batch_isolating_failures(
    connection: &mut PgConnection,
    context: &BatchContext,
    batch: &[Incoming],
) -> Result<Applied, BatchError> {
    let started = std::time::Instant::now();
    let mut transaction = connection.begin().await?;
    lock_aggregates(&mut transaction, context, batch).await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for incoming in batch {
        let outcome = match &incoming.event {
            Ok(event) => process_event(&mut transaction, context, incoming, event).await?,
            Err(refusal) => {
                let history =
                    incoming
                        .history
                        .with(failure(context, refusal.code(), refusal.to_string()));
                let (event_id, event_type) = incoming.identity();
                tracing::warn!(group = %context.group, message_id = ?incoming.message_id(),
                    ?event_id, ?event_type, routing_key = %incoming.routing_key,
                    kind = refusal.kind(), error = %refusal, "message refused and dead-lettered");
                dead_letter_store::record(
                    &mut transaction,
                    context.group,
                    incoming,
                    &history,
                    &refusal.to_string(),
                    refusal.kind(),
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
    context: &BatchContext,
    batch: &[Incoming],
) -> Result<(), BatchError> {
    let events: Vec<&Event> = batch
        .iter()
        .filter_map(|incoming| incoming.event.as_ref().ok())
        .collect();
    let ids = context
        .handlers
        .lock_ids(context.group, connection, &events)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock(id) FROM UNNEST($1::bigint[]) WITH ORDINALITY AS t(id, n) ORDER BY n")
        .bind(&ids)
        .execute(connection)
        .await?;
    Ok(())
}

/// One event in its own savepoint, through the group's function (a batch
/// of one): the same rule, claim and verdicts as the set-wise path, and a
/// raise is this event's alone.
async fn process_event(
    connection: &mut PgConnection,
    context: &BatchContext,
    incoming: &Incoming,
    event: &Event,
) -> Result<Outcome, BatchError> {
    sqlx::query("SAVEPOINT event")
        .execute(&mut *connection)
        .await?;
    let verdict = context
        .handlers
        .apply(context.group, &mut *connection, &[event])
        .await
        .and_then(|verdicts| {
            verdicts.into_iter().next().ok_or_else(|| {
                HandlerError::transient("set_wise_mismatch", "no verdict for the event")
            })
        });
    let outcome = match verdict {
        Ok(Verdict::Applied) => Outcome::Applied,
        Ok(Verdict::Duplicate) => Outcome::Duplicate,
        Ok(Verdict::Failed(error)) | Err(error) => {
            sqlx::query("ROLLBACK TO SAVEPOINT event")
                .execute(&mut *connection)
                .await?;
            let error = outage(error)?;
            return failed_outcome(connection, context, incoming, event, &error).await;
        }
    };
    sqlx::query("RELEASE SAVEPOINT event")
        .execute(&mut *connection)
        .await?;
    Ok(outcome)
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
    if let Some(retry) = retry(context, incoming, event, error) {
        return Ok(retry);
    }
    let history = incoming
        .history
        .with(failure(context, error.kind(), error.to_string()));
    let attempt = incoming.history.current_attempt();
    tracing::warn!(event_id = %event.id, event_type = %event.event_type(), group = %context.group,
        attempt, %error, "event dead-lettered");
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

/// `Some(Retry)` when a failed event gets another attempt: a transient
/// failure with attempts left.
fn retry(
    context: &BatchContext,
    incoming: &Incoming,
    event: &Event,
    error: &HandlerError,
) -> Option<Outcome> {
    let attempt = incoming.history.current_attempt();
    if error.disposition() != Disposition::Retry || attempt >= context.policy.max_attempts {
        return None;
    }
    tracing::info!(event_id = %event.id, event_type = %event.event_type(), group = %context.group,
        attempt, %error, "event failed transiently; will retry");
    let history = incoming
        .history
        .with(failure(context, error.kind(), error.to_string()));
    Some(Outcome::Retry(history))
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
    let events = batch.iter().zip(outcomes).map(|(incoming, outcome)| {
        let event_type = incoming
            .event()
            .map_or("poison", |event| event.event_type().as_str());
        let name = match outcome {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Retry(_) => "retried",
            Outcome::DeadLettered => "dead_lettered",
        };
        let lag = match (outcome, &incoming.event) {
            (Outcome::Applied, Ok(event)) => Some((now - event.time).to_std().unwrap_or_default()),
            _ => None,
        };
        (event_type, name, lag)
    });
    crate::metrics::batch_events(group, events);
}

fn failure(context: &BatchContext, kind: &str, message: String) -> AttemptRecord {
    AttemptRecord {
        at: Utc::now(),
        worker: context.worker.clone(),
        kind: kind.to_owned(),
        message,
    }
}
