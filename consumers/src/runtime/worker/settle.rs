//! Settling a batch once its outcomes are committed: the retries go to
//! their wait queues first (each held, never requeued, while the broker
//! refuses it), then the deliveries are acknowledged — through their own
//! ackers, with one rule for a `multiple` ack.

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use shared::publish::OutgoingMessage;
use tokio_util::sync::CancellationToken;

use super::super::attempts::AttemptHistory;
use super::super::batch::Outcome;
use super::super::incoming::Incoming;
use super::{PAUSE_FIRST, PAUSE_LONGEST, Worker};

impl Worker {
    /// Settles `deliveries`, whose `batch` was committed with `outcomes`:
    /// schedules the retries together (each waits for its confirm), then
    /// acks every delivery whose retry, if any, was scheduled. A retry left
    /// unscheduled by a stop leaves its delivery unacked: the broker gives
    /// it back with its old history.
    pub(super) async fn settle(
        &self,
        deliveries: &[Delivery],
        batch: &[Incoming],
        outcomes: &[Outcome],
        shutdown: &CancellationToken,
    ) {
        // Retries are scheduled together (each waits for its confirm).
        let retries =
            batch
                .iter()
                .zip(outcomes)
                .enumerate()
                .filter_map(|(index, (incoming, outcome))| match outcome {
                    Outcome::Retry(history) => Some(async move {
                        let scheduled = self
                            .hold_until_retry_scheduled(incoming, history, shutdown)
                            .await;
                        (index, scheduled)
                    }),
                    _ => None,
                });
        let mut all_acked = true;
        let mut settled = vec![false; deliveries.len()];
        for (index, scheduled) in futures_util::future::join_all(retries).await {
            if !scheduled {
                // Stopping with the retry unscheduled: leave the delivery
                // unacked; the broker gives it back with its old history.
                settled[index] = true;
                all_acked = false;
            }
        }
        acknowledge(deliveries, &settled, all_acked).await;
    }

    /// Schedules the retry, and while the broker refuses it (an outage, a
    /// missing wait queue) holds the delivery and tries again after a
    /// growing pause: never a requeue, which would loop at full speed and
    /// end with the broker dead-lettering a healthy event at its delivery
    /// limit. False when shutdown came first.
    async fn hold_until_retry_scheduled(
        &self,
        incoming: &Incoming,
        history: &AttemptHistory,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut pause = self.context.policy.pauses(PAUSE_FIRST, PAUSE_LONGEST);
        loop {
            let Err(error) = self.schedule_retry(incoming, history).await else {
                return true;
            };
            crate::metrics::retry_held(self.context.group);
            let wait = backoff::backoff::Backoff::next_backoff(&mut pause).unwrap_or(PAUSE_LONGEST);
            tracing::warn!(worker = %self.context.worker, %error, retry_in_ms = wait.as_millis() as u64,
                "retry not scheduled: the broker failed, not the event; holding it and trying again");
            if shutdown
                .run_until_cancelled(tokio::time::sleep(wait))
                .await
                .is_none()
            {
                return false;
            }
        }
    }

    /// Publishes the event to the wait queue for its attempt, with the
    /// jittered delay as per-message TTL and the history in its headers.
    async fn schedule_retry(
        &self,
        incoming: &Incoming,
        history: &AttemptHistory,
    ) -> Result<(), shared::publish::PublishError> {
        let failed_attempts = history.records.len() as u32;
        let delay = self
            .context
            .policy
            .delay_after_attempt(failed_attempts)
            .unwrap_or(self.context.policy.max_delay);
        let wait_queue =
            &self.queues.retry[(failed_attempts as usize - 1).min(self.queues.retry.len() - 1)];
        let mut headers = incoming.properties.headers().clone().unwrap_or_default();
        history.write_to(&mut headers, &incoming.body, &self.context.attempt_key);
        let properties = incoming
            .properties
            .clone()
            .with_headers(headers)
            .with_expiration(delay.as_millis().to_string().into());
        self.retry_publisher
            .publish_message(OutgoingMessage {
                routing_key: wait_queue.clone(),
                exchange: Some(String::new()),
                body: incoming.body.clone(),
                properties,
            })
            .await
    }
}

/// Acks every delivery not already settled, always through a delivery's
/// own acker: lapin poisons ackers when their channel closes, so once the
/// connection is lost an old batch's ack is dropped instead of being sent
/// on a new channel, where tags start again at 1 and would ack new,
/// unprocessed deliveries. When all of the batch is to be acked, one `multiple` ack of the
/// last delivery covers it: every earlier tag on this channel belongs to
/// this batch or to batches already settled.
async fn acknowledge(deliveries: &[Delivery], settled: &[bool], all_acked: bool) {
    let multiple = BasicAckOptions { multiple: true };
    let mut results = Vec::new();
    if all_acked {
        if let Some(last) = deliveries.last() {
            results.push(last.ack(multiple).await);
        }
    } else {
        for (delivery, done) in deliveries.iter().zip(settled) {
            if !done {
                results.push(delivery.ack(BasicAckOptions::default()).await);
            }
        }
    }
    // The commit stands either way; a redelivery is recognised as a duplicate.
    for result in results {
        match result {
            Ok(true) => {}
            Ok(false) => tracing::info!(
                "not acked: the connection was lost since the batch was taken; the broker redelivers it and it is skipped"
            ),
            Err(error) => tracing::warn!(%error,
                "ack failed after commit; the broker will redeliver and it will be skipped"),
        }
    }
}
