//! Repairing payloads: an edited event is validated against its type's
//! schema and must keep the dead letter's event id (so idempotency still
//! holds) and belong to its group; poison can be repaired into an event.
//! Export writes dead letters as NDJSON that `replay --from-file` reads back.

use std::io::{BufRead, Write};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::database::{on_connection, within};
use shared::events::Event;
use shared::events::envelope::CLOUDEVENTS_JSON;
use shared::groups::ConsumerGroup;
use sqlx::{Connection, PgPool};

use super::filter::Filter;
use super::manage::OperationError;
use super::operations::{self, Action, Actor};
use super::query::Body;

/// Checks a repaired event for dead letter `id`: it must decode as a valid
/// event (the error names the field), keep the dead letter's event id and
/// be of a type its group handles.
pub fn validate_repair(
    bytes: &[u8],
    group: ConsumerGroup,
    event_id: Option<uuid::Uuid>,
    max_event_bytes: usize,
) -> Result<Event, OperationError> {
    let event = Event::decode(bytes, max_event_bytes).map_err(|error| OperationError::Refused {
        field: error.field().to_owned(),
        reason: error.reason(),
    })?;
    if let Some(expected) = event_id
        && event.id != expected
    {
        return Err(OperationError::Refused {
            field: "id".to_owned(),
            reason: format!(
                "must stay {expected} (the dead letter's event id, which keeps replays idempotent)"
            ),
        });
    }
    if !group.handles(event.event_type()) {
        return Err(OperationError::Refused {
            field: "type".to_owned(),
            reason: format!("group {group} does not handle {}", event.event_type()),
        });
    }
    Ok(event)
}

/// What an edit did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edited {
    /// The audit trail's operation id.
    pub operation_id: i64,
    /// The dead letter.
    pub id: i64,
    /// The event id it now carries.
    pub event_id: uuid::Uuid,
}

/// Replaces open dead letter `id`'s payload with `bytes` (validated; see
/// [`validate_repair`]), keeping the original, recorded in the audit trail;
/// in one transaction that fails past `patience`.
pub async fn edit(
    pool: &PgPool,
    id: i64,
    bytes: &[u8],
    actor: &Actor,
    max_event_bytes: usize,
    patience: Duration,
) -> Result<Edited, OperationError> {
    on_connection(pool, patience, async |connection| {
        edit_on(connection, id, bytes, actor, max_event_bytes).await
    })
    .await
}

