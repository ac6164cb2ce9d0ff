//! Moves what the broker dead-lettered on its own (delivery limit reached
//! after crash loops, rejects) from a group's dead-letter queue into the
//! PostgreSQL dead-letter store: one place to look, nothing dropped.

use chrono::Utc;
use lapin::message::Delivery;
use std::time::Duration;

use lapin::options::BasicAckOptions;
use lapin::types::AMQPValue;
use shared::groups::ConsumerGroup;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::attempts::{AttemptHistory, AttemptRecord};
use super::batch::BatchContext;
use super::consuming;
use super::dead_letter_store;
use super::error::RuntimeError;
use super::incoming::Incoming;

/// Consumes `queue` (a group's dead-letter queue) until shutdown, storing
/// each message, then acking it.
pub async fn move_broker_dead_letters(
    channel: lapin::Channel,
    context: BatchContext,
    queue: &str,
    pool: PgPool,
    max_event_bytes: usize,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let (group, policy) = (context.group, &context.policy);
    let tag = format!("{group}-dead-letter-mover");
    let mut consumer = consuming::start(&channel, queue, &tag, 32).await?;
    while let Some(mut delivery) =
        consuming::next_delivery(&channel, &mut consumer, queue, &shutdown).await?
    {
        let reason = death_reason(&delivery).unwrap_or_else(|| "unknown".to_owned());
        let incoming = Incoming::take_from(&mut delivery, max_event_bytes, &context.attempt_key);
        let history = incoming.history.with(AttemptRecord {
            at: Utc::now(),
            worker: "broker".to_owned(),
            kind: format!("broker_{reason}"),
            message: format!("the broker dead-lettered the message ({reason})"),
        });
        // Storing can fail only because the database does (headers and
        // bytes are always storable): keep the message in hand and try
        // again after a growing pause — never requeue it into a loop.
        let mut pause = policy.pauses(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            let stored = store(&pool, group, &incoming, &history, &reason).await;
            match stored {
                Ok(()) => {
                    tracing::warn!(%group, message_id = ?incoming.message_id(), %reason, "broker dead letter moved to the store");
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                    break;
                }
                Err(error) => {
                    crate::metrics::dead_letter_held(group);
                    let wait = pause.next_pause();
                    tracing::warn!(%group, %error, retry_in_ms = wait.as_millis() as u64,
                        "could not store a broker dead letter; holding it");
                    if !shared::retry::Pauses::sleep(wait, &shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Longest one try at storing a broker dead letter may take.
const STORE_PATIENCE: Duration = Duration::from_secs(30);

/// Records one broker dead letter in its own transaction. After a failure
/// the connection is not given back to the pool: it may be broken, or its
/// session stuck in the state the failure came from (read-only after a
/// failover), and the next try must open a fresh one.
async fn store(
    pool: &PgPool,
    group: ConsumerGroup,
    incoming: &Incoming,
    history: &AttemptHistory,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let mut connection = pool.acquire().await?;
    // Bounded: a database that stops answering fails the try (and the
    // connection is dropped) instead of holding the mover, and a stop.
    let stored = shared::database::within(
        STORE_PATIENCE,
        store_on(&mut connection, group, incoming, history, reason),
    )
    .await;
    if stored.is_err() {
        drop(connection.detach());
    }
    stored
}

async fn store_on(
    connection: &mut sqlx::PgConnection,
    group: ConsumerGroup,
    incoming: &Incoming,
    history: &AttemptHistory,
    reason: &str,
) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut transaction = connection.begin().await?;
    let reason_text = format!("dead-lettered by the broker: {reason}");
    let kind = format!("broker_{reason}");
    dead_letter_store::record(
        &mut transaction,
        group,
        incoming,
        history,
        &reason_text,
        &kind,
    )
    .await?;
    transaction.commit().await
}

/// The `reason` of the newest `x-death` entry (`rejected`, `delivery_limit`, `expired`…).
fn death_reason(delivery: &Delivery) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(newest) = deaths.as_slice().first()? else {
        return None;
    };
    match newest.inner().get("reason")? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}
