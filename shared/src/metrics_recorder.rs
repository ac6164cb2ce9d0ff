//! The one Prometheus recorder of a process, shared by the workers and the
//! gateway (they may run in one process), with the histogram buckets of
//! every Switchyard metric.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram of deliveries per committed batch (the workers).
pub const BATCH_SIZE: &str = "switchyard_batch_size";
/// Histogram of commit time minus event time (the workers).
pub const LAG_SECONDS: &str = "switchyard_end_to_end_lag_seconds";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its
/// handle: every `*_seconds` histogram gets latency buckets, [`LAG_SECONDS`]
/// [`lag_buckets`], [`BATCH_SIZE`] powers of two.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
            let lag_buckets = lag_buckets();
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LAG_SECONDS.to_owned()), &lag_buckets)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &buckets)
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.to_owned()), &sizes)
                });
            match builder.map(|builder| builder.build_recorder()) {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    // Another recorder may exist (tests); this handle then renders nothing.
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                }
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// The bounds of [`LAG_SECONDS`], in seconds: half-millisecond steps up to
/// 20 ms, then 2.5 ms steps to 50 ms, 10 ms steps to 250 ms and 50 ms
/// steps to 500 ms, so that a p99 between 20 and 500 ms is read to within
/// a few per cent instead of being interpolated across a bucket twice its
/// size; coarse beyond. (Counted in tenths of a millisecond and divided
/// once, so the bounds render as the decimals they are.)
pub fn lag_buckets() -> Vec<f64> {
    let tenths = (5..=200)
        .step_by(5)
        .chain((225..=500).step_by(25))
        .chain((600..=2_500).step_by(100))
        .chain((3_000..=5_000).step_by(500));
    tenths
        .map(|tenth: u32| f64::from(tenth) / 10_000.0)
        .chain([1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
        .collect()
}

/// This process's lag counts per [`lag_buckets`] bound (and one past the
/// last): what reports in this process read (the main job's progress
/// lines), typed, instead of parsing the recorder's rendering, which is
/// for `/metrics`.
static LAG_COUNTS: OnceLock<(Vec<f64>, Vec<AtomicU64>)> = OnceLock::new();

fn lag_counts() -> &'static (Vec<f64>, Vec<AtomicU64>) {
    LAG_COUNTS.get_or_init(|| {
        let bounds = lag_buckets();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        (bounds, counts)
    })
}

/// Counts one lag of `seconds` in this process's tally (the workers call
/// it beside the [`LAG_SECONDS`] histogram).
pub fn tally_lag(seconds: f64) {
    let (bounds, counts) = lag_counts();
    let bucket = bounds.partition_point(|bound| *bound < seconds);
    counts[bucket].fetch_add(1, Ordering::Relaxed);
}

/// This process's lags so far: per bucket, its upper bound in seconds
/// (`f64::INFINITY` for the last) and the count at or below it
/// (cumulative, as a Prometheus histogram's buckets).
pub fn lag_tally() -> Vec<(f64, u64)> {
    let (bounds, counts) = lag_counts();
    let mut cumulative = 0;
    bounds
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(counts)
        .map(|(bound, count)| {
            cumulative += count.load(Ordering::Relaxed);
            (bound, cumulative)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::lag_buckets;

    #[test]
    fn lag_bounds_ascend_in_fine_steps_and_render_as_short_decimals() {
        let bounds = lag_buckets();
        assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(bounds.first(), Some(&0.000_5));
        assert_eq!(bounds.last(), Some(&300.0));
        // No step between 2 ms and 500 ms wider than a fifth of its bound.
        for pair in bounds
            .windows(2)
            .filter(|pair| pair[0] >= 0.002 && pair[1] <= 0.5)
        {
            assert!(pair[1] - pair[0] <= pair[1] / 5.0 + 1e-12, "{pair:?}");
        }
        for bound in [0.0275, 0.05, 0.06, 0.25, 0.3, 0.5] {
            assert!(bounds.contains(&bound), "{bound}");
        }
        assert!(
            bounds.iter().all(|bound| bound.to_string().len() <= 6),
            "{bounds:?}"
        );
    }
}
