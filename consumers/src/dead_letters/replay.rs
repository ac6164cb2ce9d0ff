//! Replaying open dead letters: each event goes back to **its own group's
//! work queue only** (published to the default exchange, routed by queue
//! name, so the groups that applied it are not disturbed), as a first
//! attempt with a fresh retry budget.
//!
//! Exactly once, whatever stops it: dead letters are taken a batch at a
//! time, locked (`FOR NO KEY UPDATE SKIP LOCKED`: two replays never take
//! the same row), republished, and marked `replayed` in the same
//! transaction only once the broker confirmed them. A replay killed
//! halfway leaves the unmarked rows open; run again, it republishes only
//! those, and a copy that was confirmed but not marked is a duplicate the
//! workers' processing ledger recognises. Memory stays constant: one batch
//! at a time, by id.
//!
//! Each copy names the dead letter it came from (`x-switchyard-replay-of`):
//! if it fails again, the new dead letter is linked to the replayed one.
//! A **breaker** watches those new failures and stops the replay when more
//! than a set share of the most recently replayed events failed again.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, LongString, ShortString};
use serde::{Deserialize, Serialize};
use shared::events::amqp::decode_delivery;
use shared::groups::ConsumerGroup;
use shared::publish::{OutgoingMessage, Publisher};
use shared::settings::Settings;
use shared::topology::Topology;
use sqlx::{Connection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::filter::{Filter, FilteredQuery};
use super::manage::OperationError;
use super::operations::{self, Action, Actor, Counts};
use runtime::dead_letter_store::{REPLAY_OF_HEADER, REPLAY_OPERATION_HEADER};
use runtime::incoming::headers_from_json;

/// The longest a replay waits to record how it ended: short, because
/// after a failure the database may be the reason.
const ENDING_PATIENCE: Duration = Duration::from_secs(10);

/// `work`, failed as the database not answering once `settings`' limit on
/// one step of dead-letter work has passed: a database that stops answering
/// (a network cut, a failover that leaves connections hanging) fails the
/// replay instead of holding it, and the operator's cancel, forever; what
/// it had not marked stays open for the next run.
async fn bounded<T>(
    settings: &Settings,
    work: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    shared::database::within(settings.dead_letters.database_timeout, work).await
}

/// Fewest events per second a paced replay may be asked for (one every
/// 100 s).
pub const MIN_RATE: f64 = 0.01;
/// Most events per second a paced replay may be asked for.
pub const MAX_RATE: f64 = 100_000.0;

/// When the breaker stops a replay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Breaker {
    /// Share (0–1) of the window's events that may fail again.
    pub share: f64,
    /// How many of the most recently replayed events it looks at.
    pub window: u32,
    /// Fewest replayed events before it may trip.
    pub min_sample: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            share: 0.10,
            window: 100,
            min_sample: 10,
        }
    }
}

/// How to replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayOptions {
    /// Which open dead letters.
    pub filter: Filter,
    /// Most events per second; none for as fast as the broker confirms.
    pub rate: Option<f64>,
    /// Dead letters taken (locked, republished, marked) at a time.
    pub batch: u32,
    /// When to stop early.
    pub breaker: Breaker,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            filter: Filter::default(),
            rate: None,
            batch: 100,
            breaker: Breaker::default(),
        }
    }
}

impl ReplayOptions {
    /// Refuses options that cannot run: an invalid filter, a filter on
    /// closed dead letters, a rate or batch out of range, a breaker share
    /// outside 0–1.
    pub fn validate(&self) -> Result<(), OperationError> {
        self.filter.validate()?;
        self.filter.requiring_open()?;
        let refused = |field: &str, reason: &str| {
            Err(OperationError::Refused {
                field: field.to_owned(),
                reason: reason.to_owned(),
            })
        };
        if let Some(rate) = self.rate
            && !(rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate))
        {
            return refused("rate", "must be 0.01 to 100000 per second");
        }
        if !(1..=10_000).contains(&self.batch) {
            return refused("batch", "must be 1 to 10000");
        }
        let breaker = self.breaker;
        if !(breaker.share.is_finite() && (0.0..=1.0).contains(&breaker.share)) {
            return refused("breaker.share", "must be between 0 and 1");
        }
        if breaker.window == 0 || breaker.min_sample == 0 {
            return refused("breaker.window", "window and min_sample must be at least 1");
        }
        Ok(())
    }
}

