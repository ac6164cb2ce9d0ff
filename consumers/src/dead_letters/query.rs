//! Reading dead letters: pages of a filtered list, a summary by failure
//! fingerprint, and one dead letter in full with its history.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::filter::Filter;

/// Most rows in one page.
pub const MAX_PAGE: u32 = 1_000;

/// One dead letter as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DeadLetterRow {
    /// Its id.
    pub id: i64,
    /// The consumer group that gave up on it.
    #[sqlx(rename = "consumer_group")]
    pub group: String,
    /// `open`, `replayed`, `resolved` or `purged`.
    pub status: String,
    /// The event's id (none for poison that never named one).
    pub event_id: Option<Uuid>,
    /// The event's type, decoded or claimed.
    pub event_type: Option<String>,
    /// The event's partition key, when it decoded.
    pub partition_key: Option<String>,
    /// Stable error kind.
    pub error_kind: String,
    /// The last error's message.
    pub reason: String,
    /// The error with ids, numbers and quoted values taken out.
    pub fingerprint: String,
    /// Attempts made.
    pub attempts: i32,
    /// When it first failed.
    pub first_failed_at: DateTime<Utc>,
    /// When it last failed.
    pub last_failed_at: DateTime<Utc>,
    /// The replayed dead letter this is a new failure of.
    pub previous_id: Option<i64>,
    /// When its status last changed.
    pub status_changed_at: Option<DateTime<Utc>>,
    /// The operation that last changed it (a replay, resolve, purge).
    pub operation_id: Option<i64>,
    /// Whether an operator edited its payload.
    pub edited: bool,
}

/// The columns of a [`DeadLetterRow`].
macro_rules! row_columns {
    () => {
        "id, consumer_group, status, event_id, event_type, partition_key, error_kind, reason, \
         fingerprint, attempts, first_failed_at, last_failed_at, previous_id, status_changed_at, \
         operation_id, edited_at IS NOT NULL AS edited"
    };
}

/// One page of a list, oldest first, and where the next one starts.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The rows.
    pub items: Vec<DeadLetterRow>,
    /// Pass as `after` for the next page; none on the last page.
    pub next_after: Option<i64>,
}

/// The dead letters matching `filter` with an id above `after`, at most
/// `limit` (1 to 1,000), by id.
pub async fn list(
    pool: &PgPool,
    filter: &Filter,
    after: i64,
    limit: u32,
) -> Result<Page, sqlx::Error> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut query = filter.query(concat!(
        "SELECT ",
        row_columns!(),
        " FROM dead_letters WHERE"
    ));
    query
        .push(" AND id > ")
        .push_bind(after)
        .push(" ORDER BY id LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let items = query
        .build_query_as()
        .persistent(false)
        .fetch_all(pool)
        .await?;
    Ok(page(items, limit))
}

fn page(mut items: Vec<DeadLetterRow>, limit: u32) -> Page {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Page {
        next_after: more.then(|| items.last().map(|row| row.id)).flatten(),
        items,
    }
}

/// Brings the planner's statistics of `dead_letters` up to date when most
/// of its rows changed since they were taken (an outage that just
/// dead-lettered a hundred thousand events, not yet seen by autovacuum).
/// With stale figures PostgreSQL estimates a filter matches a handful of
/// rows and reads and sorts every remaining one for each page, where an
/// ordered index scan reads a page: a replay of 200,000 fresh dead letters
/// ran five times slower. Only a warning when the role may not `ANALYZE`.
pub async fn fresh_statistics(pool: &PgPool) -> Result<(), sqlx::Error> {
    let stale: Option<bool> = sqlx::query_scalar(
        "SELECT n_mod_since_analyze > 1000 AND n_mod_since_analyze > n_live_tup / 5 \
         FROM pg_stat_user_tables WHERE relid = 'dead_letters'::regclass",
    )
    .fetch_optional(pool)
    .await?
    .flatten();
    if stale == Some(true)
        && let Err(error) = sqlx::query("ANALYZE dead_letters").execute(pool).await
    {
        tracing::warn!(%error, "could not refresh the statistics of dead_letters; large filtered reads may be slow");
    }
    Ok(())
}

/// How many dead letters match `filter`.
pub async fn count(pool: &PgPool, filter: &Filter) -> Result<i64, sqlx::Error> {
    filter
        .query("SELECT count(*) FROM dead_letters WHERE")
        .build_query_scalar()
        .persistent(false)
        .fetch_one(pool)
        .await
}

/// One line of a summary: the dead letters of one group, event type and
/// failure fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SummaryLine {
    /// The consumer group.
    #[sqlx(rename = "consumer_group")]
    pub group: String,
    /// The event type (none for poison that claimed none).
    pub event_type: Option<String>,
    /// Error kind and message with ids, numbers and quoted values taken out.
    pub fingerprint: String,
    /// Matching dead letters.
    pub count: i64,
    /// The earliest first failure among them.
    pub first_failed_at: DateTime<Utc>,
    /// The latest failure among them.
    pub last_failed_at: DateTime<Utc>,
    /// One of them, to `show`.
    pub example_id: i64,
}

