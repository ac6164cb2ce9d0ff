//! One batch: applied set-wise in one call of the group's database function
//! (a failing event writes nothing and its neighbours commit), or, for
//! poison or when that call raises, in one transaction with each event in
//! its own savepoint, so a failure is isolated and classified.
//!
//! - [`set_wise`]: the whole batch in one call.
//! - [`isolating`]: the aggregates locked in order, then each event in its
//!   own savepoint.
//! - [`failures`]: what a failed event becomes (a retry while attempts
//!   remain, else a dead letter).
//! - [`recording`]: the commit and the batch's metrics.

mod failures;
mod isolating;
mod recording;
mod set_wise;

use shared::groups::ConsumerGroup;
use shared::retry::RetryPolicy;
use sqlx::PgConnection;

use super::attempts::AttemptHistory;
use super::handler::{Disposition, Handlers, classify_database_error};
use super::incoming::Incoming;
pub use crate::metrics::BatchPath;

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
    if let Some(applied) = set_wise::apply(connection, context, batch).await? {
        return Ok(applied);
    }
    isolating::apply(connection, context, batch).await
}

/// Applies `batch` with a savepoint per event only, never set-wise: the
/// reference the set-wise path is compared with (convergence tests), and
/// the path [`process_batch`] falls back to.
pub async fn process_batch_event_by_event(
    connection: &mut PgConnection,
    context: &BatchContext,
    batch: &[Incoming],
) -> Result<Applied, BatchError> {
    isolating::apply(connection, context, batch).await
}
