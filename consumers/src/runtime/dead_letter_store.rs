//! Writing to the PostgreSQL dead-letter store.

use chrono::Utc;
use shared::groups::ConsumerGroup;
use sqlx::PgConnection;

use super::attempts::AttemptHistory;
use super::incoming::{Incoming, without_nul};

/// Records `incoming` as dead for `group`, with its whole attempt history
/// (which already holds the final failure). A second record of the same
/// event for the same group is ignored, and so is a second record of the
/// same poison message (same routing key, message id and body).
pub async fn record(
    connection: &mut PgConnection,
    group: ConsumerGroup,
    incoming: &Incoming,
    history: &AttemptHistory,
    reason: &str,
    error_kind: &str,
) -> Result<(), sqlx::Error> {
    let now = Utc::now();
    let first = history.records.first().map_or(now, |record| record.at);
    let last = history.records.last().map_or(now, |record| record.at);
    let (event_id, event_type) = incoming.identity();
    // Either unique index may say "already stored": (group, event id) for
    // events, (group, message hash) for poison, which has no event id.
    sqlx::query(
        "INSERT INTO dead_letters (consumer_group, event_id, event_type, routing_key, body, headers, \
           reason, error_kind, attempts, attempt_log, first_failed_at, last_failed_at, message_sha256) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
           sha256(convert_to($4, 'UTF8') || '\\x00'::bytea \
                  || convert_to(coalesce($13, ''), 'UTF8') || '\\x00'::bytea || $5)) \
         ON CONFLICT DO NOTHING",
    )
    .bind(group.as_str())
    .bind(event_id)
    .bind(event_type)
    .bind(&incoming.routing_key)
    .bind(&incoming.body)
    .bind(&incoming.headers_json)
    // Text columns cannot hold NUL, whatever an error message quoted.
    .bind(without_nul(reason))
    .bind(without_nul(error_kind))
    .bind(history.records.len().max(1) as i32)
    .bind(history.to_json())
    .bind(first)
    .bind(last)
    .bind(incoming.message_id.as_deref().map(without_nul))
    .execute(connection)
    .await?;
    Ok(())
}
