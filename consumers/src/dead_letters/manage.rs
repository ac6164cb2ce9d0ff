//! Closing dead letters without a replay: resolve (handled outside),
//! purge (given up, payload deleted), and expiry of closed records.

use std::time::Duration;

use serde::Serialize;
use shared::database::on_connection;
use sqlx::{Connection, PgPool};

use super::filter::{Filter, FilterError, FilteredQuery};
use super::operations::{self, Action, Actor};

/// Why an operation on dead letters failed.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// The filter cannot be applied.
    #[error("invalid filter: {0}")]
    Filter(#[from] FilterError),
    /// The request is refused (named field, reason).
    #[error("{field}: {reason}")]
    Refused {
        /// The field at fault.
        field: String,
        /// Why.
        reason: String,
    },
    /// No such dead letter.
    #[error("no dead letter {0}")]
    NotFound(i64),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The broker failed.
    #[error("broker: {0}")]
    Broker(String),
}

/// What a resolve, purge or expiry did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Closed {
    /// The operation's id in the audit trail.
    pub operation_id: i64,
    /// Dead letters changed (or deleted).
    pub affected: i64,
    /// When nothing was changed but dead letters of another status match:
    /// which, and how to act on them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Marks the open dead letters matching `filter` resolved, in one
/// transaction that fails past `patience`.
pub async fn resolve(
    pool: &PgPool,
    filter: &Filter,
    actor: &Actor,
    patience: Duration,
) -> Result<Closed, OperationError> {
    filter.validate()?;
    filter.for_change()?;
    let filter = filter.requiring_open()?;
    close(pool, &filter, actor, Action::Resolve, patience).await
}

/// Marks the dead letters matching `filter` (open ones unless the filter
/// says otherwise; never ones already purged) purged, deleting their
/// payloads, in one transaction that fails past `patience`.
pub async fn purge(
    pool: &PgPool,
    filter: &Filter,
    actor: &Actor,
    patience: Duration,
) -> Result<Closed, OperationError> {
    filter.validate()?;
    filter.for_change()?;
    close(pool, filter, actor, Action::Purge, patience).await
}

/// Opens the resolved dead letters matching `filter` again (its status
/// must be `resolved`, or left at its default), in one transaction that
/// fails past `patience`. One whose event already has an open dead letter
/// in its group stays resolved (two open for one event would be replayed
/// twice); the note says how many.
pub async fn reopen(
    pool: &PgPool,
    filter: &Filter,
    actor: &Actor,
    patience: Duration,
) -> Result<Closed, OperationError> {
    filter.validate()?;
    let filter = match filter.status {
        super::filter::Status::Open | super::filter::Status::Resolved => Filter {
            status: super::filter::Status::Resolved,
            ..filter.clone()
        },
        other => {
            return Err(OperationError::Refused {
                field: "status".to_owned(),
                reason: format!(
                    "only resolved dead letters can be reopened, not {}",
                    other.as_str()
                ),
            });
        }
    };
    filter.for_change()?;
    close(pool, &filter, actor, Action::Reopen, patience).await
}

async fn close(
    pool: &PgPool,
    filter: &Filter,
    actor: &Actor,
    action: Action,
    patience: Duration,
) -> Result<Closed, OperationError> {
    on_connection(pool, patience, async |connection| {
        close_on(connection, filter, actor, action).await
    })
    .await
}

async fn close_on(
    connection: &mut sqlx::PgConnection,
    filter: &Filter,
    actor: &Actor,
    action: Action,
) -> Result<Closed, OperationError> {
    let mut transaction = connection.begin().await?;
    let operation_id = operations::start(
        &mut transaction,
        action,
        actor,
        &operations::filter_json(filter),
    )
    .await?;
    let (set, condition) = match action {
        Action::Resolve => ("status = 'resolved'", "status = 'open' AND"),
        Action::Reopen => ("status = 'open'", "status = 'resolved' AND"),
        _ => (
            "status = 'purged', body = ''::bytea, original_body = NULL, \
             headers = '{}'::jsonb, original_headers = NULL",
            "status <> 'purged' AND",
        ),
    };
    let mut statement = FilteredQuery::new("UPDATE dead_letters d SET ");
    statement
        .push(set)
        .push(", status_changed_at = now(), operation_id = ")
        .push_bind(operation_id)
        .push(" WHERE ")
        .push(condition);
    filter.push_condition(&mut statement);
    if action == Action::Reopen {
        statement.push(
            " AND NOT EXISTS (SELECT 1 FROM dead_letters o WHERE o.status = 'open' \
                 AND o.consumer_group = d.consumer_group \
                 AND (o.event_id = d.event_id \
                      OR (d.event_id IS NULL AND o.message_sha256 = d.message_sha256)) \
                 AND coalesce(o.previous_id, 0) = coalesce(d.previous_id, 0))",
        );
    }
    let affected = statement
        .build()
        .persistent(false)
        .execute(&mut *transaction)
        .await?
        .rows_affected() as i64;

    operations::completed(&mut transaction, operation_id, affected).await?;
    let note = if action == Action::Reopen {
        still_resolved(&mut transaction, filter).await?
    } else if affected == 0 {
        elsewhere(&mut transaction, filter, action).await?
    } else {
        None
    };
    transaction.commit().await?;
    tracing::info!(actor = %actor.0, action = ?action, operation_id, affected, "dead letters closed");
    Ok(Closed {
        operation_id,
        affected,
        note,
    })
}

