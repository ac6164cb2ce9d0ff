//! The isolating path, for a batch holding poison or whose set-wise call
//! raised: one transaction, the batch's aggregates locked in ascending
//! order, then each event in its own savepoint through the group's
//! function called with that event alone, so a failure (or a raise) is
//! that event's and is classified.

use shared::events::Event;
use sqlx::{Connection, PgConnection};

use super::failures::{failed_outcome, failure};
use super::recording::commit_and_record;
use super::set_wise::outage;
use super::{Applied, BatchContext, BatchError, BatchPath, Outcome};
use crate::dead_letter_store;
use crate::handler::{HandlerError, Verdict};
use crate::incoming::Incoming;

/// The isolating path: each event in its own savepoint.
pub(super) async fn apply(
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
