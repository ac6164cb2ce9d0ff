//! Percentiles of latencies: of a set of samples, or recorded into a
//! histogram of fixed size for runs of any length.

use std::fmt;
use std::time::Duration;

/// Median, tail percentiles and maximum of some latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: usize,
    /// 50th percentile.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl LatencySummary {
    /// Summarises `samples` (nearest-rank percentiles); `None` when empty.
    pub fn from_samples(mut samples: Vec<Duration>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |percentile: f64| {
            let index = ((percentile / 100.0) * samples.len() as f64).ceil() as usize;
            samples[index.clamp(1, samples.len()) - 1]
        };
        Some(Self {
            count: samples.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: samples[samples.len() - 1],
        })
    }
}

/// Longest latency a [`LatencyRecorder`] tells apart (longer ones count as
/// this), in microseconds: an hour.
const LONGEST_MICROS: u64 = 3_600_000_000;

/// Latencies recorded into a histogram (1 µs to 1 h, three significant
/// digits: each percentile within 0.1 %). Its memory is the same after a
/// minute or a week of traffic, unlike a list of every sample.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    histogram: hdrhistogram::Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        // Constant bounds that hdrhistogram accepts (low 1, high ≥ 2 × low,
        // precision ≤ 5).
        let histogram = hdrhistogram::Histogram::new_with_bounds(1, LONGEST_MICROS, 3)
            .unwrap_or_else(|error| unreachable!("histogram bounds: {error}"));
        Self { histogram }
    }
}

impl LatencyRecorder {
    /// Counts one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram
            .saturating_record(micros.clamp(1, LONGEST_MICROS));
    }

    /// Adds what `other` recorded.
    pub fn absorb(&mut self, other: &Self) {
        // Both have the same bounds, so the values always fit.
        let _ = self.histogram.add(&other.histogram);
    }

    /// The percentiles of what was recorded; `None` when nothing was.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.histogram.is_empty() {
            return None;
        }
        let at = |quantile: f64| Duration::from_micros(self.histogram.value_at_quantile(quantile));
        Some(LatencySummary {
            count: usize::try_from(self.histogram.len()).unwrap_or(usize::MAX),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: Duration::from_micros(self.histogram.max()),
        })
    }
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |duration: Duration| duration.as_secs_f64() * 1_000.0;
        write!(
            f,
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_hundred() {
        let samples = (1..=100).map(Duration::from_millis).collect();
        let summary = LatencySummary::from_samples(samples).unwrap();
        assert_eq!(summary.p50, Duration::from_millis(50));
        assert_eq!(summary.p90, Duration::from_millis(90));
        assert_eq!(summary.p99, Duration::from_millis(99));
        assert_eq!(summary.max, Duration::from_millis(100));
        assert_eq!(summary.count, 100);
    }

    #[test]
    fn the_recorder_agrees_with_the_samples_within_its_precision() {
        let samples: Vec<Duration> = (1..=10_000)
            .map(|index| Duration::from_micros(index * 37 % 250_000 + 100))
            .collect();
        let exact = LatencySummary::from_samples(samples.clone()).unwrap();
        let (mut left, mut right) = (LatencyRecorder::default(), LatencyRecorder::default());
        for (index, sample) in samples.iter().enumerate() {
            if index % 2 == 0 {
                left.record(*sample);
            } else {
                right.record(*sample);
            }
        }
        left.absorb(&right);
        let recorded = left.summary().unwrap();
        assert_eq!(recorded.count, exact.count);
        for (recorded, exact) in [
            (recorded.p50, exact.p50),
            (recorded.p90, exact.p90),
            (recorded.p99, exact.p99),
            (recorded.max, exact.max),
        ] {
            let error = recorded.as_secs_f64() / exact.as_secs_f64() - 1.0;
            assert!(error.abs() < 0.002, "{recorded:?} against {exact:?}");
        }
    }

    #[test]
    fn the_recorder_keeps_extremes_in_range() {
        let mut recorder = LatencyRecorder::default();
        assert_eq!(recorder.summary(), None);
        recorder.record(Duration::ZERO);
        recorder.record(Duration::from_secs(10 * 3_600));
        let summary = recorder.summary().unwrap();
        assert_eq!(summary.count, 2);
        assert!(summary.p50 <= Duration::from_micros(1));
        assert!(summary.max >= Duration::from_secs(3_599));
    }

    #[test]
    fn no_samples_no_summary() {
        assert_eq!(LatencySummary::from_samples(Vec::new()), None);
    }
}
