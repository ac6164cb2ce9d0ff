//! Per-key rate limits, counted in events (a batch of 50 costs 50), with
//! `governor`'s GCRA: a sustained rate and a burst, both set per key.
//! Limits are per gateway process; with N gateways a key may send N times
//! its rate in total.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

/// Refused: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// When the events would fit (at least one second is advised).
    pub retry_after: Duration,
    /// The request asked for more events than the burst allows at all.
    pub over_burst: bool,
}

/// One limiter per key, created with the key's quota on first use and
/// replaced when the quota changes.
#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<Uuid, (Quota, Arc<DefaultDirectRateLimiter>)>>,
}

impl RateLimits {
    /// Takes `events` from the key's allowance, or says how long to wait.
    pub fn take(
        &self,
        key_id: Uuid,
        rate_per_second: u32,
        burst: u32,
        events: usize,
    ) -> Result<(), RateLimited> {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_second(NonZeroU32::new(rate_per_second).unwrap_or(one))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
        let limiter = {
            let mut limiters = self
                .limiters
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let entry = limiters
                .entry(key_id)
                .or_insert_with(|| (quota, Arc::new(RateLimiter::direct(quota))));
            if entry.0 != quota {
                *entry = (quota, Arc::new(RateLimiter::direct(quota)));
            }
            Arc::clone(&entry.1)
        };
        let cells = NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)).unwrap_or(one);
        match limiter.check_n(cells) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                over_burst: false,
            }),
            Err(_insufficient_capacity) => Err(RateLimited {
                retry_after: Duration::from_secs(1),
                over_burst: true,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_wait() {
        let limits = RateLimits::default();
        let key = Uuid::now_v7();
        assert_eq!(limits.take(key, 1, 10, 10), Ok(()));
        let refused = limits.take(key, 1, 10, 1).unwrap_err();
        assert!(!refused.over_burst);
        assert!(refused.retry_after > Duration::ZERO);
        // Another key has its own allowance.
        assert_eq!(limits.take(Uuid::now_v7(), 1, 10, 10), Ok(()));
    }

    #[test]
    fn more_events_than_the_burst_can_never_pass() {
        let limits = RateLimits::default();
        let refused = limits.take(Uuid::now_v7(), 100, 5, 6).unwrap_err();
        assert!(refused.over_burst);
    }
}
