//! The outbox relay (`producers relay`): publishes outbox rows with broker
//! confirms, in id order per partition key, and marks them sent in the same
//! transaction that locked them. Several relays may run at once (see
//! [`claim`]). A crash between the confirm and the commit publishes the
//! rows again on the next pass: at-least-once, never lost; the workers
//! apply each event id once.
//!
//! It wakes on `LISTEN switchyard_outbox` (sent by `shared::outbox::enqueue`
//! at commit) and polls as a fallback, so a lost notification or a dropped
//! listener connection delays rows by at most the poll interval.

pub mod claim;

use std::time::Duration;

use futures_util::StreamExt;
use shared::events::Event;
use shared::outbox::NOTIFY_CHANNEL;
use shared::publish::{OutgoingMessage, Publisher};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use self::claim::{OutboxRow, claim_rows, mark_sent, park, postpone, purge_sent};

/// Published outbox rows.
pub const PUBLISHED_TOTAL: &str = "switchyard_relay_published_total";
/// Outbox rows whose publish failed for a passing reason (they wait with a
/// growing delay and are tried again).
pub const FAILED_TOTAL: &str = "switchyard_relay_failed_total";
/// Outbox rows parked for good (the broker can never take them).
pub const PARKED_TOTAL: &str = "switchyard_relay_parked_total";

/// How the relay works.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most rows per pass (one transaction).
    pub batch_size: i64,
    /// Longest sleep between passes when no notification arrives.
    pub poll_interval: Duration,
    /// Sent rows are deleted once this old.
    pub retention: Duration,
    /// How often sent rows are purged (the first time after the first pass).
    pub purge_interval: Duration,
    /// Longest one database statement of a pass or a purge may take; past
    /// it the pass fails (its transaction rolls back: the rows stay unsent,
    /// and those already published go again, at least once) instead of
    /// waiting on a database that stopped answering — and holding a stop.
    pub database_patience: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(60),
            database_patience: Duration::from_secs(30),
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Rows confirmed and marked sent.
    pub published: usize,
    /// Rows whose publish failed for a passing reason (left unsent, tried
    /// again after a delay).
    pub failed: usize,
    /// Rows parked because the broker can never take them.
    pub parked: usize,
    /// Rows claimed (published + failed + those skipped after a failure).
    pub claimed: usize,
}

/// What publishing one key's rows did.
#[derive(Debug, Default)]
struct KeyOutcome {
    /// Confirmed, in order.
    confirmed: Vec<i64>,
    /// Parked, with the reason.
    parked: Vec<(i64, String)>,
    /// The row that failed for a passing reason (the key stopped there).
    failed: Option<(i64, String)>,
}

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The database failed (the pass's rows stay unsent).
    #[error("outbox database: {0}")]
    Database(#[from] sqlx::Error),
}

/// One relay over one database and one publisher.
#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    publisher: Publisher,
    config: RelayConfig,
}

impl Relay {
    /// A relay publishing `pool`'s outbox through `publisher`.
    pub fn new(pool: PgPool, publisher: Publisher, config: RelayConfig) -> Self {
        Self {
            pool,
            publisher,
            config,
        }
    }

    /// One pass: claim, publish each key's rows in order (keys concurrently),
    /// mark the confirmed ones sent, commit.
    pub async fn pass(&self) -> Result<Pass, RelayError> {
        let mut transaction = self.bounded(self.pool.begin()).await?;
        let by_key = self
            .bounded(claim_rows(&mut transaction, self.config.batch_size))
            .await?;
        let claimed = by_key.values().map(Vec::len).sum();
        let outcomes: Vec<KeyOutcome> = futures_util::stream::iter(by_key.into_values())
            .map(|rows| self.publish_in_order(rows))
            .buffer_unordered(self.publisher.settings().max_in_flight.max(1))
            .collect()
            .await;
        let mut sent = Vec::with_capacity(claimed);
        let (mut failed, mut parked) = (0, 0);
        for outcome in outcomes {
            sent.extend(outcome.confirmed);
            for (id, reason) in outcome.parked {
                self.bounded(park(&mut transaction, id, &reason)).await?;
                parked += 1;
            }
            if let Some((id, error)) = outcome.failed {
                self.bounded(postpone(&mut transaction, id, &error)).await?;
                failed += 1;
            }
        }
        self.bounded(mark_sent(&mut transaction, &sent)).await?;
        self.bounded(transaction.commit()).await?;
        metrics::counter!(PUBLISHED_TOTAL).increment(sent.len() as u64);
        metrics::counter!(FAILED_TOTAL).increment(failed as u64);
        metrics::counter!(PARKED_TOTAL).increment(parked as u64);
        Ok(Pass {
            published: sent.len(),
            failed,
            parked,
            claimed,
        })
    }

