//! The set-wise path: the whole batch in one call of the group's function,
//! which applies what it can and reports the rest; failures then get their
//! retry or, in one more transaction, their dead letter.

use shared::events::Event;
use sqlx::{Connection, PgConnection};

use super::failures::{failed_outcome, retry};
use super::recording::record_metrics;
use super::{Applied, BatchContext, BatchError, BatchPath, Outcome};
use crate::handler::{Disposition, HandlerError, Verdict, classify_database_error};
use crate::incoming::Incoming;
use crate::metrics::BatchTiming;

/// The set-wise path; `None` sends the batch to the isolating path.
pub(super) async fn apply(
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
pub(super) fn outage(error: HandlerError) -> Result<HandlerError, BatchError> {
    match error {
        HandlerError::Database(error)
            if classify_database_error(&error) == Disposition::DatabaseOutage =>
        {
            Err(BatchError::DatabaseUnavailable(error))
        }
        other => Ok(other),
    }
}
