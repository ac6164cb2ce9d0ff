//! The one Prometheus recorder of a process, shared by the workers and the
//! gateway (they may run in one process), with the histogram buckets of
//! every Switchyard metric.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram of deliveries per committed batch (the workers).
pub const BATCH_SIZE: &str = "switchyard_batch_size";
/// Histogram of commit time minus event time (the workers).
pub const LAG_SECONDS: &str = "switchyard_end_to_end_lag_seconds";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its
/// handle: every `*_seconds` histogram gets latency buckets, [`LAG_SECONDS`]
/// half-millisecond steps, [`BATCH_SIZE`] powers of two.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
            // Half-millisecond steps up to 20 ms: the latency target is 10 ms at p99.
            let lag_buckets: Vec<f64> = (1..=40)
                .map(|step| f64::from(step) * 0.000_5)
                .chain([
                    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                ])
                .collect();
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
