//! Per-group figures for operators and autoscalers: ready, in flight
//! (delivered, unacknowledged), waiting to retry, open dead letters,
//! consumers, processing rates, and the age of the oldest waiting event.
//! Ready, retrying and consumers come from the broker over AMQP; in flight
//! and rates need the management API and are absent (with the reason)
//! without it.
//!
//! The oldest waiting age: RabbitMQ does not report the head message's
//! time for quorum queues, and peeking at it (get, then requeue) would
//! disturb the queue, so it comes from how far the workers have got
//! (`queue_positions`): the work queue is first in, first out, so the
//! event at its head was sent after the newest one the workers took, and
//! its age is at most now minus that one's send time — exact to within the
//! gap between two events and the workers' report period (5 s) while they
//! work; an upper bound that keeps growing while no worker takes anything
//! (the safe direction for a scaler). Zero when nothing is ready; absent
//! when no worker of the group has ever reported.
//!
//! `backlog` = ready + in flight + retrying is the figure to scale on:
//! ready alone drops to zero while workers still hold a full prefetch of
//! events (and retries wait outside the work queue), so a scaler watching
//! it would remove workers mid-processing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::groups::ConsumerGroup;
use shared::topology::Topology;
use shared::topology::management::{Management, ManagementError};
use sqlx::PgPool;

/// One group's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupStats {
    /// The group.
    pub group: ConsumerGroup,
    /// Ready messages on its work queue.
    pub ready: u64,
    /// Delivered to its workers, not yet acknowledged (management API).
    pub unacked: Option<u64>,
    /// Waiting in its retry queues.
    pub retrying: u64,
    /// In its broker dead-letter queue (moved to the store as they come).
    pub dead_letter_queue: u64,
    /// Open dead letters in the store.
    pub open_dead_letters: i64,
    /// Consumers on its work queue (one per worker).
    pub consumers: u64,
    /// Acknowledgements per second over the last minute (management API).
    pub ack_rate: Option<f64>,
    /// Messages per second routed to its work queue (management API).
    pub publish_rate: Option<f64>,
    /// Ready + in flight + retrying: the figure to scale on (needs the
    /// management API; without it, ready + retrying).
    pub backlog: u64,
    /// Seconds the oldest ready event has waited, at most (see the module
    /// documentation); 0 when nothing is ready, absent when unknown.
    pub oldest_waiting_seconds: Option<f64>,
}

/// Every group's figures at one time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// When they were read.
    pub at: DateTime<Utc>,
    /// One entry per group.
    pub groups: Vec<GroupStats>,
    /// Why in-flight counts and rates are absent, when they are.
    pub management_unavailable: Option<String>,
}

/// Reads the figures of every group.
pub async fn collect(
    connection: &lapin::Connection,
    topology: &Topology,
    pool: &PgPool,
    management: &Result<Management, ManagementError>,
) -> anyhow::Result<Stats> {
    let depths = topology.depths(connection).await?;
    let open: Vec<(String, i64)> = sqlx::query_as(
        "SELECT consumer_group, count(*) FROM dead_letters WHERE status = 'open' GROUP BY 1",
    )
    .fetch_all(pool)
    .await?;
    let positions: Vec<(String, f64)> = sqlx::query_as(
        "SELECT consumer_group, greatest(extract(epoch FROM now() - newest_taken_sent_at), 0)::float8 \
         FROM queue_positions",
    )
    .fetch_all(pool)
    .await?;
    let mut unavailable = management.as_ref().err().map(ToString::to_string);
    let mut groups = Vec::with_capacity(depths.len());
    for depth in depths {
        let info = match management {
            Ok(management) => match management.queue(&topology.group(depth.group).work).await {
                Ok(info) => Some(info),
                Err(error) => {
                    unavailable.get_or_insert(error.to_string());
                    None
                }
            },
            Err(_) => None,
        };
        let unacked = info.as_ref().map(|info| info.messages_unacknowledged);
        let ready = u64::from(depth.work);
        let retrying = u64::from(depth.retrying);
        groups.push(GroupStats {
            group: depth.group,
            ready,
            unacked,
            retrying,
            dead_letter_queue: u64::from(depth.dead_letter),
            open_dead_letters: open
                .iter()
                .find(|(group, _)| group == depth.group.as_str())
                .map_or(0, |(_, count)| *count),
            consumers: u64::from(depth.consumers),
            ack_rate: info
                .as_ref()
                .map(|info| info.message_stats.ack_details.rate),
            publish_rate: info
                .as_ref()
                .map(|info| info.message_stats.publish_details.rate),
            backlog: ready + retrying + unacked.unwrap_or(0),
            oldest_waiting_seconds: if ready == 0 {
                Some(0.0)
            } else {
                positions
                    .iter()
                    .find(|(group, _)| group == depth.group.as_str())
                    .map(|(_, age)| age.round())
            },
        });
    }
    Ok(Stats {
        at: Utc::now(),
        groups,
        management_unavailable: unavailable,
    })
}

/// The figures as an aligned table, one line per group, and a line saying
/// why some are missing.
pub fn table(stats: &Stats) -> String {
    let optional = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let rate = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let age = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}s"));
    let mut table = format!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "group",
        "ready",
        "unacked",
        "retrying",
        "backlog",
        "dead",
        "consumers",
        "acks/s",
        "in/s",
        "oldest"
    );
    for group in &stats.groups {
        table.push_str(&format!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            group.group,
            group.ready,
            optional(group.unacked),
            group.retrying,
            group.backlog,
            group.open_dead_letters,
            group.consumers,
            rate(group.ack_rate),
            rate(group.publish_rate),
            age(group.oldest_waiting_seconds),
        ));
    }
    if let Some(reason) = &stats.management_unavailable {
        table.push_str(&format!(
            "unacked and rates unavailable: {reason}; backlog counts ready + retrying only\n"
        ));
    }
    table
}

/// Sets the queue gauges (see [`crate::metrics`]) from `stats`.
pub fn record(stats: &Stats) {
    for group in &stats.groups {
        crate::metrics::queue_figures(group);
    }
}

/// Samples the figures into the gauges every `period` until `shutdown`
/// (`consumers run` does this, so that an autoscaler can read them from
/// `/metrics`). A failed sample is skipped; the connection is reopened.
pub async fn sample_every(
    settings: shared::settings::Settings,
    topology: Topology,
    pool: PgPool,
    period: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let management = Management::new(&settings);
    let mut connection: Option<lapin::Connection> = None;
    let mut ticks = tokio::time::interval(period);
    while shutdown.run_until_cancelled(ticks.tick()).await.is_some() {
        if connection
            .as_ref()
            .is_none_or(|connection| !connection.status().connected())
        {
            connection = shared::broker::connect_once(&settings, "switchyard-stats-sampler")
                .await
                .ok();
        }
        let Some(open) = &connection else {
            continue;
        };
        match collect(open, &topology, &pool, &management).await {
            Ok(stats) => record(&stats),
            Err(error) => {
                tracing::debug!(%error, "queue figures not sampled");
                connection = None;
            }
        }
    }
    if let Some(connection) = connection {
        let _ = connection.close(200, "OK".into()).await;
    }
}
