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
    /// Events applied per second in each [`SLOT_SECONDS`] slot of the
    /// last [`THROUGHPUT_SLOTS`] slots, oldest first, the last one ending
    /// at the start of the slot under way (from `group_activity`, which
    /// the workers fill every few seconds).
    pub throughput: Vec<f64>,
    /// End-to-end lag (event time to commit) of the events applied in the
    /// last [`LAG_WINDOW_SECONDS`]: the median, within 19 % (see
    /// [`runtime::positions::lag_quantile`]); absent when none was
    /// applied.
    pub lag_p50_seconds: Option<f64>,
    /// The same, 99th percentile.
    pub lag_p99_seconds: Option<f64>,
}

/// Width of a throughput slot.
pub const SLOT_SECONDS: u32 = 15;
/// Throughput slots reported: ten minutes.
pub const THROUGHPUT_SLOTS: usize = 40;
/// How far back the lag percentiles look.
pub const LAG_WINDOW_SECONDS: u32 = 300;

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
    let lag_counts: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT consumer_group, (bucket.i - 1)::int4, sum(bucket.count)::int8 \
         FROM group_activity, unnest(lag_buckets) WITH ORDINALITY AS bucket(count, i) \
         WHERE sampled_at > now() - make_interval(secs => $1) \
         GROUP BY 1, 2",
    )
    .bind(f64::from(LAG_WINDOW_SECONDS))
    .fetch_all(pool)
    .await?;
    let applied: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT consumer_group, floor(extract(epoch FROM now() - sampled_at) / $1)::int8, \
                sum(applied)::int8 \
         FROM group_activity \
         WHERE sampled_at > now() - make_interval(secs => $1 * ($2 + 1)) \
         GROUP BY 1, 2",
    )
    .bind(f64::from(SLOT_SECONDS))
    .bind(THROUGHPUT_SLOTS as f64)
    .fetch_all(pool)
    .await?;
    let lag = |group: ConsumerGroup, quantile: f64| {
        let mut buckets = vec![0_i64; runtime::positions::LAG_BUCKETS];
        for (_, bucket, count) in lag_counts
            .iter()
            .filter(|(name, _, _)| name == group.as_str())
        {
            if let Some(slot) = usize::try_from(*bucket)
                .ok()
                .and_then(|b| buckets.get_mut(b))
            {
                *slot += count;
            }
        }
        runtime::positions::lag_quantile(&buckets, quantile)
    };
    let throughput = |group: ConsumerGroup| {
        // Slot 0 is under way (workers report every few seconds): left out.
        (1..=THROUGHPUT_SLOTS as i64)
            .rev()
            .map(|ago| {
                applied
                    .iter()
                    .filter(|(name, slot, _)| name == group.as_str() && *slot == ago)
                    .map(|(_, _, count)| *count as f64)
                    .sum::<f64>()
                    / f64::from(SLOT_SECONDS)
            })
            .map(non_negative)
            .collect::<Vec<f64>>()
    };
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
                .map(|info| non_negative(info.message_stats.ack_details.rate)),
            publish_rate: info
                .as_ref()
                .map(|info| non_negative(info.message_stats.publish_details.rate)),
            backlog: ready + retrying + unacked.unwrap_or(0),
            oldest_waiting_seconds: if ready == 0 {
                Some(0.0)
            } else {
                positions
                    .iter()
                    .find(|(group, _)| group == depth.group.as_str())
                    .map(|(_, age)| age.round())
            },
            throughput: throughput(depth.group),
            lag_p50_seconds: lag(depth.group, 0.50),
            lag_p99_seconds: lag(depth.group, 0.99),
        });
    }
    Ok(Stats {
        at: Utc::now(),
        groups,
        management_unavailable: unavailable,
    })
}

/// A rate or age as shown: never below zero, and never `-0.0` (the
/// broker's rates and a float sum can be a negative zero, which JSON then
/// prints as such).
fn non_negative(value: f64) -> f64 {
    if value > 0.0 { value } else { 0.0 }
}

