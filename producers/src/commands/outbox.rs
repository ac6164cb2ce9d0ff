//! `producers outbox list|park|unpark`: the outbox rows an operator looks
//! after — unsent ones that keep failing, and parked ones.

use shared::settings::Settings;

use crate::cli::OutboxCommand;

/// One unsent row, as `list` shows it.
#[derive(Debug, sqlx::FromRow)]
struct UnsentRow {
    id: i64,
    partition_key: String,
    event_type: String,
    event_id: uuid::Uuid,
    attempts: i32,
    last_error: Option<String>,
    next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    parked_at: Option<chrono::DateTime<chrono::Utc>>,
    parked_reason: Option<String>,
}

pub async fn run(command: OutboxCommand, settings: &Settings) -> anyhow::Result<()> {
    let pool = shared::startup::prepare_database(settings, 2).await?;
    match command {
        OutboxCommand::List { parked, limit } => {
            let rows: Vec<UnsentRow> = sqlx::query_as(
                "SELECT id, partition_key, event_type, event_id, attempts, last_error,
                        next_attempt_at, parked_at, parked_reason
                 FROM outbox
                 WHERE sent_at IS NULL AND (NOT $1 OR parked_at IS NOT NULL)
                 ORDER BY id LIMIT $2",
            )
            .bind(parked)
            .bind(limit)
            .fetch_all(&pool)
            .await?;
            println!(
                "{:>10}  {:<24}  {:<20}  {:<36}  {:>8}  {:<32}  detail",
                "id", "partition key", "type", "event id", "attempts", "state"
            );
            for row in rows {
                let (state, detail) = match (&row.parked_at, &row.next_attempt_at) {
                    (Some(at), _) => (
                        format!("parked {}", at.format("%Y-%m-%dT%H:%M:%SZ")),
                        row.parked_reason.unwrap_or_default(),
                    ),
                    (None, Some(next)) => (
                        format!("retry at {}", next.format("%Y-%m-%dT%H:%M:%SZ")),
                        row.last_error.unwrap_or_default(),
                    ),
                    (None, None) => ("waiting".to_owned(), String::new()),
                };
                println!(
                    "{:>10}  {:<24}  {:<20}  {:<36}  {:>8}  {:<32}  {}",
                    row.id,
                    row.partition_key,
                    row.event_type,
                    row.event_id,
                    row.attempts,
                    state,
                    detail
                );
            }
        }
        OutboxCommand::Park { ids, reason } => {
            anyhow::ensure!(!reason.trim().is_empty(), "--reason must say why");
            anyhow::ensure!(!reason.contains('\0'), "--reason must not hold NUL");
            let parked: Vec<i64> = sqlx::query_scalar(
                "UPDATE outbox SET parked_at = now(), parked_reason = $2
                 WHERE id = ANY($1) AND sent_at IS NULL AND parked_at IS NULL
                 RETURNING id",
            )
            .bind(&ids)
            .bind(format!("parked by hand: {reason}"))
            .fetch_all(&pool)
            .await?;
            report("parked", &ids, &parked)?;
        }
        OutboxCommand::Unpark { ids } => {
            let unparked: Vec<i64> = sqlx::query_scalar(
                "UPDATE outbox SET parked_at = NULL, parked_reason = NULL, next_attempt_at = NULL
                 WHERE id = ANY($1) AND sent_at IS NULL AND parked_at IS NOT NULL
                 RETURNING id",
            )
            .bind(&ids)
            .fetch_all(&pool)
            .await?;
            report("unparked", &ids, &unparked)?;
        }
    }
    shared::database::close(&pool).await;
    Ok(())
}

/// Prints what changed; an error names the ids that were not in a state
/// to change (unknown, already sent, or already in the asked state).
fn report(done: &str, asked: &[i64], changed: &[i64]) -> anyhow::Result<()> {
    for id in changed {
        println!("{done} {id}");
    }
    let untouched: Vec<&i64> = asked.iter().filter(|id| !changed.contains(id)).collect();
    anyhow::ensure!(
        untouched.is_empty(),
        "not {done} (unknown, already sent, or already {done}): {untouched:?}"
    );
    Ok(())
}