/// After a reopen: the matching dead letters left resolved because their
/// event already has an open dead letter in its group.
async fn still_resolved(
    connection: &mut sqlx::PgConnection,
    filter: &Filter,
) -> Result<Option<String>, sqlx::Error> {
    let left: i64 = filter
        .query("SELECT count(*) FROM dead_letters WHERE")
        .build_query_scalar()
        .persistent(false)
        .fetch_one(&mut *connection)
        .await?;
    Ok((left > 0).then(|| {
        format!(
            "{left} stay resolved: their event already has an open dead letter in its group \
             (act on that one)"
        )
    }))
}

/// When a resolve or purge changed nothing: the dead letters of other
/// statuses the same filter matches, and the flag that reaches them (a
/// purge after a resolve matches no open one; say so, not just "0").
async fn elsewhere(
    connection: &mut sqlx::PgConnection,
    filter: &Filter,
    action: Action,
) -> Result<Option<String>, sqlx::Error> {
    let any_status = Filter {
        status: super::filter::Status::All,
        ..filter.clone()
    };
    let mut statement = any_status.query("SELECT status, count(*) FROM dead_letters WHERE");
    statement.push(" GROUP BY status ORDER BY status");
    let counts: Vec<(String, i64)> = statement
        .build_query_as()
        .persistent(false)
        .fetch_all(&mut *connection)
        .await?;
    let others: Vec<String> = counts
        .into_iter()
        .filter(|(status, _)| *status != filter.status.as_str() && *status != "purged")
        .map(|(status, count)| format!("{count} {status}"))
        .collect();
    if others.is_empty() {
        return Ok(None);
    }
    let how = match action {
        Action::Purge => {
            "purge them with --status (\"status\" in the filter), e.g. --status resolved"
        }
        Action::Reopen => "only resolved dead letters can be reopened",
        _ => "only open dead letters can be resolved",
    };
    Ok(Some(format!(
        "no {} dead letter matches, but {} do: {how}",
        filter.status.as_str(),
        others.join(", ")
    )))
}

/// Deletes replayed, resolved and purged dead letters whose status changed
/// longer than `retention` ago (open ones are never deleted), recording the
/// count when there was any; in one transaction that fails past `patience`.
pub async fn expire(
    pool: &PgPool,
    retention: Duration,
    actor: &Actor,
    patience: Duration,
) -> Result<Closed, OperationError> {
    on_connection(pool, patience, async |connection| {
        expire_on(connection, retention, actor).await
    })
    .await
}

async fn expire_on(
    connection: &mut sqlx::PgConnection,
    retention: Duration,
    actor: &Actor,
) -> Result<Closed, OperationError> {
    let mut transaction = connection.begin().await?;
    let seconds = retention.as_secs_f64();
    let affected = sqlx::query(
        "DELETE FROM dead_letters WHERE status <> 'open' \
           AND status_changed_at < now() - make_interval(secs => $1)",
    )
    .bind(seconds)
    .execute(&mut *transaction)
    .await?
    .rows_affected() as i64;
    if affected == 0 {
        return Ok(Closed {
            operation_id: 0,
            affected,
            note: None,
        });
    }
    let filter = serde_json::json!({ "status": "closed", "older_than_secs": seconds });
    let operation_id = operations::start(&mut transaction, Action::Expire, actor, &filter).await?;
    operations::completed(&mut transaction, operation_id, affected).await?;
    transaction.commit().await?;
    tracing::info!(
        operation_id,
        affected,
        "closed dead letters past their retention deleted"
    );
    Ok(Closed {
        operation_id,
        affected,
        note: None,
    })
}

/// Runs [`expire`] at start and then hourly until `shutdown` (the workers
/// do this; a failure, or a database silent past `patience`, is logged and
/// tried again at the next hour).
pub async fn expire_hourly(
    pool: PgPool,
    retention: Duration,
    patience: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3_600));
    while shutdown.run_until_cancelled(hourly.tick()).await.is_some() {
        if let Err(error) = expire(&pool, retention, &Actor::system(), patience).await {
            tracing::warn!(%error, "could not delete dead letters past their retention");
        }
    }
}
