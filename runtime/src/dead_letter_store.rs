//! Writing to the PostgreSQL dead-letter store.

use chrono::Utc;
use shared::groups::ConsumerGroup;
use sqlx::PgConnection;

use super::attempts::AttemptHistory;
use super::incoming::Incoming;
use shared::storable;

/// Header a replay sets: the id of the dead letter it republished. A new
/// failure of that message is stored linked to it.
pub const REPLAY_OF_HEADER: &str = "x-switchyard-replay-of";
/// Header a replay sets: the id of the replay operation.
pub const REPLAY_OPERATION_HEADER: &str = "x-switchyard-replay";

/// Records `incoming` as an open dead letter for `group`, with its whole
/// attempt history (which already holds the final failure). A second
/// record of the same open failure is ignored: the same event for the
/// same group, or the same poison message (same routing key, message id
/// and body). A message republished by a replay that fails again is a new
/// dead letter linked to the replayed one (`previous_id`); the link is
/// believed only when that dead letter is of the same group and event.
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
    let headers = incoming.headers_json();
    let replay_of = headers
        .get(REPLAY_OF_HEADER)
        .and_then(|value| value.as_str())
        .and_then(|text| text.parse::<i64>().ok());
    let partition_key = incoming
        .event()
        .map(|event| storable::string(&event.partition_key));
    // Either unique index may say "already stored": (group, event id) for
    // events, (group, message hash) for poison, which has no event id; each
    // among open rows with the same earlier failure.
    sqlx::query(
        "INSERT INTO dead_letters (consumer_group, event_id, event_type, routing_key, body, headers, \
           reason, error_kind, attempts, attempt_log, first_failed_at, last_failed_at, message_sha256, \
           message_id, content_type, partition_key, previous_id, body_size, body_sha256) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
           sha256(convert_to($4, 'UTF8') || '\\x00'::bytea \
                  || convert_to(coalesce($13, ''), 'UTF8') || '\\x00'::bytea || coalesce($18, $5)), \
           $13, $14, $15, \
           (SELECT id FROM dead_letters WHERE id = $16 AND consumer_group = $1 \
              AND event_id IS NOT DISTINCT FROM $2), \
           $17, $18) \
         ON CONFLICT DO NOTHING",
    )
    .bind(group.as_str())
    .bind(event_id)
    // Everything that came from the message passes through `storable`:
    // text and jsonb cannot hold NUL, whatever a field path or an error
    // message quoted.
    .bind(event_type.as_deref().map(storable::string))
    .bind(storable::string(&incoming.routing_key))
    .bind(&incoming.body)
    .bind(storable::json(headers))
    .bind(storable::string(reason))
    .bind(storable::string(error_kind))
    .bind(history.records.len().max(1) as i32)
    .bind(storable::json(history.to_json()))
    .bind(first)
    .bind(last)
    .bind(incoming.message_id().map(storable::string))
    .bind(incoming.content_type().map(storable::string))
    .bind(partition_key)
    .bind(replay_of)
    // A body over the event limit: `body` holds only its first bytes, and
    // the whole body's hash stands for it in the message hash.
    .bind(incoming.oversize.as_ref().map(|oversize| oversize.size as i64))
    .bind(incoming.oversize.as_ref().map(|oversize| oversize.sha256.to_vec()))
    .execute(connection)
    .await?;
    Ok(())
}