/// The dead letters matching `filter` grouped by group, event type and
/// fingerprint, largest groups first (at most 1,000 lines).
pub async fn summary(pool: &PgPool, filter: &Filter) -> Result<Vec<SummaryLine>, sqlx::Error> {
    let mut query = filter.query(
        "SELECT consumer_group, event_type, fingerprint, count(*) AS count, \
           min(first_failed_at) AS first_failed_at, max(last_failed_at) AS last_failed_at, \
           min(id) AS example_id \
         FROM dead_letters WHERE",
    );
    query.push(
        " GROUP BY consumer_group, event_type, fingerprint \
          ORDER BY count DESC, consumer_group, event_type, fingerprint LIMIT 1000",
    );
    query
        .build_query_as()
        .persistent(false)
        .fetch_all(pool)
        .await
}

/// One dead letter in full.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterDetail {
    /// The list's columns.
    #[serde(flatten)]
    pub row: DeadLetterRow,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The AMQP message id.
    pub message_id: Option<String>,
    /// The AMQP content type.
    pub content_type: Option<String>,
    /// The body (for one over the event limit, its first bytes only).
    pub body: Body,
    /// For a body over the event limit, which is not stored whole: its
    /// size and hash; `None` when `body` is the whole body.
    pub body_over_limit: Option<BodyOverLimit>,
    /// The body before an operator's edit.
    pub original_body: Option<Body>,
    /// Who edited it and when.
    pub edited_by: Option<String>,
    /// When it was edited.
    pub edited_at: Option<DateTime<Utc>>,
    /// The AMQP headers, as stored.
    pub headers: serde_json::Value,
    /// Every attempt: time, worker, error kind and message.
    pub attempts_log: serde_json::Value,
    /// Every dead letter of the same event in the same group (earlier
    /// failures and their replays, later failures), oldest first.
    pub history: Vec<DeadLetterRow>,
}

/// What is known of a body over the event limit, of which only the first
/// bytes are stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BodyOverLimit {
    /// The whole body's size in bytes.
    pub size: i64,
    /// Bytes kept (`body`).
    pub kept: usize,
    /// The whole body's SHA-256, hex.
    pub sha256: String,
}

/// A message body: JSON when it is, else its bytes in hex.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// A JSON document.
    Json(serde_json::Value),
    /// UTF-8 text that is not JSON.
    Text(String),
    /// Anything else, hex-encoded.
    Hex(String),
}

impl Body {
    /// Reads `bytes` as JSON, else text, else hex.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match serde_json::from_slice(bytes) {
            Ok(value) => Body::Json(value),
            Err(_) => match std::str::from_utf8(bytes) {
                Ok(text) => Body::Text(text.to_owned()),
                Err(_) => Body::Hex(hex::encode(bytes)),
            },
        }
    }
}

#[derive(sqlx::FromRow)]
struct DetailColumns {
    routing_key: String,
    message_id: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
    original_body: Option<Vec<u8>>,
    edited_by: Option<String>,
    edited_at: Option<DateTime<Utc>>,
    headers: serde_json::Value,
    attempt_log: serde_json::Value,
    body_size: Option<i64>,
    body_sha256: Option<Vec<u8>>,
}

/// Dead letter `id` in full, or `None` when there is none.
pub async fn show(pool: &PgPool, id: i64) -> Result<Option<DeadLetterDetail>, sqlx::Error> {
    let Some(row) = list(pool, &Filter::one(id), 0, 1).await?.items.pop() else {
        return Ok(None);
    };
    let columns: DetailColumns = sqlx::query_as(
        "SELECT routing_key, message_id, content_type, body, original_body, edited_by, edited_at, \
           headers, attempt_log, body_size, body_sha256 FROM dead_letters WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await?;
    let history = history_of(pool, &row).await?;
    Ok(Some(DeadLetterDetail {
        routing_key: columns.routing_key,
        message_id: columns.message_id,
        content_type: columns.content_type,
        body_over_limit: columns.body_size.map(|size| BodyOverLimit {
            size,
            kept: columns.body.len(),
            sha256: hex::encode(columns.body_sha256.unwrap_or_default()),
        }),
        body: Body::from_bytes(&columns.body),
        original_body: columns.original_body.as_deref().map(Body::from_bytes),
        edited_by: columns.edited_by,
        edited_at: columns.edited_at,
        headers: columns.headers,
        attempts_log: columns.attempt_log,
        history,
        row,
    }))
}

/// The other dead letters of `row`'s event in its group, plus the chain
/// of `previous_id` links (which reaches rows of an edited poison message
/// that had no event id then).
async fn history_of(pool: &PgPool, row: &DeadLetterRow) -> Result<Vec<DeadLetterRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "WITH RECURSIVE chain(id, previous_id) AS ( \
             SELECT id, previous_id FROM dead_letters WHERE id = $1 \
             UNION SELECT d.id, d.previous_id FROM dead_letters d JOIN chain c \
               ON d.previous_id = c.id OR d.id = c.previous_id) \
         SELECT ",
        row_columns!(),
        " FROM dead_letters \
         WHERE id <> $1 AND (id IN (SELECT id FROM chain) \
           OR ($2::uuid IS NOT NULL AND consumer_group = $3 AND event_id = $2)) \
         ORDER BY id LIMIT 1000"
    ))
    .bind(row.id)
    .bind(row.event_id)
    .bind(&row.group)
    .fetch_all(pool)
    .await
}