/// Where a replay stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplayProgress {
    /// The audit trail's operation id (0 for a dry run).
    pub operation_id: i64,
    /// Open dead letters the filter matched at the start.
    pub matched: i64,
    /// Republished, confirmed and marked replayed.
    pub replayed: i64,
    /// Left open: not an event (poison never repaired), or published but
    /// not confirmed.
    pub skipped: i64,
    /// Replayed events that failed again (so far).
    pub failed_again: i64,
    /// `running`, `completed`, `tripped`, `cancelled` or `failed`.
    pub outcome: String,
    /// Why it ended as it did.
    pub detail: Option<String>,
}

impl ReplayProgress {
    /// Its counts as the audit trail keeps them.
    pub fn counts(&self) -> Counts {
        Counts {
            matched: self.matched,
            affected: self.replayed,
            skipped: self.skipped,
            failed_again: self.failed_again,
        }
    }
}

/// One dead letter a dry run would replay, or would skip and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// Its id.
    pub id: i64,
    /// Its group (the only queue it would go to).
    pub group: String,
    /// The event id.
    pub event_id: Option<uuid::Uuid>,
    /// The event type.
    pub event_type: Option<String>,
    /// Why it would be skipped; none when it would be replayed.
    pub skip: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ReplayRow {
    id: i64,
    consumer_group: String,
    event_id: Option<uuid::Uuid>,
    event_type: Option<String>,
    body: Vec<u8>,
    headers: serde_json::Value,
    content_type: Option<String>,
}

/// The next `limit` rows `filter` matches after id `after`, with `lock`
/// (empty, or a locking clause) appended.
fn replay_rows(filter: &Filter, after: i64, limit: u32, lock: &str) -> FilteredQuery {
    let mut query = filter.query(
        "SELECT id, consumer_group, event_id, event_type, body, headers, content_type \
         FROM dead_letters WHERE",
    );
    query
        .push(" AND id > ")
        .push_bind(after)
        .push(" ORDER BY id LIMIT ")
        .push_bind(i64::from(limit))
        .push(lock);
    query
}

/// The message that replays `row` to its group's work queue, or why it
/// cannot be replayed.
fn message_for(
    row: &ReplayRow,
    topology: &Topology,
    operation_id: i64,
    max_event_bytes: usize,
) -> Result<OutgoingMessage, String> {
    let group: ConsumerGroup = row
        .consumer_group
        .parse()
        .map_err(|_| format!("unknown group {:?}", row.consumer_group))?;
    let mut properties = BasicProperties::default().with_headers(headers_from_json(&row.headers));
    if let Some(Ok(content_type)) = row.content_type.as_deref().map(ShortString::try_new) {
        properties = properties.with_content_type(content_type);
    }
    let event = decode_delivery(&properties, &row.body, max_event_bytes)
        .map_err(|error| format!("not an event ({error}); repair it with `edit` first"))?;
    if row.event_id.is_some_and(|id| id != event.id) {
        return Err("its body names another event id".to_owned());
    }
    if !group.handles(event.event_type()) {
        return Err(format!(
            "group {group} does not handle {}",
            event.event_type()
        ));
    }
    let mut message = OutgoingMessage::for_event(&event);
    message.exchange = Some(String::new());
    message.routing_key = topology.group(group).work.clone();
    let mut headers = message.properties.headers().clone().unwrap_or_default();
    headers.insert(
        REPLAY_OF_HEADER.into(),
        AMQPValue::LongString(LongString::from(row.id.to_string())),
    );
    headers.insert(
        REPLAY_OPERATION_HEADER.into(),
        AMQPValue::LongString(LongString::from(operation_id.to_string())),
    );
    message.properties = message.properties.with_headers(headers);
    Ok(message)
}

