//! A batch's commit and its metrics: counts per outcome and type, the
//! publish-to-commit lag of every applied event, the path and its timing.

use chrono::Utc;
use shared::groups::ConsumerGroup;

use super::{BatchError, BatchPath, Outcome};
use crate::incoming::Incoming;
use crate::metrics::BatchTiming;

/// Commits, then records the batch's metrics (apply time = until the commit).
pub(super) async fn commit_and_record(
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

pub(super) fn record_metrics(
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
