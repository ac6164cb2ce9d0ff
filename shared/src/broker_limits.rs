//! The start-up doctor's look at the broker's message size limit.
//!
//! A worker drops most of a body over the event limit at once, but the
//! AMQP client receives every message whole, and the broker may send a
//! worker `prefetch` of them ahead: with RabbitMQ's default
//! `max_message_size` of 128 MiB, someone publishing huge bodies can make
//! a worker hold prefetch × 128 MiB. RabbitMQ does not say its limit over
//! AMQP or the management API, so the doctor asks by publishing one probe
//! of [`probe_size`] bytes, in confirm mode on a channel of its own, to a
//! routing key nothing is bound to on the default exchange (the broker
//! checks the size before routing, then drops it): a broker that takes it
//! accepts bodies far above the event limit. One probe per process start,
//! a few megabytes over the broker connection.

use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection};

/// The routing key of the probe: no queue is called so.
const PROBE_ROUTING_KEY: &str = "switchyard.message-size-probe";

/// How long the probe may take.
const PROBE_PATIENCE: Duration = Duration::from_secs(10);

/// What the doctor found out about the broker's message size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageSizeLimit {
    /// The broker refused the probe: its limit is below it.
    Below {
        /// The probe's size.
        probe: usize,
    },
    /// The broker took the probe: its limit is at least that much.
    AtLeast {
        /// The probe's size.
        probe: usize,
    },
    /// The probe could not tell (no answer, no channel).
    Unknown,
}

/// The probe's size for an event limit of `max_event_bytes`: sixteen
/// times the limit, at least 4 MiB ("far above" the limit).
pub fn probe_size(max_event_bytes: usize) -> usize {
    max_event_bytes.saturating_mul(16).max(4 << 20)
}

/// Publishes the probe (see the module's documentation) and says whether
/// the broker took it.
pub async fn message_size_limit(
    connection: &Connection,
    max_event_bytes: usize,
) -> MessageSizeLimit {
    let probe = probe_size(max_event_bytes);
    let asked = tokio::time::timeout(PROBE_PATIENCE, async {
        let channel = connection.create_channel().await.ok()?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .ok()?;
        let published = channel
            .basic_publish(
                "".into(),
                PROBE_ROUTING_KEY.into(),
                BasicPublishOptions::default(),
                &vec![0_u8; probe],
                BasicProperties::default(),
            )
            .await;
        let answer = match published {
            Ok(confirm) => confirm.await,
            Err(error) => Err(error),
        };
        let limit = match answer {
            Ok(Confirmation::Ack(_)) => MessageSizeLimit::AtLeast { probe },
            // RabbitMQ closes the channel: "message size … is larger than
            // configured max size …".
            Err(error) if error.to_string().contains("max size") => {
                MessageSizeLimit::Below { probe }
            }
            Ok(_) | Err(_) => MessageSizeLimit::Unknown,
        };
        let _ = channel.close(200, "probe done".into()).await;
        Some(limit)
    })
    .await;
    asked.ok().flatten().unwrap_or(MessageSizeLimit::Unknown)
}

/// Logs what the doctor found: a warning when the broker takes bodies far
/// above the event limit.
pub async fn check_message_size_limit(connection: &Connection, max_event_bytes: usize) {
    match message_size_limit(connection, max_event_bytes).await {
        MessageSizeLimit::AtLeast { probe } => tracing::warn!(
            probe_bytes = probe,
            max_event_bytes,
            "the broker accepts messages of {probe} bytes, far above the event limit of \
             {max_event_bytes}: a publisher can make each worker hold up to prefetch times the \
             broker's max_message_size (128 MiB by default); lower max_message_size in \
             rabbitmq.conf toward the event limit (README: bodies over the event limit)"
        ),
        MessageSizeLimit::Below { probe } => tracing::debug!(
            probe_bytes = probe,
            "the broker refuses messages this large: its max_message_size is below the probe"
        ),
        MessageSizeLimit::Unknown => {
            tracing::debug!("the broker's message size limit could not be probed")
        }
    }
}
