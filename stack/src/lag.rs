//! End-to-end lag (commit time minus event time) over the last interval,
//! from the workers' histogram in the process's Prometheus recorder.

use std::collections::BTreeMap;

use metrics_exporter_prometheus::PrometheusHandle;
use shared::metrics_recorder::LAG_SECONDS;

/// Cumulative counts per bucket bound (seconds), summed over groups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LagSnapshot(BTreeMap<u64, f64>);

impl LagSnapshot {
    /// The histogram as rendered now.
    pub fn take(metrics: &PrometheusHandle) -> Self {
        Self::parse(&metrics.render())
    }

    /// Reads `…_lag_seconds_bucket{…,le="0.005"} 12` lines (bounds kept
    /// in microseconds so they can be map keys; `+Inf` as `u64::MAX`).
    pub fn parse(rendered: &str) -> Self {
        let name = format!("{LAG_SECONDS}_bucket");
        let mut buckets = BTreeMap::new();
        for sample in shared::prometheus_text::samples(rendered, &name) {
            let Some(bound) = sample.label("le") else {
                continue;
            };
            let count = sample.value;
            let key = if bound == "+Inf" {
                u64::MAX
            } else {
                bound
                    .parse::<f64>()
                    .map_or(u64::MAX, |seconds| (seconds * 1e6).round() as u64)
            };
            *buckets.entry(key).or_insert(0.0) += count;
        }
        Self(buckets)
    }

    /// The `quantile` of the events recorded between `earlier` and this
    /// snapshot, as the upper bound of its bucket in milliseconds; `None`
    /// when nothing was recorded.
    pub fn quantile_since(&self, earlier: &LagSnapshot, quantile: f64) -> Option<f64> {
        let counts: Vec<(u64, f64)> = self
            .0
            .iter()
            .map(|(bound, count)| (*bound, count - earlier.0.get(bound).copied().unwrap_or(0.0)))
            .collect();
        let total = counts.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let bound = counts
            .iter()
            .find(|(_, cumulative)| *cumulative >= total * quantile)?
            .0;
        Some(if bound == u64::MAX {
            f64::INFINITY
        } else {
            bound as f64 / 1e3
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_interval_only() {
        let line = |group: &str, le: &str, count: u32| {
            format!("{LAG_SECONDS}_bucket{{group=\"{group}\",le=\"{le}\"}} {count}\n")
        };
        let earlier = LagSnapshot::parse(
            &[
                line("orders", "0.005", 10),
                line("orders", "0.1", 10),
                line("orders", "+Inf", 10),
            ]
            .concat(),
        );
        let now = LagSnapshot::parse(
            &[
                line("orders", "0.005", 10),
                line("orders", "0.1", 19),
                line("orders", "+Inf", 20),
                line("sales", "0.005", 0),
                line("sales", "0.1", 0),
                line("sales", "+Inf", 0),
            ]
            .concat(),
        );
        assert_eq!(now.quantile_since(&earlier, 0.5), Some(100.0));
        assert_eq!(now.quantile_since(&earlier, 0.99), Some(f64::INFINITY));
        assert_eq!(earlier.quantile_since(&earlier, 0.5), None);
    }
}