async fn edit_on(
    connection: &mut sqlx::PgConnection,
    id: i64,
    bytes: &[u8],
    actor: &Actor,
    max_event_bytes: usize,
) -> Result<Edited, OperationError> {
    let mut transaction = connection.begin().await?;
    let current: Option<(String, Option<uuid::Uuid>, String)> = sqlx::query_as(
        "SELECT consumer_group, event_id, status FROM dead_letters WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *transaction)
    .await?;
    let (group, event_id, status) = current.ok_or(OperationError::NotFound(id))?;
    if status != "open" {
        return Err(OperationError::Refused {
            field: "id".to_owned(),
            reason: format!("dead letter {id} is {status}; only open ones can be edited"),
        });
    }
    let group: ConsumerGroup = group.parse().map_err(|_| OperationError::Refused {
        field: "group".to_owned(),
        reason: format!("dead letter {id} names no known group"),
    })?;
    let event = validate_repair(bytes, group, event_id, max_event_bytes)?;
    let filter = serde_json::json!({ "ids": [id] });
    let operation_id = operations::start(&mut transaction, Action::Edit, actor, &filter).await?;
    let updated = sqlx::query(
        "UPDATE dead_letters SET original_body = coalesce(original_body, body), \
           original_headers = coalesce(original_headers, headers), body = $2, headers = '{}'::jsonb, \
           content_type = $3, event_id = $4, event_type = $5, partition_key = $6, \
           edited_at = now(), edited_by = $7, operation_id = $8 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(event.to_json_bytes())
    .bind(CLOUDEVENTS_JSON)
    .bind(event.id)
    .bind(event.event_type().as_str())
    .bind(&event.partition_key)
    .bind(&actor.0)
    .bind(operation_id)
    .execute(&mut *transaction)
    .await;
    if let Err(sqlx::Error::Database(error)) = &updated
        && error.is_unique_violation()
    {
        return Err(OperationError::Refused {
            field: "id".to_owned(),
            reason: format!(
                "event {} already has an open dead letter in group {group}; act on that one",
                event.id
            ),
        });
    }
    updated?;
    operations::completed(&mut transaction, operation_id, 1).await?;
    transaction.commit().await?;
    tracing::info!(actor = %actor.0, id, event_id = %event.id, "dead letter payload edited");
    Ok(Edited {
        operation_id,
        id,
        event_id: event.id,
    })
}

/// One line of an export (and of a `replay --from-file` input, where only
/// `id` and `event` are read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportLine {
    /// The dead letter's id.
    pub id: i64,
    /// Its group.
    #[serde(default)]
    pub group: String,
    /// Its status.
    #[serde(default)]
    pub status: String,
    /// Its event id.
    #[serde(default)]
    pub event_id: Option<uuid::Uuid>,
    /// Its event type.
    #[serde(default)]
    pub event_type: Option<String>,
    /// Error kind.
    #[serde(default)]
    pub error_kind: String,
    /// Error message.
    #[serde(default)]
    pub reason: String,
    /// The body as a JSON document; edit this to repair the event.
    pub event: Option<serde_json::Value>,
    /// The body when it is not JSON (text or hex): poison. To repair it,
    /// write the event into `event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Body>,
}

#[derive(sqlx::FromRow)]
struct ExportRow {
    id: i64,
    consumer_group: String,
    status: String,
    event_id: Option<uuid::Uuid>,
    event_type: Option<String>,
    error_kind: String,
    reason: String,
    body: Vec<u8>,
}

/// Writes the dead letters matching `filter` as NDJSON, one per line,
/// a page of 500 at a time (constant memory); returns how many.
pub async fn export(
    pool: &PgPool,
    filter: &Filter,
    out: &mut dyn Write,
    patience: Duration,
) -> Result<u64, OperationError> {
    filter.validate()?;
    within(patience, super::query::fresh_statistics(pool)).await?;
    let mut after = 0_i64;
    let mut written = 0;
    while let Some((text, count, last)) = export_page(pool, filter, after, patience).await? {
        out.write_all(text.as_bytes())
            .map_err(|error| OperationError::Refused {
                field: "output".to_owned(),
                reason: error.to_string(),
            })?;
        written += count;
        after = last;
    }
    Ok(written)
}

/// One page (up to 500) of an export after id `after`: the NDJSON text,
/// how many lines, and the last id; `None` past the end. Its read fails
/// past `patience`.
pub async fn export_page(
    pool: &PgPool,
    filter: &Filter,
    after: i64,
    patience: Duration,
) -> Result<Option<(String, u64, i64)>, OperationError> {
    let mut query = filter.query(
        "SELECT id, consumer_group, status, event_id, event_type, error_kind, reason, body \
         FROM dead_letters WHERE",
    );
    query
        .push(" AND id > ")
        .push_bind(after)
        .push(" ORDER BY id LIMIT 500");
    let rows = within(
        patience,
        query
            .build_query_as::<ExportRow>()
            .persistent(false)
            .fetch_all(pool),
    )
    .await?;
    let Some(last) = rows.last().map(|row| row.id) else {
        return Ok(None);
    };
    let mut text = String::new();
    let count = rows.len() as u64;
    for row in rows {
        let (event, raw) = match Body::from_bytes(&row.body) {
            Body::Json(value) => (Some(value), None),
            other => (None, Some(other)),
        };
        let line = ExportLine {
            id: row.id,
            group: row.consumer_group,
            status: row.status,
            event_id: row.event_id,
            event_type: row.event_type,
            error_kind: row.error_kind,
            reason: row.reason,
            event,
            raw,
        };
        // Values read from the database always serialize.
        text.push_str(&serde_json::to_string(&line).unwrap_or_default());
        text.push('\n');
    }
    Ok(Some((text, count, last)))
}

/// A line of a `--from-file` input that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// The dead letter it names, if it named one.
    pub id: Option<i64>,
    /// The field at fault.
    pub field: String,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.id {
            Some(id) => write!(
                formatter,
                "line {} (dead letter {id}): {}: {}",
                self.line, self.field, self.reason
            ),
            None => write!(
                formatter,
                "line {}: {}: {}",
                self.line, self.field, self.reason
            ),
        }
    }
}

