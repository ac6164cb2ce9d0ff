//! How far a worker has got in its work queue, for the age of the oldest
//! waiting event (see `queue_positions` in the migrations and
//! [`crate::stats`]): the newest send time (AMQP `timestamp`, seconds)
//! among the deliveries it has taken, raised in the database every few
//! seconds while it works, never on the hot path of a batch.

use std::time::{Duration, Instant};

use lapin::message::Delivery;
use shared::groups::ConsumerGroup;
use sqlx::PgConnection;

/// Least time between two reports of one worker.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// One worker's position.
#[derive(Debug, Default)]
pub struct Position {
    newest: Option<i64>,
    reported: Option<i64>,
    last_report: Option<Instant>,
}

impl Position {
    /// Notes the send times of `deliveries` (a time in the future, from a
    /// sender whose clock is ahead, counts as now).
    pub fn taken(&mut self, deliveries: &[Delivery]) {
        let now = chrono::Utc::now().timestamp();
        let newest = deliveries
            .iter()
            .filter_map(|delivery| *delivery.properties.timestamp())
            .filter_map(|sent| i64::try_from(sent).ok())
            .map(|sent| sent.min(now))
            .max();
        if newest > self.newest {
            self.newest = newest;
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
        let Some(newest) = self
            .newest
            .filter(|newest| due && Some(*newest) > self.reported)
        else {
            return;
        };
        self.last_report = Some(Instant::now());
        let result = sqlx::query(
            "INSERT INTO queue_positions (consumer_group, newest_taken_sent_at) \
             VALUES ($1, to_timestamp($2)) \
             ON CONFLICT (consumer_group) DO UPDATE SET \
               newest_taken_sent_at = greatest(queue_positions.newest_taken_sent_at, excluded.newest_taken_sent_at), \
               reported_at = now()",
        )
        .bind(group.as_str())
        .bind(newest as f64)
        .execute(connection)
        .await;
        match result {
            Ok(_) => self.reported = Some(newest),
            Err(error) => tracing::debug!(%group, %error, "queue position not reported"),
        }
    }
}