/// Walks the open dead letters `options` match without changing anything,
/// calling `each` with what a replay would do to each; returns the count.
pub async fn dry_run(
    pool: &PgPool,
    settings: &Settings,
    options: &ReplayOptions,
    each: &mut (dyn FnMut(Candidate) + Send),
) -> Result<ReplayProgress, OperationError> {
    options.validate()?;
    bounded(settings, super::query::fresh_statistics(pool)).await?;
    let topology = Topology::new(settings);
    let mut progress = ReplayProgress {
        matched: bounded(settings, super::query::count(pool, &options.filter)).await?,
        outcome: "dry-run".to_owned(),
        ..ReplayProgress::default()
    };
    let mut after = 0;
    loop {
        let mut query = replay_rows(&options.filter, after, options.batch, "");
        let rows = bounded(
            settings,
            query
                .build_query_as::<ReplayRow>()
                .persistent(false)
                .fetch_all(pool),
        )
        .await?;
        let Some(last) = rows.last() else {
            return Ok(progress);
        };
        after = last.id;
        for row in rows {
            let skip = message_for(&row, &topology, 0, settings.max_event_bytes).err();
            if skip.is_some() {
                progress.skipped += 1;
            } else {
                progress.replayed += 1;
            }
            each(Candidate {
                id: row.id,
                group: row.consumer_group,
                event_id: row.event_id,
                event_type: row.event_type,
                skip,
            });
        }
    }
}

/// Replays the open dead letters `options` match; see the module docs.
/// `progress` follows it (a bar, an API status); `cancel` stops it after
/// the publishes in flight are confirmed and marked.
pub async fn replay(
    pool: &PgPool,
    settings: &Settings,
    actor: &Actor,
    options: &ReplayOptions,
    progress: &watch::Sender<ReplayProgress>,
    cancel: &CancellationToken,
) -> Result<ReplayProgress, OperationError> {
    options.validate()?;
    options.filter.for_change()?;
    let filter_json = serde_json::to_value(options).unwrap_or_default();
    bounded(settings, super::query::fresh_statistics(pool)).await?;
    let mut connection = pool.acquire().await?;
    let operation_id = bounded(
        settings,
        operations::start(&mut connection, Action::Replay, actor, &filter_json),
    )
    .await?;
    drop(connection);
    let mut state = ReplayProgress {
        operation_id,
        matched: bounded(settings, super::query::count(pool, &options.filter)).await?,
        outcome: "running".to_owned(),
        ..ReplayProgress::default()
    };
    progress.send_replace(state.clone());
    tracing::info!(actor = %actor.0, operation_id, matched = state.matched, "replay started");
    let publisher = Publisher::new(settings, "", "switchyard-replay");
    let result = tokio::select! {
        result = replay_batches(pool, settings, options, &publisher, &mut state, progress, cancel) => result,
        never = operations::keep_alive(pool.clone(), operation_id) => match never {},
    };
    publisher.close().await;
    let (outcome, detail) = match &result {
        Ok(ending) => ending.clone(),
        Err(error) => ("failed".to_owned(), Some(error.to_string())),
    };
    state.outcome = outcome;
    state.detail = detail;
    let recorded = shared::database::within(ENDING_PATIENCE, async {
        if let Ok(failed) = failed_again(pool, operation_id).await {
            state.failed_again = failed;
        }
        let mut connection = pool.acquire().await?;
        operations::update(
            &mut connection,
            operation_id,
            state.counts(),
            Some((&state.outcome, state.detail.as_deref())),
        )
        .await
    })
    .await;
    progress.send_replace(state.clone());
    tracing::info!(operation_id, replayed = state.replayed, skipped = state.skipped,
        failed_again = state.failed_again, outcome = %state.outcome, "replay ended");
    match (result, recorded) {
        (Ok(_), Ok(())) => Ok(state),
        // Why it stopped matters more than that its end went unrecorded
        // (the history then shows it `running`, and `interrupted` once it
        // has been silent for 20 seconds).
        (Err(error), recorded) => {
            if let Err(unrecorded) = recorded {
                tracing::warn!(operation_id, error = %unrecorded, "the replay's end was not recorded");
            }
            Err(error)
        }
        (Ok(_), Err(unrecorded)) => Err(unrecorded.into()),
    }
}

