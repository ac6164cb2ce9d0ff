//! Moves what the broker dead-lettered on its own (delivery limit reached
//! after crash loops, rejects) from a group's dead-letter queue into the
//! PostgreSQL dead-letter store: one place to look, nothing dropped.

use chrono::Utc;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::AMQPValue;
use shared::groups::ConsumerGroup;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::RuntimeError;
use super::attempts::AttemptRecord;
use super::consuming;
use super::dead_letter_store;
use super::incoming::Incoming;

/// Consumes `queue` (a group's dead-letter queue) until shutdown, storing
/// each message, then acking it.
pub async fn move_broker_dead_letters(
    channel: lapin::Channel,
    group: ConsumerGroup,
    queue: &str,
    pool: PgPool,
    max_event_bytes: usize,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let tag = format!("{group}-dead-letter-mover");
    let mut consumer = consuming::start(&channel, queue, &tag, 32).await?;
    while let Some(delivery) =
        consuming::next_delivery(&channel, &mut consumer, queue, &shutdown).await?
    {
        let incoming = Incoming::from_delivery(&delivery, max_event_bytes);
        let reason = death_reason(&delivery).unwrap_or_else(|| "unknown".to_owned());
        let history = incoming.history.with(AttemptRecord {
            at: Utc::now(),
            worker: "broker".to_owned(),
            kind: format!("broker_{reason}"),
            message: format!("the broker dead-lettered the message ({reason})"),
        });
        let stored = async {
            let mut transaction = pool.begin().await?;
            let reason_text = format!("dead-lettered by the broker: {reason}");
            let kind = format!("broker_{reason}");
            dead_letter_store::record(
                &mut transaction,
                group,
                &incoming,
                &history,
                &reason_text,
                &kind,
            )
            .await?;
            transaction.commit().await
        }
        .await;
        match stored {
            Ok(()) => {
                tracing::warn!(%group, message_id = ?incoming.message_id, %reason, "broker dead letter moved to the store");
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
            Err(error) => {
                tracing::warn!(%group, %error, "could not store a broker dead letter; it stays queued");
                let _ = delivery
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
    Ok(())
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