/// The figures as an aligned table, one line per group, and a line saying
/// why some are missing.
pub fn table(stats: &Stats) -> String {
    let optional = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let rate = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let age = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}s"));
    let lag = |value: Option<f64>| {
        value.map_or_else(
            || "-".to_owned(),
            |v| {
                if v < 1.0 {
                    format!("{:.0}ms", v * 1000.0)
                } else {
                    format!("{v:.1}s")
                }
            },
        )
    };
    let mut table = format!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "group",
        "ready",
        "unacked",
        "retrying",
        "backlog",
        "dead",
        "consumers",
        "acks/s",
        "in/s",
        "oldest",
        "applied/s",
        "lag p50",
        "lag p99"
    );
    for group in &stats.groups {
        table.push_str(&format!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
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
            rate(group.throughput.last().copied()),
            lag(group.lag_p50_seconds),
            lag(group.lag_p99_seconds),
        ));
    }
    if let Some(reason) = &stats.management_unavailable {
        table.push_str(&format!(
            "unacked and rates unavailable: {reason}; backlog counts ready + retrying only\n"
        ));
    }
    table
}

/// Sets the queue gauges (named in `runtime::metrics`) from `stats`.
pub fn record(stats: &Stats) {
    use runtime::metrics as m;
    for figures in &stats.groups {
        let group = figures.group.as_str();
        metrics::gauge!(m::QUEUE_READY, "group" => group).set(figures.ready as f64);
        metrics::gauge!(m::QUEUE_RETRYING, "group" => group).set(figures.retrying as f64);
        metrics::gauge!(m::QUEUE_BACKLOG, "group" => group).set(figures.backlog as f64);
        metrics::gauge!(m::QUEUE_CONSUMERS, "group" => group).set(figures.consumers as f64);
        metrics::gauge!(m::DEAD_LETTERS_OPEN, "group" => group)
            .set(figures.open_dead_letters as f64);
        if let Some(unacked) = figures.unacked {
            metrics::gauge!(m::QUEUE_UNACKED, "group" => group).set(unacked as f64);
        }
        if let Some(rate) = figures.ack_rate {
            metrics::gauge!(m::QUEUE_ACK_RATE, "group" => group).set(rate);
        }
        if let Some(age) = figures.oldest_waiting_seconds {
            metrics::gauge!(m::QUEUE_OLDEST_WAITING_SECONDS, "group" => group).set(age);
        }
    }
}

/// Longest one reading of the figures may take (`consumers stats`, and each
/// sample of `consumers run`): a broker, management API or database that
/// stops answering fails it instead of holding it.
pub const STATS_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// Samples the figures into the gauges every `period` until `shutdown`
/// (`consumers run` does this, so that an autoscaler can read them from
/// `/metrics`). A sample that fails or takes longer than [`STATS_PATIENCE`]
/// is skipped and counted, logged as a warning when it is the first of a
/// run of failures; the broker connection is reopened. The gauges keep
/// their last values meanwhile, and the sampled-at gauge says how old they
/// are.
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
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
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
        let reading = collect(open, &topology, &pool, &management);
        let sampled = match tokio::time::timeout(STATS_PATIENCE, reading).await {
            Ok(sampled) => sampled,
            Err(_) => Err(anyhow::anyhow!(
                "not read within {} s: the broker, its management API or the database does not answer",
                STATS_PATIENCE.as_secs()
            )),
        };
        match sampled {
            Ok(stats) => {
                record(&stats);
                runtime::metrics::queue_figures_sampled(stats.at);
                failing = false;
            }
            Err(error) => {
                runtime::metrics::queue_sample_failed();
                if failing {
                    tracing::debug!(%error, "queue figures not sampled");
                } else {
                    tracing::warn!(%error, "queue figures not sampled; the gauges keep their last values until a sample succeeds");
                }
                failing = true;
                connection = None;
            }
        }
    }
    if let Some(connection) = connection {
        let _ = connection.close(200, "OK".into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_zero_or_negative_rate_reads_as_zero() {
        assert_eq!(serde_json::to_string(&non_negative(-0.0)).unwrap(), "0.0");
        assert_eq!(non_negative(-0.4), 0.0);
        assert_eq!(non_negative(f64::NAN), 0.0);
        assert_eq!(non_negative(2.5), 2.5);
    }
}
