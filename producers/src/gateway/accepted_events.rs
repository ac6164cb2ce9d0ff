//! Idempotent acceptance: the (source, id) of every event the gateway
//! accepted, kept for a window. A re-sent event inside the window is
//! acknowledged and not published again.
//!
//! The claim is taken in a transaction that stays open while the broker
//! confirms: a concurrent re-send of the same event waits on the row and
//! then sees it (duplicate) or, when the first publish failed and its claim
//! was undone, takes it and publishes.

use std::collections::HashSet;
use std::time::Duration;

use shared::events::Event;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Claims for the events of one request, held until [`Claim::settle`].
pub struct Claim {
    transaction: Transaction<'static, Postgres>,
    /// Per event of the request: publish it (`true`) or it is a duplicate.
    pub publish: Vec<bool>,
}

/// Claims `events` for `key_id`: an event not accepted within `window`
/// (nor earlier in this request) is to be published.
pub async fn claim(
    pool: &PgPool,
    key_id: Uuid,
    events: &[&Event],
    window: Duration,
) -> Result<Claim, sqlx::Error> {
    let mut seen = HashSet::new();
    let first_copy: Vec<bool> = events
        .iter()
        .map(|event| seen.insert((event.source.as_str(), event.id)))
        .collect();
    // Claimed in one fixed order, so two requests that share events wait
    // for each other instead of deadlocking.
    let mut claims: Vec<(String, Uuid)> = events
        .iter()
        .zip(&first_copy)
        .filter(|(_, first)| **first)
        .map(|(event, _)| (event.source.clone(), event.id))
        .collect();
    claims.sort_unstable();
    let (sources, ids): (Vec<String>, Vec<Uuid>) = claims.into_iter().unzip();
    let mut transaction = pool.begin().await?;
    // A row older than the window is taken over: the event is new again.
    let claimed: Vec<(String, Uuid)> = sqlx::query_as(
        "INSERT INTO gateway_accepted_events (source, event_id, key_id)
         SELECT source, event_id, $3 FROM UNNEST($1::text[], $2::uuid[]) WITH ORDINALITY AS e(source, event_id, n)
         ORDER BY n
         ON CONFLICT (source, event_id) DO UPDATE
             SET accepted_at = now(), key_id = EXCLUDED.key_id
             WHERE gateway_accepted_events.accepted_at < now() - make_interval(secs => $4)
         RETURNING source, event_id",
    )
    .bind(sources)
    .bind(ids)
    .bind(key_id)
    .bind(window.as_secs_f64())
    .fetch_all(&mut *transaction)
    .await?;
    let claimed: HashSet<(String, Uuid)> = claimed.into_iter().collect();
    let publish = events
        .iter()
        .zip(first_copy)
        .map(|(event, first)| first && claimed.contains(&(event.source.clone(), event.id)))
        .collect();
    Ok(Claim {
        transaction,
        publish,
    })
}

impl Claim {
    /// Releases the claims of events that were not published (so a re-send
    /// publishes them) and commits the rest.
    pub async fn settle(mut self, not_published: &[&Event]) -> Result<(), sqlx::Error> {
        if !not_published.is_empty() {
            let (sources, ids): (Vec<String>, Vec<Uuid>) = not_published
                .iter()
                .map(|event| (event.source.clone(), event.id))
                .unzip();
            sqlx::query(
                "DELETE FROM gateway_accepted_events
                 WHERE (source, event_id) IN (SELECT * FROM UNNEST($1::text[], $2::uuid[]))",
            )
            .bind(sources)
            .bind(ids)
            .execute(&mut *self.transaction)
            .await?;
        }
        self.transaction.commit().await
    }
}

/// Forgets acceptances older than `window`, at most `limit` at a time;
/// returns how many were removed.
pub async fn purge_expired(
    pool: &PgPool,
    window: Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let removed = sqlx::query(
        "DELETE FROM gateway_accepted_events WHERE ctid IN (
             SELECT ctid FROM gateway_accepted_events
             WHERE accepted_at < now() - make_interval(secs => $1)
             LIMIT $2)",
    )
    .bind(window.as_secs_f64())
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(removed)
}