/// The longest line of an export file read back: the event (up to
/// `max_event_bytes`), the stored body's raw form (hex: twice its bytes)
/// and the rest of the record (ids, reason: within 64 KiB).
pub fn export_line_limit(max_event_bytes: usize) -> usize {
    max_event_bytes.saturating_mul(3).saturating_add(64 * 1024)
}

/// Reads an export file back: checks every line (all errors are
/// reported, nothing is changed when any line is bad), then applies each
/// changed event as an edit. Returns the ids to replay, in file order.
/// Each line's read, and each edit, fails past `patience`.
pub async fn apply_file(
    pool: &PgPool,
    input: impl BufRead,
    actor: &Actor,
    max_event_bytes: usize,
    patience: Duration,
) -> Result<Result<Vec<i64>, Vec<LineError>>, OperationError> {
    let mut checked: Vec<(i64, Option<Vec<u8>>)> = Vec::new();
    let mut errors = Vec::new();
    let mut input = input;
    let mut bytes = Vec::new();
    let limit = export_line_limit(max_event_bytes);
    let mut number = 0;
    loop {
        bytes.clear();
        let (read, fits) =
            shared::lines::read_line_within(&mut input, &mut bytes, limit).map_err(|error| {
                OperationError::Refused {
                    field: "file".to_owned(),
                    reason: format!("line {}: {error}", number + 1),
                }
            })?;
        if read == 0 {
            break;
        }
        number += 1;
        if errors.len() >= 100 {
            break;
        }
        let line_error = |reason: String| LineError {
            line: number,
            id: None,
            field: "$".to_owned(),
            reason,
        };
        if !fits {
            errors.push(line_error(format!(
                "longer than {limit} bytes, the longest export line read back \
                 (an event of at most {max_event_bytes} bytes, the stored body's \
                 raw form and the rest of the record); a line read back needs \
                 only its `id` and `event`"
            )));
            continue;
        }
        let Ok(line) = std::str::from_utf8(&bytes) else {
            errors.push(line_error("not UTF-8".to_owned()));
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        match within(
            patience,
            check_line(pool, number, line.trim_end(), max_event_bytes),
        )
        .await?
        {
            Ok(entry) => checked.push(entry),
            Err(error) => errors.push(error),
        }
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let mut ids = Vec::with_capacity(checked.len());
    for (id, change) in checked {
        if let Some(bytes) = change {
            edit(pool, id, &bytes, actor, max_event_bytes, patience).await?;
        }
        ids.push(id);
    }
    Ok(Ok(ids))
}

/// One line checked: the dead letter id and the new body when the event
/// differs from the stored one.
async fn check_line(
    pool: &PgPool,
    number: usize,
    line: &str,
    max_event_bytes: usize,
) -> Result<Result<(i64, Option<Vec<u8>>), LineError>, OperationError> {
    let error = |id, field: &str, reason: String| LineError {
        line: number,
        id,
        field: field.to_owned(),
        reason,
    };
    let parsed: ExportLine = match serde_json::from_str(line) {
        Ok(parsed) => parsed,
        Err(parse) => {
            return Ok(Err(error(
                None,
                "$",
                format!("not an export line: {parse}"),
            )));
        }
    };
    let id = parsed.id;
    let stored: Option<(String, Option<uuid::Uuid>, String, Vec<u8>)> = sqlx::query_as(
        "SELECT consumer_group, event_id, status, body FROM dead_letters WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some((group, event_id, status, body)) = stored else {
        return Ok(Err(error(Some(id), "id", "no such dead letter".to_owned())));
    };
    if status != "open" {
        return Ok(Err(error(
            Some(id),
            "id",
            format!("is {status}; only open dead letters can be replayed"),
        )));
    }
    let Some(event) = parsed.event else {
        return Ok(Err(error(
            Some(id),
            "event",
            "missing: write the repaired event here".to_owned(),
        )));
    };
    if serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .as_ref()
        == Some(&event)
    {
        return Ok(Ok((id, None)));
    }
    let bytes = serde_json::to_vec(&event).unwrap_or_default();
    let Ok(group) = group.parse::<ConsumerGroup>() else {
        return Ok(Err(error(Some(id), "group", "no known group".to_owned())));
    };
    match validate_repair(&bytes, group, event_id, max_event_bytes) {
        Ok(_) => Ok(Ok((id, Some(bytes)))),
        Err(OperationError::Refused { field, reason }) => {
            Ok(Err(error(Some(id), &format!("event.{field}"), reason)))
        }
        Err(other) => Err(other),
    }
}