/// Runs batches until none is left, the breaker trips or `cancel`;
/// returns the outcome and its detail.
async fn replay_batches(
    pool: &PgPool,
    settings: &Settings,
    options: &ReplayOptions,
    publisher: &Publisher,
    state: &mut ReplayProgress,
    progress: &watch::Sender<ReplayProgress>,
    cancel: &CancellationToken,
) -> Result<(String, Option<String>), OperationError> {
    let topology = Topology::new(settings);
    let batch_size = match options.rate {
        Some(rate) => options.batch.min((rate.floor() as u32).max(1)),
        None => options.batch,
    };
    // Paced, a batch is at most a second's worth, and the wait for the
    // pace comes between batches, never while a batch's rows are locked.
    let pace = options
        .rate
        .map(|rate| shared::pace::Pace::per_second(rate, batch_size));
    let mut after = 0;
    // The breaker's window: the ids most recently marked replayed.
    let mut recent = std::collections::VecDeque::new();
    loop {
        if cancel.is_cancelled() {
            return Ok((
                "cancelled".to_owned(),
                Some("cancelled by the operator".to_owned()),
            ));
        }
        if let Some(pace) = &pace
            && cancel
                .run_until_cancelled(pace.take(batch_size))
                .await
                .is_none()
        {
            return Ok((
                "cancelled".to_owned(),
                Some("cancelled by the operator".to_owned()),
            ));
        }
        let mut connection = pool.acquire().await?;
        // One batch: its rows locked, republished, marked in one
        // transaction. A statement given up on leaves the connection in an
        // unknown state: it is closed, not returned to the pool.
        let batch = async {
            let mut transaction = bounded(settings, connection.begin()).await?;
            let mut query = replay_rows(
                &options.filter,
                after,
                batch_size,
                " FOR NO KEY UPDATE SKIP LOCKED",
            );
            let rows = bounded(
                settings,
                query
                    .build_query_as::<ReplayRow>()
                    .persistent(false)
                    .fetch_all(&mut *transaction),
            )
            .await?;
            let Some(last) = rows.last() else {
                return Ok(None);
            };
            after = last.id;
            let mut sent = Vec::with_capacity(rows.len());
            for row in &rows {
                match message_for(row, &topology, state.operation_id, settings.max_event_bytes) {
                    Err(reason) => {
                        tracing::warn!(id = row.id, event_id = ?row.event_id, %reason, "dead letter not replayed");
                        state.skipped += 1;
                    }
                    Ok(message) => {
                        let publisher = publisher.clone();
                        let id = row.id;
                        sent.push((
                            id,
                            tokio::spawn(async move { publisher.publish_message(message).await }),
                        ));
                    }
                }
            }
            let mut confirmed = Vec::with_capacity(sent.len());
            let mut broker_error = None;
            for (id, publish) in sent {
                match publish.await {
                    Ok(Ok(())) => confirmed.push(id),
                    Ok(Err(error)) => {
                        state.skipped += 1;
                        broker_error.get_or_insert(error.to_string());
                    }
                    Err(join) => {
                        state.skipped += 1;
                        broker_error.get_or_insert(join.to_string());
                    }
                }
            }
            let marked: Vec<i64> = bounded(
                settings,
                sqlx::query_scalar(
                    "UPDATE dead_letters SET status = 'replayed', status_changed_at = now(), operation_id = $2 \
                     WHERE id = ANY($1) AND status = 'open' RETURNING id",
                )
                .bind(&confirmed)
                .bind(state.operation_id)
                .fetch_all(&mut *transaction),
            )
            .await?;
            // Counted once the marks are committed: a batch that failed
            // here is open again, and the next run republishes it.
            let counts = Counts {
                affected: state.replayed + confirmed.len() as i64,
                ..state.counts()
            };
            bounded(
                settings,
                operations::update(&mut transaction, state.operation_id, counts, None),
            )
            .await?;
            bounded(settings, transaction.commit()).await?;
            state.replayed += confirmed.len() as i64;
            Ok::<_, sqlx::Error>(Some((marked, broker_error)))
        }
        .await;
        if batch.is_err() {
            connection.close_on_drop();
        }
        drop(connection);
        let Some((marked, broker_error)) = batch? else {
            let detail = bounded(settings, left_open(pool, options, state)).await?;
            return Ok(("completed".to_owned(), detail));
        };
        recent.extend(marked);
        let excess = recent.len().saturating_sub(options.breaker.window as usize);
        recent.drain(..excess);
        let window = recent.len() as i64;
        let failed = bounded(settings, failed_among(pool, recent.make_contiguous())).await?;
        state.failed_again = bounded(settings, failed_again(pool, state.operation_id)).await?;
        progress.send_replace(state.clone());
        if let Some(error) = broker_error {
            return Err(OperationError::Broker(error));
        }
        let breaker = options.breaker;
        if window >= i64::from(breaker.min_sample) && failed as f64 > breaker.share * window as f64
        {
            let detail = format!(
                "breaker tripped: {failed} of the last {window} replayed events failed again \
                 (more than {:.0} %)",
                breaker.share * 100.0
            );
            tracing::warn!(operation_id = state.operation_id, %detail, "replay stopped");
            return Ok(("tripped".to_owned(), Some(detail)));
        }
    }
}