    /// Publishes one key's rows one after the other, each after the
    /// previous one's confirm. A row the broker can never take (no queue
    /// bound for its type, or not a valid event) is parked and the key goes
    /// on; a passing failure stops the key there, so that no later row
    /// overtakes it.
    async fn publish_in_order(&self, rows: Vec<OutboxRow>) -> KeyOutcome {
        let mut outcome = KeyOutcome {
            confirmed: Vec::with_capacity(rows.len()),
            ..KeyOutcome::default()
        };
        for row in rows {
            let result = match Event::from_json_value(row.event) {
                Ok(event) => self
                    .publisher
                    .publish_message(OutgoingMessage::for_event(&event))
                    .await
                    .map_err(|error| (error.is_transient(), error.to_string())),
                Err(error) => Err((false, format!("not a valid event: {error}"))),
            };
            match result {
                Ok(()) => outcome.confirmed.push(row.id),
                Err((false, reason)) => {
                    tracing::error!(outbox_id = row.id, %reason,
                        "outbox row parked: the broker can never take it; its key goes on without it");
                    outcome.parked.push((row.id, reason));
                }
                Err((true, error)) => {
                    tracing::warn!(outbox_id = row.id, %error,
                        "outbox row not published; it and its key's later rows wait, then are tried again");
                    outcome.failed = Some((row.id, error));
                    break;
                }
            }
        }
        outcome
    }

    /// Runs passes until `shutdown`: immediately again after a full pass,
    /// otherwise on a notification or after the poll interval; purges old
    /// sent rows now and then. Database errors are logged and retried
    /// after the poll interval.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut listener = self.listen().await;
        // The first purge comes after the first pass: a relay restarted
        // more often than the purge interval still purges.
        let mut last_purge: Option<tokio::time::Instant> = None;
        while !shutdown.is_cancelled() {
            let full = match self.pass().await {
                Ok(pass) => {
                    if pass.published > 0 || pass.failed > 0 {
                        tracing::debug!(
                            published = pass.published,
                            failed = pass.failed,
                            "relay pass"
                        );
                    }
                    pass.failed == 0 && pass.claimed as i64 >= self.config.batch_size
                }
                Err(error) => {
                    let RelayError::Database(cause) = &error;
                    let fault = shared::database_errors::classify(cause);
                    tracing::warn!(%error, ?fault, "relay pass failed; retrying");
                    false
                }
            };
            if last_purge.is_none_or(|last| last.elapsed() >= self.config.purge_interval) {
                last_purge = Some(tokio::time::Instant::now());
                self.purge().await;
            }
            if full {
                continue;
            }
            let wait = self.config.poll_interval;
            tokio::select! {
                () = shutdown.cancelled() => break,
                woke = wait_for_notification(&mut listener, wait) => {
                    if !woke && listener.is_none() {
                        listener = self.listen().await;
                    }
                }
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = match self.bounded(PgListener::connect_with(&self.pool)).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN for outbox rows; polling");
                return None;
            }
        };
        match self.bounded(listener.listen(NOTIFY_CHANNEL)).await {
            Ok(()) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN for outbox rows; polling");
                None
            }
        }
    }

    /// `work`, failed with a timeout past [`RelayConfig::database_patience`].
    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        shared::database::within(self.config.database_patience, work).await
    }

    async fn purge(&self) {
        let purged = shared::database::delete_in_chunks(|limit| {
            self.bounded(purge_sent(&self.pool, self.config.retention, limit))
        })
        .await;
        if let Err(error) = purged {
            tracing::warn!(%error, "could not purge sent outbox rows");
        }
    }
}

/// Waits up to `wait` for a notification; `true` if one came. A broken
/// listener is dropped (the caller reconnects it) and counts as none.
async fn wait_for_notification(listener: &mut Option<PgListener>, wait: Duration) -> bool {
    let Some(active) = listener.as_mut() else {
        tokio::time::sleep(wait).await;
        return false;
    };
    match tokio::time::timeout(wait, active.recv()).await {
        Ok(Ok(_notification)) => true,
        Ok(Err(error)) => {
            tracing::warn!(%error, "outbox listener failed; polling until it reconnects");
            *listener = None;
            false
        }
        Err(_elapsed) => false,
    }
}
