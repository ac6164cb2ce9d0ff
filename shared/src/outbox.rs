//! The transactional outbox, writer side: a service that owns a PostgreSQL
//! database writes its business rows and the events they imply in one
//! transaction; the relay (`producers relay`) publishes them afterwards.
//! Either both the rows and the events are committed, or neither.
//!
//! ```no_run
//! # async fn place(pool: sqlx::PgPool, event: shared::events::Event) -> Result<(), Box<dyn std::error::Error>> {
//! let mut transaction = pool.begin().await?;
//! // … the service's own INSERTs and UPDATEs on &mut *transaction …
//! shared::outbox::enqueue(&mut transaction, &[event]).await?;
//! transaction.commit().await?;
//! # Ok(()) }
//! ```
//!
//! The database needs the `outbox` table (migration
//! `20261125000001_gateway_and_outbox.sql`). Order: the relay publishes the
//! events of one partition key (`Event::partition_key`, by default the
//! aggregate id) in the order of their outbox ids. So that this is also the
//! order in which their transactions committed, [`enqueue`] holds a
//! transaction-scoped advisory lock per partition key until the caller's
//! commit: two transactions writing events of one key run one after the
//! other (transactions on one aggregate usually do already).

use sqlx::PgConnection;

use crate::events::Event;

/// The channel the relay LISTENs on; [`enqueue`] notifies it (delivered at commit).
pub const NOTIFY_CHANNEL: &str = "switchyard_outbox";

/// The events could not be written (the caller's transaction is then
/// unusable and should be rolled back).
#[derive(Debug, thiserror::Error)]
#[error("outbox: {0}")]
pub struct OutboxError(#[from] sqlx::Error);

/// Writes `events` to the outbox in the caller's transaction, in order,
/// and returns their outbox ids.
pub async fn enqueue(
    transaction: &mut PgConnection,
    events: &[Event],
) -> Result<Vec<i64>, OutboxError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // Distinct keys in one order, so concurrent writers cannot deadlock.
    let mut keys: Vec<&str> = events
        .iter()
        .map(|event| event.partition_key.as_str())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('switchyard.outbox:' || key, 0))
         FROM UNNEST($1::text[]) WITH ORDINALITY AS k(key, position) ORDER BY position",
    )
    .bind(&keys)
    .execute(&mut *transaction)
    .await?;
    let partition_keys: Vec<&str> = events.iter().map(|e| e.partition_key.as_str()).collect();
    let event_ids: Vec<uuid::Uuid> = events.iter().map(|event| event.id).collect();
    let event_types: Vec<&str> = events.iter().map(|e| e.event_type().as_str()).collect();
    let bodies: Vec<serde_json::Value> = events
        .iter()
        .map(|event| serde_json::to_value(event.to_envelope()))
        .collect::<Result<_, _>>()
        .map_err(|error| OutboxError(sqlx::Error::Encode(Box::new(error))))?;
    // Ids are drawn in `position` order, so they follow the order of `events`.
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO outbox (partition_key, event_id, event_type, event)
         SELECT partition_key, event_id, event_type, event FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::jsonb[]) WITH ORDINALITY
             AS e(partition_key, event_id, event_type, event, position)
         ORDER BY position
         RETURNING id",
    )
    .bind(&partition_keys)
    .bind(&event_ids)
    .bind(&event_types)
    .bind(&bodies)
    .fetch_all(&mut *transaction)
    .await?;
    ids.sort_unstable();
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *transaction)
        .await?;
    Ok(ids)
}
