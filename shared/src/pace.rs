//! Pacing work to a rate: `governor`'s GCRA, waited on with tokio's timer.
//! The load generator paces the events it sends and a replay the dead
//! letters it republishes with it.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// A rate, and how much work may go at once after a pause (a run that
/// fell behind catches up by at most the burst).
#[derive(Debug)]
pub struct Pace {
    limiter: DefaultDirectRateLimiter,
    burst: NonZeroU32,
}

/// Fewest units per second a [`Pace`] takes (one per 1,000 s).
pub const MIN_RATE: f64 = 0.001;
/// Most units per second a [`Pace`] takes.
pub const MAX_RATE: f64 = 1e9;

impl Pace {
    /// `rate` units a second (bounded to [`MIN_RATE`]..=[`MAX_RATE`]; not
    /// a number reads as the least), up to `burst` at once (at least 1).
    pub fn per_second(rate: f64, burst: u32) -> Self {
        let rate = if rate.is_nan() {
            MIN_RATE
        } else {
            rate.clamp(MIN_RATE, MAX_RATE)
        };
        let period = Duration::try_from_secs_f64(1.0 / rate)
            .ok()
            .filter(|period| !period.is_zero())
            .unwrap_or(Duration::from_nanos(1));
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Self {
            limiter: RateLimiter::direct(quota),
            burst,
        }
    }

    /// Waits until `units` more may go (more than the burst count as the
    /// burst: a batch larger than the burst waits as one burst).
    pub async fn take(&self, units: u32) {
        let units = NonZeroU32::new(units.min(self.burst.get())).unwrap_or(NonZeroU32::MIN);
        let clock = DefaultClock::default();
        loop {
            match self.limiter.check_n(units) {
                Ok(Ok(())) | Err(_) => return,
                Ok(Err(not_until)) => {
                    tokio::time::sleep(not_until.wait_time_from(clock.now())).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pace_lets_a_burst_go_at_once_then_holds_to_its_rate() {
        let pace = Pace::per_second(50.0, 5);
        let five = NonZeroU32::new(5).expect("five");
        assert_eq!(
            pace.limiter.check_n(five),
            Ok(Ok(())),
            "a fresh pace holds a burst"
        );
        assert!(pace.limiter.check().is_err(), "the burst is spent");
        let started = std::time::Instant::now();
        for _ in 0..10 {
            pace.take(1).await;
        }
        // Ten more at 50 a second take about 200 ms: never much less.
        let paced = started.elapsed();
        assert!(
            paced >= Duration::from_millis(170),
            "ten paced units took {paced:?}"
        );
    }

    #[test]
    fn any_rate_makes_a_pace() {
        for rate in [f64::NAN, -1.0, 0.0, 1e-300, 0.01, 1e12, f64::INFINITY] {
            let _ = Pace::per_second(rate, 0);
        }
    }
}
