//! The audit trail: every replay, edit, resolve, purge and expiry, with
//! who ran it, when, on which filter, how many it touched and how it ended.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::filter::Filter;

/// Who acts: the OS user for the CLI, the token's name for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    /// Who runs this process (`cli:alice`): `SWITCHYARD_ACTOR` when set
    /// (cron jobs and containers, which have no user name), else the OS
    /// user (`USER`, `LOGNAME`, `USERNAME`), else `unknown`.
    pub fn os_user() -> Self {
        let user = ["SWITCHYARD_ACTOR", "USER", "LOGNAME", "USERNAME"]
            .into_iter()
            .find_map(|name| {
                std::env::var(name)
                    .ok()
                    .map(|value| value.trim().to_owned())
                    .filter(|value| !value.is_empty())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let user: String = shared::storable::text(&user).chars().take(100).collect();
        Self(format!("cli:{user}"))
    }

    /// An operator of the API, by token name (`api:alice`).
    pub fn api(token_name: &str) -> Self {
        Self(format!("api:{token_name}"))
    }

    /// The workers themselves (retention).
    pub fn system() -> Self {
        Self("system".to_owned())
    }
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Republish to the group's work queue.
    Replay,
    /// Repair a payload.
    Edit,
    /// Mark handled outside.
    Resolve,
    /// Give up and delete the payload.
    Purge,
    /// Open resolved ones again.
    Reopen,
    /// Delete records past their retention.
    Expire,
}

impl Action {
    const fn as_str(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Edit => "edit",
            Action::Resolve => "resolve",
            Action::Purge => "purge",
            Action::Reopen => "reopen",
            Action::Expire => "expire",
        }
    }
}

/// Records the start of an operation; its id is the operation's.
pub async fn start(
    connection: &mut PgConnection,
    action: Action,
    actor: &Actor,
    filter: &serde_json::Value,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO dead_letter_operations (action, actor, filter) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(action.as_str())
    .bind(&actor.0)
    .bind(filter)
    .fetch_one(connection)
    .await
}

/// A filter as the audit trail stores it.
pub fn filter_json(filter: &Filter) -> serde_json::Value {
    serde_json::to_value(filter).unwrap_or_default()
}

/// The counts of an operation so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Dead letters the filter matched when it started.
    pub matched: i64,
    /// Dead letters it changed (replayed, edited, resolved, purged, deleted).
    pub affected: i64,
    /// Matching dead letters it left alone (a replay's poison that was
    /// never repaired).
    pub skipped: i64,
    /// Replayed events that failed again.
    pub failed_again: i64,
}

/// Updates an operation's counts (and its heartbeat); `outcome` ends it.
pub async fn update(
    connection: &mut PgConnection,
    id: i64,
    counts: Counts,
    outcome: Option<(&str, Option<&str>)>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE dead_letter_operations SET matched = $2, affected = $3, skipped = $4, \
           failed_again = $5, heartbeat_at = now(), \
           outcome = coalesce($6, outcome), detail = coalesce($7, detail), \
           finished_at = CASE WHEN $6 IS NULL THEN NULL ELSE now() END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(counts.matched)
    .bind(counts.affected)
    .bind(counts.skipped)
    .bind(counts.failed_again)
    .bind(outcome.map(|(outcome, _)| outcome))
    .bind(outcome.and_then(|(_, detail)| detail))
    .execute(connection)
    .await?;
    Ok(())
}

/// How often a running operation says it is alive; silent for four times
/// as long, it reads `interrupted`.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps operation `id`'s heartbeat until the future is dropped: a paced
/// replay waits between batches, and must not read `interrupted` meanwhile.
pub async fn keep_alive(pool: PgPool, id: i64) -> std::convert::Infallible {
    let mut every = tokio::time::interval(HEARTBEAT);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let beat = sqlx::query(
            "UPDATE dead_letter_operations SET heartbeat_at = now() \
             WHERE id = $1 AND outcome = 'running'",
        )
        .bind(id)
        .execute(&pool);
        if let Err(error) = shared::database::within(HEARTBEAT, beat).await {
            tracing::debug!(%error, operation_id = id, "operation heartbeat missed");
        }
    }
}

/// Ends an operation that changed `affected` dead letters at once (an
/// edit, resolve, purge or expiry: all it matched).
pub async fn completed(
    connection: &mut PgConnection,
    id: i64,
    affected: i64,
) -> Result<(), sqlx::Error> {
    let counts = Counts {
        matched: affected,
        affected,
        ..Counts::default()
    };
    update(connection, id, counts, Some(("completed", None))).await
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Operation {
    /// Its id (dead letters name the replay that replayed them by it).
    pub id: i64,
    /// `replay`, `edit`, `resolve`, `purge` or `expire`.
    pub action: String,
    /// `cli:<os user>`, `api:<token name>` or `system`.
    pub actor: String,
    /// The filter it ran with.
    pub filter: serde_json::Value,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended; none while it runs (or if it was killed).
    pub finished_at: Option<DateTime<Utc>>,
    /// Its counts.
    pub matched: i64,
    /// Dead letters it changed.
    pub affected: i64,
    /// Dead letters it left alone.
    pub skipped: i64,
    /// Replayed events that failed again, counted when read (an event
    /// fails again only once its retries are used up, which can be after
    /// its replay ended).
    pub failed_again: i64,
    /// `running`, `completed`, `tripped`, `cancelled`, `failed`, or
    /// `interrupted` (running, but silent for over 20 seconds: its
    /// process died).
    pub outcome: String,
    /// Why it ended as it did.
    pub detail: Option<String>,
}

/// The newest operations first, at most `limit` (1 to 1,000), with ids
/// below `before` (paging).
pub async fn history(
    pool: &PgPool,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<Operation>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, action, actor, filter, started_at, finished_at, matched, affected, skipped, \
           CASE WHEN action = 'replay' THEN ( \
             SELECT count(*) FROM dead_letters n \
             WHERE n.previous_id IS NOT NULL AND n.recorded_at >= o.started_at \
               AND EXISTS (SELECT 1 FROM dead_letters r \
                           WHERE r.id = n.previous_id AND r.operation_id = o.id)) \
           ELSE failed_again END AS failed_again, \
           CASE WHEN outcome = 'running' AND heartbeat_at < now() - interval '20 seconds' \
             THEN 'interrupted' ELSE outcome END AS outcome, detail \
         FROM dead_letter_operations o WHERE ($1::bigint IS NULL OR id < $1) \
         ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(i64::from(limit.clamp(1, 1_000)))
    .fetch_all(pool)
    .await
}

/// One operation, or `None`.
pub async fn get(pool: &PgPool, id: i64) -> Result<Option<Operation>, sqlx::Error> {
    Ok(history(pool, Some(id.saturating_add(1)), 1)
        .await?
        .into_iter()
        .find(|operation| operation.id == id))
}
