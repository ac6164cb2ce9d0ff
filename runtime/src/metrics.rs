//! Every metric the workers emit, recorded from this one place, and the
//! Prometheus recorder that renders them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use shared::groups::ConsumerGroup;

/// Events by group, type and outcome (`applied`, `duplicate`, `retried`, `dead_lettered`).
pub const EVENTS_TOTAL: &str = "switchyard_events_total";
/// Committed batches by group and path (`set_wise`: one call of the
/// group's function; `event_by_event`: redone with a savepoint per event).
pub const BATCHES_TOTAL: &str = "switchyard_batches_total";
/// Deliveries per committed batch.
pub const BATCH_SIZE: &str = shared::metrics_recorder::BATCH_SIZE;
/// Time spent applying a batch's events: before the commit, or including
/// it when the batch was one autocommit statement.
pub const HANDLER_SECONDS: &str = "switchyard_handler_seconds";
/// Time the commit of a batch took.
pub const COMMIT_SECONDS: &str = "switchyard_commit_seconds";
/// Deliveries taken and not yet settled.
pub const IN_FLIGHT: &str = "switchyard_in_flight";
/// Times a batch was held (not applied, tried again after a pause) because
/// the database failed, by group.
pub const BATCHES_HELD_TOTAL: &str = "switchyard_batches_held_total";
/// Retries the broker refused to take into a wait queue (held and tried
/// again, never requeued).
pub const RETRIES_HELD_TOTAL: &str = "switchyard_retries_held_total";
/// Broker dead letters the database would not store (held by the mover
/// and tried again, never requeued).
pub const DEAD_LETTERS_HELD_TOTAL: &str = "switchyard_dead_letters_held_total";
/// Times the workers opened a new broker connection after lapin's own
/// recovery gave up.
pub const BROKER_RECONNECTS_TOTAL: &str = "switchyard_broker_reconnects_total";
/// 1 while this process holds the group's lease (consumes it), else 0.
pub const GROUP_LEASE: &str = "switchyard_group_lease";
/// Threads of the async runtime that runs the workers (`--runtime-threads`).
pub const RUNTIME_THREADS: &str = "switchyard_runtime_threads";
/// Commit time minus event time.
pub const LAG_SECONDS: &str = shared::metrics_recorder::LAG_SECONDS;

/// Installs the process-wide Prometheus recorder (once; shared with the
/// gateway when both run in one process) and returns its handle.
pub fn install_recorder() -> PrometheusHandle {
    shared::metrics_recorder::install()
}

/// How many threads the runtime running the workers has.
pub fn runtime_threads(threads: usize) {
    metrics::gauge!(RUNTIME_THREADS).set(threads as f64);
}

/// Whether this process holds `group`'s lease.
pub fn group_lease(group: ConsumerGroup, held: bool) {
    metrics::gauge!(GROUP_LEASE, "group" => group.as_str()).set(if held { 1.0 } else { 0.0 });
}

/// A committed batch's events: each one's type and outcome, and for each
/// one applied its lag (commit time minus event time). One registry lookup
/// per distinct (type, outcome) and one for the lag histogram, not one per
/// event.
pub fn batch_events(
    group: ConsumerGroup,
    events: impl IntoIterator<Item = (&'static str, &'static str, Option<Duration>)>,
) {
    let lag_seconds = metrics::histogram!(LAG_SECONDS, "group" => group.as_str());
    let mut counts: Vec<((&'static str, &'static str), u64)> = Vec::new();
    for (event_type, outcome, lag) in events {
        if let Some(lag) = lag {
            lag_seconds.record(lag.as_secs_f64());
            shared::metrics_recorder::tally_lag(lag.as_secs_f64());
        }
        match counts
            .iter_mut()
            .find(|(labels, _)| *labels == (event_type, outcome))
        {
            Some((_, count)) => *count += 1,
            None => counts.push(((event_type, outcome), 1)),
        }
    }
    for ((event_type, outcome), count) in counts {
        metrics::counter!(EVENTS_TOTAL, "group" => group.as_str(), "type" => event_type, "outcome" => outcome)
            .increment(count);
    }
}

/// How a committed batch was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchPath {
    /// The whole batch in one call of the group's function (one round
    /// trip); dead letters of its failures, if any, in one more transaction.
    SetWise,
    /// Redone with a savepoint per event: poison, or the set-wise call
    /// raised (a constraint, bad data).
    EventByEvent,
}

impl BatchPath {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchPath::SetWise => "set_wise",
            BatchPath::EventByEvent => "event_by_event",
        }
    }
}

/// Batches this process committed, per group (in [`ConsumerGroup::ALL`]'s
/// order) and path: the typed tally the end-of-run reports read (the
/// recorder's counter of the same is for `/metrics`).
static BATCHES: [[AtomicU64; 2]; 3] = [const { [const { AtomicU64::new(0) }; 2] }; 3];

fn batch_tally(group: ConsumerGroup, path: BatchPath) -> &'static AtomicU64 {
    let group = ConsumerGroup::ALL
        .iter()
        .position(|each| *each == group)
        .unwrap_or_default();
    &BATCHES[group][path as usize]
}

/// Batches of `group` this process committed along `path` so far.
pub fn batches_committed(group: ConsumerGroup, path: BatchPath) -> u64 {
    batch_tally(group, path).load(Ordering::Relaxed)
}

