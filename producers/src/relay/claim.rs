//! Which outbox rows one relay may publish now, in one transaction:
//!
//! 1. the oldest unsent rows, `FOR UPDATE SKIP LOCKED` (rows another relay
//!    holds are skipped, not waited for);
//! 2. a transaction-scoped advisory lock per partition key of those rows,
//!    tried without waiting: one relay per key at a time;
//! 3. per locked key, the unsent rows up to the newest candidate, read
//!    again after the lock: the relay takes the key's rows from its oldest
//!    unsent row on, and stops at the first row it does not hold. A key
//!    whose oldest unsent row is held elsewhere is left for later.
//!
//! The result, per key in id order, is safe to publish in that order.
//!
//! Parked rows (see [`park`]) are out of the way: never claimed, never
//! blocking. A row waiting after a transient failure (`next_attempt_at` in
//! the future) is not claimed and still blocks its key's later rows, which
//! are not claimed either: they take no room from other keys' rows.

use std::collections::{BTreeMap, HashSet};

use sqlx::PgConnection;

/// An outbox row to publish.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Outbox id (insertion order).
    pub id: i64,
    /// The structured-mode CloudEvent.
    pub event: serde_json::Value,
}

/// Claims up to `limit` rows; returns them grouped by partition key, each
/// group in id order. Everything stays locked until the transaction ends.
pub async fn claim_rows(
    transaction: &mut PgConnection,
    limit: i64,
) -> Result<BTreeMap<String, Vec<OutboxRow>>, sqlx::Error> {
    // Rows behind a row of their key that waits to retry are not
    // candidates: they could not go before it, and would fill the limit
    // and starve every other key (600 rows of one key behind a nacked row
    // sent nothing of anyone's for as long as it waited).
    let candidates: Vec<(i64, String, serde_json::Value)> = sqlx::query_as(
        "WITH waiting AS (
             SELECT partition_key, min(id) AS first_id FROM outbox
             WHERE sent_at IS NULL AND parked_at IS NULL
               AND next_attempt_at IS NOT NULL AND next_attempt_at > now()
             GROUP BY partition_key)
         SELECT o.id, o.partition_key, o.event FROM outbox o
         WHERE o.sent_at IS NULL AND o.parked_at IS NULL
           AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())
           AND NOT EXISTS (SELECT 1 FROM waiting w
                           WHERE w.partition_key = o.partition_key AND w.first_id < o.id)
         ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *transaction)
    .await?;
    let Some(newest) = candidates.iter().map(|(id, _, _)| *id).max() else {
        return Ok(BTreeMap::new());
    };
    let mut keys: Vec<&str> = candidates.iter().map(|(_, key, _)| key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let locked: Vec<String> = sqlx::query_scalar(
        "SELECT key FROM UNNEST($1::text[]) AS k(key)
         WHERE pg_try_advisory_xact_lock(hashtextextended('switchyard.relay:' || key, 0))",
    )
    .bind(&keys)
    .fetch_all(&mut *transaction)
    .await?;
    // A fresh snapshot, taken after the locks: what is unsent now.
    let unsent: Vec<(String, i64)> = sqlx::query_as(
        "SELECT partition_key, id FROM outbox
         WHERE sent_at IS NULL AND parked_at IS NULL
           AND partition_key = ANY($1) AND id <= $2 ORDER BY id",
    )
    .bind(&locked)
    .bind(newest)
    .fetch_all(&mut *transaction)
    .await?;
    let held: HashSet<i64> = candidates.iter().map(|(id, _, _)| *id).collect();
    let mut blocked: HashSet<String> = HashSet::new();
    let mut takeable: HashSet<i64> = HashSet::new();
    for (key, id) in unsent {
        if blocked.contains(&key) {
            continue;
        }
        if held.contains(&id) {
            takeable.insert(id);
        } else {
            blocked.insert(key);
        }
    }
    let mut by_key: BTreeMap<String, Vec<OutboxRow>> = BTreeMap::new();
    for (id, key, event) in candidates {
        if takeable.contains(&id) {
            by_key.entry(key).or_default().push(OutboxRow { id, event });
        }
    }
    Ok(by_key)
}

/// Marks rows as published.
pub async fn mark_sent(transaction: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    if !ids.is_empty() {
        sqlx::query("UPDATE outbox SET sent_at = now() WHERE id = ANY($1)")
            .bind(ids)
            .execute(&mut *transaction)
            .await?;
    }
    Ok(())
}

/// Records a transient failure of row `id`: one more attempt, the error,
/// and the next attempt after a delay that doubles from 1 s up to 5 min.
pub async fn postpone(
    transaction: &mut PgConnection,
    id: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        // One reading of the clock for both, so the delay is exactly the
        // one documented (two readings differed by a microsecond).
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
             last_attempt_at = attempted.at,
             next_attempt_at = attempted.at
                 + make_interval(secs => least(300, 2 ^ least(attempts, 9)))
         FROM (SELECT clock_timestamp() AS at) AS attempted
         WHERE id = $1",
    )
    .bind(id)
    .bind(shared::storable::string(error))
    .execute(&mut *transaction)
    .await?;
    Ok(())
}

/// Parks row `id` for good with `reason`: it is kept, listed by
/// `producers outbox list --parked`, and no longer holds its key back.
pub async fn park(
    transaction: &mut PgConnection,
    id: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
             last_attempt_at = attempted.at, parked_at = attempted.at, parked_reason = $2
         FROM (SELECT clock_timestamp() AS at) AS attempted
         WHERE id = $1",
    )
    .bind(id)
    .bind(shared::storable::string(reason))
    .execute(&mut *transaction)
    .await?;
    Ok(())
}

/// Deletes rows sent more than `retention` ago, at most `limit`; returns how many.
pub async fn purge_sent(
    pool: &sqlx::PgPool,
    retention: std::time::Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM outbox WHERE id IN (
             SELECT id FROM outbox WHERE sent_at < now() - make_interval(secs => $1)
             ORDER BY sent_at LIMIT $2)",
    )
    .bind(retention.as_secs_f64())
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected())
}
