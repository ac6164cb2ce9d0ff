//! The retry policy: exponential backoff with jitter, from the `backoff` crate.
//!
//! Used for transient handler failures (the delay is then held by the broker)
//! and for reconnecting to the broker and the database.

use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;

/// How often and how far apart a failed operation is tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Delay before the second attempt (before jitter).
    pub initial_delay: Duration,
    /// Longest delay (before jitter).
    pub max_delay: Duration,
    /// Each delay is multiplied by this after every attempt.
    pub multiplier: f64,
    /// Delays are spread uniformly by ± this fraction.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// A `backoff` schedule for this policy with no overall time limit.
    pub fn backoff(&self) -> ExponentialBackoff {
        ExponentialBackoff {
            current_interval: self.initial_delay,
            initial_interval: self.initial_delay,
            randomization_factor: self.jitter,
            multiplier: self.multiplier,
            max_interval: self.max_delay,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        }
    }

    /// A schedule of pauses with this policy's growth and jitter, from
    /// `initial` up to `longest`, without end: how long to wait between
    /// tries of work that must not be given up (a held batch, a probe).
    pub fn pauses(&self, initial: Duration, longest: Duration) -> ExponentialBackoff {
        ExponentialBackoff {
            current_interval: initial,
            initial_interval: initial,
            max_interval: longest,
            ..self.backoff()
        }
    }

    /// The jittered delay to wait after failed attempt number `attempt`
    /// (1-based), or `None` when the attempt budget is spent.
    pub fn delay_after_attempt(&self, attempt: u32) -> Option<Duration> {
        if attempt == 0 || attempt >= self.max_attempts {
            return None;
        }
        let mut schedule = self.backoff();
        (1..attempt).for_each(|_| {
            schedule.next_backoff();
        });
        schedule.next_backoff()
    }

    /// The un-jittered delay after attempt `attempt`: the middle of its range.
    pub fn nominal_delay_after_attempt(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.powi(attempt.saturating_sub(1) as i32);
        self.initial_delay.mul_f64(factor).min(self.max_delay)
    }
}
