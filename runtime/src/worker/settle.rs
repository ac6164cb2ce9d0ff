//! Settling a batch once its outcomes are committed: the retries go to
//! their wait queues first (each held, never requeued, while the broker
//! refuses it), then each delivery is decided — acked when its outcome is
//! committed (a retry counts once the wait queue confirmed it), given back
//! when a stop came before its retry was scheduled — and the
//! [`Ledger`] sends the acks and nacks by its one rule.

use tokio_util::sync::CancellationToken;

use super::super::attempts::AttemptHistory;
use super::super::batch::Outcome;
use super::super::incoming::Incoming;
use super::super::settlement::{Acknowledge, Decision, Ledger};
use super::ports::Retries;
use super::{PAUSE_FIRST, PAUSE_LONGEST, Parts, Taken};
use shared::retry::Pauses;

/// Settles `taken`, whose batch was committed with `outcomes` (one per
/// message, in order): schedules the retries together (each waits for its
/// confirm), then settles every delivery through `ledger`.
pub(super) async fn settle<A: Acknowledge, R: Retries>(
    parts: &Parts<'_>,
    retries: &R,
    ledger: &mut Ledger<A>,
    taken: &Taken,
    outcomes: &[Outcome],
    shutdown: &CancellationToken,
) {
    debug_assert_eq!(taken.batch.len(), outcomes.len());
    let scheduling =
        taken
            .deliveries()
            .zip(outcomes)
            .map(|((tag, incoming), outcome)| async move {
                let decision = match outcome {
                    Outcome::Retry(history) => {
                        if hold_until_scheduled(parts, retries, incoming, history, shutdown).await {
                            Decision::Ack
                        } else {
                            // Stopping with the retry unscheduled: the broker
                            // gives the delivery back with its old history.
                            Decision::Return
                        }
                    }
                    Outcome::Applied | Outcome::Duplicate | Outcome::DeadLettered => Decision::Ack,
                };
                (tag, decision)
            });
    let decisions = futures_util::future::join_all(scheduling).await;
    ledger.settle(decisions).await;
}

/// Schedules the retry, and while the broker refuses it (an outage, a
/// missing wait queue) holds the delivery and tries again after a
/// growing pause: never a requeue, which would loop at full speed and
/// end with the broker dead-lettering a healthy event at its delivery
/// limit. False when shutdown came first.
async fn hold_until_scheduled<R: Retries>(
    parts: &Parts<'_>,
    retries: &R,
    incoming: &Incoming,
    history: &AttemptHistory,
    shutdown: &CancellationToken,
) -> bool {
    let context = parts.context;
    let mut pause = context.policy.pauses(PAUSE_FIRST, PAUSE_LONGEST);
    loop {
        let Err(error) = retries.schedule(incoming, history).await else {
            return true;
        };
        crate::metrics::retry_held(context.group);
        let wait = pause.next_pause();
        tracing::warn!(worker = %context.worker, %error, retry_in_ms = wait.as_millis() as u64,
            "retry not scheduled: the broker failed, not the event; holding it and trying again");
        if !Pauses::sleep(wait, shutdown).await {
            return false;
        }
    }
}
