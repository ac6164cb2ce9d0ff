//! Credentials checked in memory: producers' API keys, operators' tokens
//! and the dashboard's sessions are few, so each process holds a copy of
//! its table and checks a presented credential against it without a
//! query.
//!
//! Why: a check that costs a query is what a flood of guesses spends, so
//! such checks had to be rationed per client address, and behind a proxy
//! (one address for every client) a valid credential was then refused
//! because of someone else's guesses. In memory, a valid credential is
//! answered at once whatever else arrives; only what is not in the copy
//! can cost the database anything, and then at most one cheap query at a
//! time for the whole process (see [`Credentials::find`]).
//!
//! The copy is kept current by a poll: a query of the table's *version*
//! (a count and the latest change times, one short row), and a reload only
//! when it changed. A credential revoked elsewhere stops working within
//! one poll interval; one issued elsewhere works at its first use (the
//! miss asks for a check of the version first). While the database is
//! unreachable, the credentials known keep working and new ones wait.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Reads a whole table of credentials.
pub type Load<K, V> = fn(PgPool) -> BoxFuture<'static, Result<HashMap<K, V>, sqlx::Error>>;

/// A table of credentials held in memory; see the module documentation.
pub struct Credentials<K, V> {
    pool: PgPool,
    /// One text value that changes whenever the table does.
    version_sql: &'static str,
    load: Load<K, V>,
    entries: RwLock<Arc<HashMap<K, V>>>,
    version: Mutex<Option<String>>,
    /// When the last check of the version that succeeded started.
    checked_at: Mutex<Option<Instant>>,
    /// One check at a time; those waiting share the next one.
    checking: tokio::sync::Mutex<()>,
    /// Every miss and every poll is bounded by this.
    patience: Duration,
}

impl<K, V> Credentials<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// An empty copy of the table `load` reads, whose version
    /// `version_sql` gives (one row, one text column); each query waits at
    /// most `patience`.
    pub fn new(
        pool: PgPool,
        version_sql: &'static str,
        load: Load<K, V>,
        patience: Duration,
    ) -> Self {
        Self {
            pool,
            version_sql,
            load,
            entries: RwLock::default(),
            version: Mutex::default(),
            checked_at: Mutex::default(),
            checking: tokio::sync::Mutex::const_new(()),
            patience,
        }
    }

    /// The credential `key` names in the copy, without a query.
    pub fn get(&self, key: &K) -> Option<V> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// The credential `key` names: from the copy, else after a check of the
    /// table that started after this call (shared with every other miss
    /// waiting: a flood of unknown keys costs one query at a time).
    pub async fn find(&self, key: &K) -> Result<Option<V>, sqlx::Error> {
        if let Some(found) = self.get(key) {
            return Ok(Some(found));
        }
        self.check_since(Instant::now()).await?;
        Ok(self.get(key))
    }

    /// Makes sure the version was checked (and the copy reloaded if it
    /// changed) by a check that started at or after `asked`.
    pub async fn check_since(&self, asked: Instant) -> Result<(), sqlx::Error> {
        let _one = self.checking.lock().await;
        if self.last_checked().is_some_and(|checked| checked >= asked) {
            return Ok(());
        }
        let started = Instant::now();
        let version: String = crate::database::within(
            self.patience,
            sqlx::query_scalar(self.version_sql).fetch_one(&self.pool),
        )
        .await?;
        let unchanged = self.lock_version().as_ref() == Some(&version);
        if !unchanged {
            // Read after the version: a change in between shows as a new
            // version at the next check, never as a stale copy.
            let loaded =
                crate::database::within(self.patience, (self.load)(self.pool.clone())).await?;
            *self
                .entries
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
            *self.lock_version() = Some(version);
        }
        *self
            .checked_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(started);
        Ok(())
    }

    /// Adds or replaces one credential in the copy (one this process just
    /// wrote to the table: a session opened here).
    pub fn insert(&self, key: K, value: V) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut copy = HashMap::clone(&entries);
        copy.insert(key, value);
        *entries = Arc::new(copy);
    }

    /// Removes one credential from the copy (a session closed here).
    pub fn remove(&self, key: &K) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.contains_key(key) {
            let mut copy = HashMap::clone(&entries);
            copy.remove(key);
            *entries = Arc::new(copy);
        }
    }

    /// Checks the version every `every` until `shutdown`; a failed check is
    /// logged and tried at the next tick (the copy stays as it was).
    pub async fn poll(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while shutdown.run_until_cancelled(ticks.tick()).await.is_some() {
            if let Err(error) = self.check_since(Instant::now()).await {
                tracing::warn!(%error, "credentials could not be refreshed; the known ones keep working");
            }
        }
    }

    fn last_checked(&self) -> Option<Instant> {
        *self
            .checked_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_version(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Failed credential checks per client address: past `per_second` (twice
/// that at once) a failure is answered 429 instead of 401. Only failures
/// count and only after the check: a valid credential is never refused
/// because of them. The count is taken atomically, so connections in
/// parallel cannot all slip under it.
pub struct FailedChecks {
    allowance: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
}

impl FailedChecks {
    /// `per_second` failures per address, twice as many at once.
    pub fn new(per_second: u32) -> Self {
        use std::num::NonZeroU32;
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        Self {
            allowance: governor::RateLimiter::keyed(
                governor::Quota::per_second(rate).allow_burst(burst),
            ),
        }
    }

    /// Counts a failed check from `address`: `Some(wait)` when it is over
    /// its allowance (answer 429, retry after `wait`).
    pub fn failed(&self, address: std::net::IpAddr) -> Option<Duration> {
        use governor::clock::{Clock, DefaultClock};
        self.allowance
            .check_key(&address)
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets addresses whose allowance has recovered (call now and then).
    pub fn forget_recovered(&self) {
        self.allowance.retain_recent();
        self.allowance.shrink_to_fit();
    }
}
