//! The retry policy: exponential backoff with jitter, from the `backoff`
//! crate — the one place every retry, pause and reconnect takes its
//! schedule from.
//!
//! - Transient handler failures: [`RetryPolicy::delay_after_attempt`] (the
//!   delay is then held by the broker).
//! - Start-up, waiting for the broker or the database:
//!   [`RetryPolicy::retry_for`].
//! - Work that must not be given up (a held batch, a retry or dead letter
//!   the broker or database would not take yet): [`Pauses`].
//! - lapin's own reconnection: [`RetryPolicy::for_lapin`] (lapin takes a
//!   `backon` schedule).

use std::future::Future;
use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use tokio_util::sync::CancellationToken;

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
    pub fn pauses(&self, initial: Duration, longest: Duration) -> Pauses {
        Pauses {
            schedule: ExponentialBackoff {
                current_interval: initial,
                initial_interval: initial,
                max_interval: longest,
                ..self.backoff()
            },
            longest,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good (`transient` says
    /// no), or `patience` has passed since the first try, waiting this
    /// policy's jittered delays between tries and logging each wait as
    /// `what` not reachable yet.
    pub async fn retry_for<T, E, F, Fut>(
        &self,
        patience: Duration,
        what: &str,
        mut attempt: F,
        transient: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut schedule = self.backoff();
        schedule.max_elapsed_time = Some(patience);
        backoff::future::retry_notify(
            schedule,
            || {
                let trying = attempt();
                async {
                    trying.await.map_err(|error| {
                        if transient(&error) {
                            backoff::Error::transient(error)
                        } else {
                            backoff::Error::permanent(error)
                        }
                    })
                }
            },
            |error: E, wait: Duration| {
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "{what} not reachable yet");
            },
        )
        .await
    }

    /// This policy as lapin's reconnection schedule (lapin takes `backon`'s
    /// builder): delays from `initial_delay` to `max_delay`, jittered, at
    /// most `max_attempts` reconnections.
    pub fn for_lapin(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.multiplier as f32)
            .with_jitter()
            .with_max_times(self.max_attempts as usize)
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

/// An endless schedule of growing, jittered pauses (from
/// [`RetryPolicy::pauses`]) between tries of work that must not be given
/// up.
#[derive(Debug, Clone)]
pub struct Pauses {
    schedule: ExponentialBackoff,
    longest: Duration,
}

impl Pauses {
    /// The next pause.
    pub fn next_pause(&mut self) -> Duration {
        self.schedule.next_backoff().unwrap_or(self.longest)
    }

    /// Sleeps `pause` unless `stop` is cancelled first: true when the pause
    /// ran out, false on a stop.
    pub async fn sleep(pause: Duration, stop: &CancellationToken) -> bool {
        stop.run_until_cancelled(tokio::time::sleep(pause))
            .await
            .is_some()
    }

    /// Sleeps the next pause unless `stop` is cancelled first (false then).
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let pause = self.next_pause();
        Self::sleep(pause, stop).await
    }
}
