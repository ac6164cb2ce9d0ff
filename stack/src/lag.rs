//! End-to-end lag (commit time minus event time) over the last interval,
//! from the workers' typed lag tally in this process
//! (`shared::metrics_recorder::lag_tally`, the same buckets as the
//! `/metrics` histogram).

use std::collections::BTreeMap;

/// Cumulative counts per bucket bound (microseconds; `u64::MAX` for the
/// last, unbounded one), over every group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LagSnapshot(BTreeMap<u64, f64>);

impl LagSnapshot {
    /// The tally now.
    pub fn take() -> Self {
        Self::from_cumulative(shared::metrics_recorder::lag_tally())
    }

    /// From cumulative counts per bucket bound in seconds.
    pub fn from_cumulative(buckets: impl IntoIterator<Item = (f64, u64)>) -> Self {
        Self(
            buckets
                .into_iter()
                .map(|(bound, count)| {
                    let key = if bound.is_finite() {
                        (bound * 1e6).round() as u64
                    } else {
                        u64::MAX
                    };
                    (key, count as f64)
                })
                .collect(),
        )
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
        let earlier = LagSnapshot::from_cumulative([(0.005, 10), (0.1, 10), (f64::INFINITY, 10)]);
        let now = LagSnapshot::from_cumulative([(0.005, 10), (0.1, 19), (f64::INFINITY, 20)]);
        assert_eq!(now.quantile_since(&earlier, 0.5), Some(100.0));
        assert_eq!(now.quantile_since(&earlier, 0.99), Some(f64::INFINITY));
        assert_eq!(earlier.quantile_since(&earlier, 0.5), None);
    }

    #[test]
    fn the_tally_counts_each_lag_in_its_bucket() {
        let before = LagSnapshot::take();
        shared::metrics_recorder::tally_lag(0.000_2);
        shared::metrics_recorder::tally_lag(0.003);
        shared::metrics_recorder::tally_lag(1_000.0);
        let after = LagSnapshot::take();
        assert_eq!(after.quantile_since(&before, 0.3), Some(0.5));
        assert_eq!(after.quantile_since(&before, 0.6), Some(3.0));
        assert_eq!(after.quantile_since(&before, 1.0), Some(f64::INFINITY));
    }
}
