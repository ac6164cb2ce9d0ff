//! What the runtime needs of a store, and nothing of any store: the
//! [`Handlers`] interface a binary passes in (the store's is
//! `consumers::handlers::Store`), the [`Verdict`] it gives each event, and
//! [`HandlerError`] with the [`Disposition`] that decides what happens
//! next. The runtime batches, locks, retries and dead-letters; the
//! handlers apply.

use std::fmt;

use futures_util::future::BoxFuture;
use shared::database_errors::{DatabaseFault, classify};
use shared::events::Event;
use shared::groups::ConsumerGroup;
use sqlx::PgConnection;

/// Applies a group's events to its projection. Called with a batch on a
/// connection in autocommit mode (the set-wise path: the call is its own
/// transaction, one round trip), or with one event inside a transaction's
/// savepoint (the event-by-event path, after [`Handlers::lock_ids`]'s
/// locks were taken for the whole batch).
pub trait Handlers: Send + Sync + std::fmt::Debug {
    /// Applies `events` for `group`: one verdict per event, in order,
    /// writing nothing for an event that is not [`Verdict::Applied`].
    /// `Err`: nothing was written (a raise with disposition `DeadLetter`
    /// sends the batch to the event-by-event path, which finds the event
    /// at fault).
    fn apply<'a>(
        &'a self,
        group: ConsumerGroup,
        connection: &'a mut PgConnection,
        events: &'a [&'a Event],
    ) -> BoxFuture<'a, Result<Vec<Verdict>, HandlerError>>;

    /// The advisory-lock ids of every aggregate `events` touch in `group`,
    /// ascending and distinct: the event-by-event path takes them before
    /// its first event, so batches sharing an aggregate wait for one
    /// another instead of deadlocking.
    fn lock_ids<'a>(
        &'a self,
        group: ConsumerGroup,
        connection: &'a mut PgConnection,
        events: &'a [&'a Event],
    ) -> BoxFuture<'a, Result<Vec<i64>, sqlx::Error>>;
}

/// What became of one event given to [`Handlers::apply`].
#[derive(Debug)]
pub enum Verdict {
    /// Applied and claimed.
    Applied,
    /// Processed before, or a later copy of an event in the same batch.
    Duplicate,
    /// Not applied (nothing written, not claimed): why.
    Failed(HandlerError),
}

/// What the runtime does with a failed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try again later (through a retry wait queue), up to the attempt budget.
    Retry,
    /// Record it in the dead-letter store now.
    DeadLetter,
    /// The database is unreachable: hold the batch and probe, burning no attempt.
    DatabaseOutage,
}

/// A handler failure. The variant decides what happens to the event.
#[derive(Debug)]
pub enum HandlerError {
    /// May succeed later: a dependency not seen yet (a payment before its
    /// order), stock that may still arrive.
    Transient {
        /// Stable short name (`order_unknown`).
        kind: &'static str,
        /// A sentence for people.
        message: String,
    },
    /// Will never succeed: a broken business rule.
    Permanent {
        /// Stable short name (`ship_cancelled_order`).
        kind: &'static str,
        /// A sentence for people.
        message: String,
    },
    /// The database failed; [`HandlerError::disposition`] classifies it.
    Database(sqlx::Error),
}

impl HandlerError {
    /// A transient failure.
    pub fn transient(kind: &'static str, message: impl Into<String>) -> Self {
        HandlerError::Transient {
            kind,
            message: message.into(),
        }
    }

    /// A permanent failure.
    pub fn permanent(kind: &'static str, message: impl Into<String>) -> Self {
        HandlerError::Permanent {
            kind,
            message: message.into(),
        }
    }

    /// An event of a type `group` does not handle (published straight to
    /// its queue, or a type newly routed to it): permanent, so it is
    /// dead-lettered rather than acked with no effect.
    pub fn not_handled(
        group: shared::groups::ConsumerGroup,
        event: &shared::events::Event,
    ) -> Self {
        HandlerError::permanent(
            "type_not_handled",
            format!(
                "the {group} group does not handle {:?} events",
                event.event_type().as_str()
            ),
        )
    }

    /// What to do next.
    pub fn disposition(&self) -> Disposition {
        match self {
            HandlerError::Transient { .. } => Disposition::Retry,
            HandlerError::Permanent { .. } => Disposition::DeadLetter,
            HandlerError::Database(error) => classify_database_error(error),
        }
    }

    /// Stable short name of the error kind, for headers, metrics and the store.
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Transient { kind, .. } | HandlerError::Permanent { kind, .. } => kind,
            HandlerError::Database(error) => match classify_database_error(error) {
                Disposition::Retry => "database_contention",
                Disposition::DeadLetter => "database_constraint",
                Disposition::DatabaseOutage => "database_unavailable",
            },
        }
    }
}

/// By the shared SQLSTATE table ([`shared::database_errors`]): only a data
/// exception or an integrity violation is the event's fault and
/// dead-letters it; contention is retried; everything else is an outage
/// that holds the batch and burns no attempt.
pub fn classify_database_error(error: &sqlx::Error) -> Disposition {
    match classify(error) {
        DatabaseFault::Event => Disposition::DeadLetter,
        DatabaseFault::Contention => Disposition::Retry,
        DatabaseFault::Outage => Disposition::DatabaseOutage,
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Transient { kind, message }
            | HandlerError::Permanent { kind, message } => {
                write!(f, "{kind}: {message}")
            }
            HandlerError::Database(error) => write!(f, "{}: {error}", self.kind()),
        }
    }
}

impl std::error::Error for HandlerError {}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        HandlerError::Database(error)
    }
}