/// When a replay found nothing more to take but matching dead letters are
/// still open beyond those it skipped: another replay holds them (it locks
/// its batch; this one passes over locked rows), or they arrived since.
/// Says how many, and which replays run now.
async fn left_open(
    pool: &PgPool,
    options: &ReplayOptions,
    state: &ReplayProgress,
) -> Result<Option<String>, sqlx::Error> {
    // Not counting the dead letters of this replay's own events that
    // failed again (open, and matching the same filter).
    let mut query = options
        .filter
        .query("SELECT count(*) FROM dead_letters d WHERE");
    query
        .push(
            " AND NOT EXISTS (SELECT 1 FROM dead_letters r \
                WHERE r.id = d.previous_id AND r.operation_id = ",
        )
        .push_bind(state.operation_id)
        .push(")");
    let open: i64 = query
        .build_query_scalar()
        .persistent(false)
        .fetch_one(pool)
        .await?;
    let untaken = open - state.skipped;
    if untaken <= 0 {
        return Ok(None);
    }
    let others: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, actor FROM dead_letter_operations \
         WHERE action = 'replay' AND outcome = 'running' AND id <> $1 \
           AND heartbeat_at > now() - interval '20 seconds' ORDER BY id",
    )
    .bind(state.operation_id)
    .fetch_all(pool)
    .await?;
    let running = if others.is_empty() {
        "no other replay runs now: they were recorded after this one started".to_owned()
    } else {
        let named: Vec<String> = others
            .iter()
            .map(|(id, actor)| format!("operation {id} by {actor}"))
            .collect();
        format!(
            "held by another replay running now ({}), or recorded since this one started",
            named.join(", ")
        )
    };
    Ok(Some(format!(
        "{untaken} matching dead letters are still open and were not taken: {running}"
    )))
}

/// How many of the dead letters `ids` failed again after their replay
/// (a new dead letter names each as its previous one).
async fn failed_among(pool: &PgPool, ids: &[i64]) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(DISTINCT previous_id) FROM dead_letters WHERE previous_id = ANY($1)",
    )
    .bind(ids)
    .fetch_one(pool)
    .await
}

/// Dead letters of events this replay republished that failed again:
/// found from the new dead letters (linked ones recorded since the replay
/// started, few), not from the replayed ones (the whole set, which would
/// make each batch slower than the last).
pub async fn failed_again(pool: &PgPool, operation_id: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters n \
         WHERE n.previous_id IS NOT NULL \
           AND n.recorded_at >= (SELECT started_at FROM dead_letter_operations WHERE id = $1) \
           AND EXISTS (SELECT 1 FROM dead_letters r WHERE r.id = n.previous_id AND r.operation_id = $1)",
    )
    .bind(operation_id)
    .fetch_one(pool)
    .await
}
