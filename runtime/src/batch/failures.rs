//! What a failed event becomes once its effects are undone: a retry while
//! the policy's attempts remain for a transient failure, otherwise a
//! record in the dead-letter store.

use chrono::Utc;
use shared::events::Event;
use sqlx::PgConnection;

use super::{BatchContext, BatchError, Outcome};
use crate::attempts::AttemptRecord;
use crate::dead_letter_store;
use crate::handler::{Disposition, HandlerError};
use crate::incoming::Incoming;

/// What becomes of an event whose handler failed, once its effects are
/// undone: a retry while attempts remain for a transient failure, otherwise
/// a record in the dead-letter store (written on `connection`).
pub(super) async fn failed_outcome(
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
pub(super) fn retry(
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

pub(super) fn failure(context: &BatchContext, kind: &str, message: String) -> AttemptRecord {
    AttemptRecord {
        at: Utc::now(),
        worker: context.worker.clone(),
        kind: kind.to_owned(),
        message,
    }
}
