//! Consuming a queue the same way everywhere in the runtime: QoS before
//! consume, and one rule for what the next delivery means.

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tokio_util::sync::CancellationToken;

use super::RuntimeError;

/// Starts consuming `queue` on `channel` as `tag`, with at most `prefetch`
/// unacknowledged deliveries (QoS first, or the broker may push unbounded
/// deliveries before it applies).
pub async fn start(
    channel: &Channel,
    queue: &str,
    tag: &str,
    prefetch: u16,
) -> Result<Consumer, RuntimeError> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    Ok(channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?)
}

/// The next delivery, or `None` once `shutdown` is requested. A consumer
/// error (the connection failed) is returned, and the runtime reconnects;
/// a consumer the broker ends while we are not stopping (its queue
/// deleted) is an error too, so the process stops and its supervisor
/// restarts it rather than idling unnoticed.
pub async fn next_delivery(
    channel: &Channel,
    consumer: &mut Consumer,
    queue: &str,
    shutdown: &CancellationToken,
) -> Result<Option<Delivery>, RuntimeError> {
    let next = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(None),
        next = consumer.next() => next,
    };
    match next {
        Some(Ok(delivery)) => Ok(Some(delivery)),
        Some(Err(error)) => {
            tracing::warn!(queue, %error, "consumer error: the connection failed");
            Err(RuntimeError::Broker(error))
        }
        None if shutdown.is_cancelled() => Ok(None),
        None if !channel.status().connected() => Err(RuntimeError::ConnectionLost {
            queue: queue.to_owned(),
        }),
        None => Err(RuntimeError::ConsumerEnded {
            queue: queue.to_owned(),
        }),
    }
}
