//! How far a worker has got in its work queue, for the age of the oldest
//! waiting event (see `queue_positions` in the migrations and
//! `consumers::stats`): the newest send time (AMQP `timestamp`, seconds)
//! among the deliveries it has taken, raised in the database every few
//! seconds while it works, never on the hot path of a batch. With it, what
//! the worker applied since its last report and those events' end-to-end
//! lag ([`Activity`], table `group_activity`), for the throughput and lag
//! percentiles the dashboard and `consumers stats` show.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use shared::groups::ConsumerGroup;
use sqlx::PgConnection;

use super::batch::Outcome;
use super::incoming::Incoming;

/// Buckets of the lag histogram: bucket `i` holds lags of at most
/// `2^(i/4)` ms, the last one everything longer (2^24 ms is 4.7 hours).
/// Fixed buckets rather than an HDR histogram: every worker's counts are
/// added up in SQL (`group_activity.lag_buckets`), which needs the same
/// bucket bounds everywhere and a plain array.
pub const LAG_BUCKETS: usize = 97;

/// The bucket of a lag of `milliseconds`.
pub fn lag_bucket(milliseconds: f64) -> usize {
    if milliseconds.is_nan() || milliseconds <= 1.0 {
        0
    } else {
        ((4.0 * milliseconds.log2()).ceil() as usize).min(LAG_BUCKETS - 1)
    }
}

/// The longest lag bucket `bucket` holds, in seconds.
pub fn lag_bucket_bound(bucket: usize) -> f64 {
    2f64.powf(bucket as f64 / 4.0) / 1000.0
}

/// The `quantile` (0–1) of the lags counted in `buckets`, as its bucket's
/// bound (at most 19 % above the true value); `None` when nothing is
/// counted.
pub fn lag_quantile(buckets: &[i64], quantile: f64) -> Option<f64> {
    let total: i64 = buckets.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = ((quantile * total as f64).ceil() as i64).clamp(1, total);
    let mut seen = 0;
    buckets.iter().enumerate().find_map(|(bucket, count)| {
        seen += count;
        (seen >= rank).then(|| lag_bucket_bound(bucket))
    })
}

/// What a worker applied since its last report.
#[derive(Debug)]
pub struct Activity {
    applied: i64,
    newest: Option<DateTime<Utc>>,
    lags: Vec<i64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            applied: 0,
            newest: None,
            lags: vec![0; LAG_BUCKETS],
        }
    }
}

/// Least time between two reports of one worker.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Longest a report waits for the database: one that stopped answering
/// must not hold the worker (and a stop) between its batches.
const REPORT_PATIENCE: Duration = Duration::from_secs(5);

/// One worker's position.
#[derive(Debug, Default)]
pub struct Position {
    newest: Option<i64>,
    reported: Option<i64>,
    last_report: Option<Instant>,
    activity: Activity,
}

impl Position {
    /// Notes the send times (AMQP `timestamp`) of the batch's messages (a
    /// time in the future, from a sender whose clock is ahead, counts as now).
    pub fn taken(&mut self, batch: &[Incoming]) {
        let now = chrono::Utc::now().timestamp();
        let newest = batch
            .iter()
            .filter_map(|incoming| *incoming.properties.timestamp())
            .filter_map(|sent| i64::try_from(sent).ok())
            .map(|sent| sent.min(now))
            .max();
        if newest > self.newest {
            self.newest = newest;
        }
    }

    /// Counts the events of a committed batch that were applied, and
    /// their lag now.
    pub fn applied(&mut self, batch: &[Incoming], outcomes: &[Outcome]) {
        let now = Utc::now();
        for (incoming, outcome) in batch.iter().zip(outcomes) {
            if let (Outcome::Applied, Ok(event)) = (outcome, &incoming.event) {
                let lag = (now - event.time).num_microseconds().unwrap_or(i64::MAX);
                self.activity.lags[lag_bucket(lag.max(0) as f64 / 1000.0)] += 1;
                self.activity.applied += 1;
                self.activity.newest = Some(now);
            }
        }
    }

    /// Raises the group's position in the database when this worker got
    /// further and its last report is [`REPORT_EVERY`] old (or `now`, when
    /// stopping). A failure is only logged: the figure is advisory.
    pub async fn report(
        &mut self,
        group: ConsumerGroup,
        connection: Option<&mut PgConnection>,
        force: bool,
    ) {
        let Some(connection) = connection else { return };
        let due = force
            || self
                .last_report
                .is_none_or(|last| last.elapsed() >= REPORT_EVERY);
        if !due {
            return;
        }
        let advanced = self.newest.filter(|newest| Some(*newest) > self.reported);
        if advanced.is_none() && self.activity.applied == 0 {
            return;
        }
        self.last_report = Some(Instant::now());
        if let Some(newest) = advanced {
            let reporting = sqlx::query(
                "INSERT INTO queue_positions (consumer_group, newest_taken_sent_at) \
                 VALUES ($1, to_timestamp($2)) \
                 ON CONFLICT (consumer_group) DO UPDATE SET \
                   newest_taken_sent_at = greatest(queue_positions.newest_taken_sent_at, excluded.newest_taken_sent_at), \
                   reported_at = now()",
            )
            .bind(group.as_str())
            .bind(newest as f64)
            .execute(&mut *connection);
            let result = shared::database::within(REPORT_PATIENCE, reporting).await;
            match result {
                Ok(_) => self.reported = Some(newest),
                Err(error) => tracing::debug!(%group, %error, "queue position not reported"),
            }
        }
        if let Some(sampled_at) = self.activity.newest {
            let reporting = sqlx::query(
                "WITH expired AS ( \
                   DELETE FROM group_activity \
                   WHERE consumer_group = $1 AND sampled_at < now() - interval '1 hour') \
                 INSERT INTO group_activity (consumer_group, sampled_at, applied, lag_buckets) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(group.as_str())
            .bind(sampled_at)
            .bind(self.activity.applied)
            .bind(&self.activity.lags)
            .execute(&mut *connection);
            let result = shared::database::within(REPORT_PATIENCE, reporting).await;
            match result {
                Ok(_) => self.activity = Activity::default(),
                Err(error) => tracing::debug!(%group, %error, "activity not reported"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_fall_in_buckets_a_fifth_wide_and_quantiles_read_their_bounds() {
        assert_eq!(lag_bucket(0.2), 0);
        assert_eq!(lag_bucket(1.0), 0);
        assert_eq!(lag_bucket(2.0), 4);
        assert_eq!(lag_bucket(f64::MAX), LAG_BUCKETS - 1);
        for milliseconds in [1.5, 7.0, 130.0, 4_000.0, 90_000.0] {
            let bound = lag_bucket_bound(lag_bucket(milliseconds)) * 1000.0;
            assert!(
                bound >= milliseconds && bound < milliseconds * 1.19,
                "{milliseconds} -> {bound}"
            );
        }
        let mut buckets = vec![0; LAG_BUCKETS];
        buckets[lag_bucket(10.0)] = 98;
        buckets[lag_bucket(1_000.0)] = 2;
        assert_eq!(
            lag_quantile(&buckets, 0.5),
            Some(lag_bucket_bound(lag_bucket(10.0)))
        );
        assert_eq!(
            lag_quantile(&buckets, 0.98),
            Some(lag_bucket_bound(lag_bucket(10.0)))
        );
        assert_eq!(
            lag_quantile(&buckets, 0.99),
            Some(lag_bucket_bound(lag_bucket(1_000.0)))
        );
        assert_eq!(lag_quantile(&[0; LAG_BUCKETS], 0.5), None);
    }
}