/// How long a committed batch took, and along which path.
#[derive(Debug, Clone, Copy)]
pub struct BatchTiming {
    /// The path.
    pub path: BatchPath,
    /// Applying (for the set-wise path, including its commit).
    pub handling: Duration,
    /// The commit, when it was a step of its own.
    pub commit: Option<Duration>,
}

/// A committed batch: its path, its size, how long applying it took and,
/// when the commit was a step of its own, how long committing took (a batch
/// applied in one autocommit statement has its commit inside `handling`).
pub fn batch_committed(group: ConsumerGroup, size: usize, timing: BatchTiming) {
    metrics::counter!(BATCHES_TOTAL, "group" => group.as_str(), "path" => timing.path.as_str())
        .increment(1);
    batch_tally(group, timing.path).fetch_add(1, Ordering::Relaxed);
    metrics::histogram!(BATCH_SIZE, "group" => group.as_str()).record(size as f64);
    metrics::histogram!(HANDLER_SECONDS, "group" => group.as_str())
        .record(timing.handling.as_secs_f64());
    if let Some(commit) = timing.commit {
        metrics::histogram!(COMMIT_SECONDS, "group" => group.as_str()).record(commit.as_secs_f64());
    }
}

/// A batch held because the database failed (it will be tried again).
pub fn batch_held(group: ConsumerGroup) {
    metrics::counter!(BATCHES_HELD_TOTAL, "group" => group.as_str()).increment(1);
}

/// A retry the broker would not take (held, and tried again).
pub fn retry_held(group: ConsumerGroup) {
    metrics::counter!(RETRIES_HELD_TOTAL, "group" => group.as_str()).increment(1);
}

/// A broker dead letter the database would not store (held, and tried
/// again).
pub fn dead_letter_held(group: ConsumerGroup) {
    metrics::counter!(DEAD_LETTERS_HELD_TOTAL, "group" => group.as_str()).increment(1);
}

/// The workers reconnected to the broker.
pub fn broker_reconnect() {
    metrics::counter!(BROKER_RECONNECTS_TOTAL).increment(1);
}

/// Deliveries taken (positive) or settled (negative).
pub fn in_flight(group: ConsumerGroup, change: f64) {
    metrics::gauge!(IN_FLIGHT, "group" => group.as_str()).increment(change);
}

/// Ready messages on a group's work queue (sampled).
pub const QUEUE_READY: &str = "switchyard_queue_ready";
/// Messages delivered to a group's workers and not yet acknowledged
/// (sampled; needs the management API).
pub const QUEUE_UNACKED: &str = "switchyard_queue_unacked";
/// Messages waiting in a group's retry queues (sampled).
pub const QUEUE_RETRYING: &str = "switchyard_queue_retrying";
/// Ready + unacknowledged + retrying: what to scale a group's workers on.
pub const QUEUE_BACKLOG: &str = "switchyard_queue_backlog";
/// Consumers on a group's work queue (sampled).
pub const QUEUE_CONSUMERS: &str = "switchyard_queue_consumers";
/// Acknowledgements per second on a group's work queue (sampled; needs
/// the management API).
pub const QUEUE_ACK_RATE: &str = "switchyard_queue_ack_rate";
/// Seconds the oldest ready event of a group has waited, at most (sampled;
/// see `consumers::stats`).
pub const QUEUE_OLDEST_WAITING_SECONDS: &str = "switchyard_queue_oldest_waiting_seconds";
/// Open dead letters of a group in the store (sampled).
pub const DEAD_LETTERS_OPEN: &str = "switchyard_dead_letters_open";

/// When the queue figures were last sampled, in seconds since the Unix
/// epoch: the sampled gauges keep their last values while sampling fails,
/// so alert (and distrust a scaler's input) when this falls behind.
pub const QUEUE_FIGURES_SAMPLED: &str = "switchyard_queue_figures_sampled_timestamp_seconds";
/// Samples of the queue figures that failed or were not read in time.
pub const QUEUE_SAMPLES_FAILED_TOTAL: &str = "switchyard_queue_samples_failed_total";

/// The queue figures were sampled now.
pub fn queue_figures_sampled(at: chrono::DateTime<chrono::Utc>) {
    metrics::gauge!(QUEUE_FIGURES_SAMPLED).set(at.timestamp_millis() as f64 / 1_000.0);
}

/// A sample of the queue figures failed or was not read in time.
pub fn queue_sample_failed() {
    metrics::counter!(QUEUE_SAMPLES_FAILED_TOTAL).increment(1);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shared::groups::ConsumerGroup;

    use super::{BatchPath, BatchTiming, batches_committed};

    #[test]
    fn batches_committed_reads_back_what_was_counted() {
        let timing = |path| BatchTiming {
            path,
            handling: Duration::from_millis(1),
            commit: None,
        };
        let counts = || {
            [
                batches_committed(ConsumerGroup::Inventory, BatchPath::SetWise),
                batches_committed(ConsumerGroup::Sales, BatchPath::EventByEvent),
                batches_committed(ConsumerGroup::Orders, BatchPath::SetWise),
            ]
        };
        let before = counts();
        super::batch_committed(ConsumerGroup::Inventory, 3, timing(BatchPath::SetWise));
        super::batch_committed(ConsumerGroup::Inventory, 2, timing(BatchPath::SetWise));
        super::batch_committed(ConsumerGroup::Sales, 1, timing(BatchPath::EventByEvent));
        let after = counts();
        let added: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        assert_eq!(added, [2, 1, 0]);
    }
}
