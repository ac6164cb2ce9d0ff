//! Who is calling: the API key from `Authorization: Bearer <key>` (or
//! `X-Api-Key` when there is no `Authorization` header), checked against
//! the key store, with a bounded time-to-live cache (moka) so that a busy
//! producer does not cost a database query per request. A revoked key stops
//! working within the cache's time to live.
//!
//! A key that is not in the cache costs a database query, so each client
//! address may cause only so many of them per second (a flood of random,
//! well-formed keys is answered 429 without touching the database).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::api_keys::{self, ApiKey, AuthenticateError, AuthenticationError};
use super::error::GatewayError;

/// Alternative header for clients that cannot set `Authorization`.
const API_KEY_HEADER: &str = "x-api-key";

/// Most cached answers (good and bad keys together); least recently used
/// ones are evicted first.
const MAX_CACHED: u64 = 10_000;

/// Checks presented keys: cache first, then the store.
pub struct Authenticator {
    pool: PgPool,
    /// SHA-256 of a presented key → the live key it named (`None`: refused).
    /// Absent when answers are not to be cached at all.
    cache: Option<moka::sync::Cache<[u8; 32], Option<ApiKey>>>,
    lookups: DefaultKeyedRateLimiter<IpAddr>,
}

impl Authenticator {
    /// Checks keys against `pool`, remembering each answer for
    /// `time_to_live`, and letting each client address cause at most
    /// `lookups_per_second` store lookups (with a burst of twice that).
    pub fn new(pool: PgPool, time_to_live: Duration, lookups_per_second: u32) -> Self {
        let cache = (!time_to_live.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(MAX_CACHED)
                .time_to_live(time_to_live)
                .build()
        });
        let rate = NonZeroU32::new(lookups_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        Self {
            pool,
            cache,
            lookups: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        }
    }

    /// The caller's live key; 401 when there is none or it is not valid,
    /// 429 when `client` asks for too many uncached keys, 503 when the store
    /// is unreachable.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<ApiKey, GatewayError> {
        let presented = presented_key(headers)?;
        let fingerprint: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if let Some(known) = self
            .cache
            .as_ref()
            .and_then(|cache| cache.get(&fingerprint))
        {
            return known.ok_or(AuthenticationError::Invalid.into());
        }
        if let Err(not_until) = self.lookups.check_key(&client) {
            tracing::info!(%client, "too many unrecognised API keys from one address");
            return Err(GatewayError::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                message: "too many API keys checked from this address; slow down".to_owned(),
            });
        }
        let answer = match api_keys::authenticate(&self.pool, presented).await {
            Ok(key) => Some(key),
            Err(AuthenticateError::Refused(_)) => None,
            Err(AuthenticateError::Store(error)) => {
                tracing::warn!(%error, "API key store unavailable");
                return Err(GatewayError::DatabaseUnavailable);
            }
        };
        if let Some(cache) = &self.cache {
            cache.insert(fingerprint, answer.clone());
        }
        answer.ok_or(AuthenticationError::Invalid.into())
    }

    /// Forgets per-address counts that have recovered (call now and then:
    /// the limiter keeps one entry per address it has seen).
    pub fn forget_idle_addresses(&self) {
        self.lookups.retain_recent();
        self.lookups.shrink_to_fit();
    }
}

/// The key from `Authorization: Bearer …`, or from `X-Api-Key` when there is
/// no `Authorization` header. An `Authorization` header that is present
/// decides alone: unreadable or not a bearer key, it is refused (401), never
/// passed over for another header.
fn presented_key(headers: &HeaderMap) -> Result<&str, AuthenticationError> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthenticationError::Invalid)?;
        let (scheme, key) = value
            .trim()
            .split_once(' ')
            .ok_or(AuthenticationError::Invalid)?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| key.trim())
            .filter(|key| !key.is_empty())
            .ok_or(AuthenticationError::Invalid);
    }
    match headers.get(API_KEY_HEADER) {
        None => Err(AuthenticationError::Missing),
        Some(value) => value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .ok_or(AuthenticationError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        assert_eq!(
            presented_key(&with("authorization", "Bearer sy_abc")),
            Ok("sy_abc")
        );
        assert_eq!(
            presented_key(&with("authorization", "bearer  sy_abc ")),
            Ok("sy_abc")
        );
        assert_eq!(presented_key(&with("x-api-key", "sy_abc")), Ok("sy_abc"));
        assert_eq!(
            presented_key(&with("authorization", "Basic Zm9v")),
            Err(AuthenticationError::Invalid)
        );
        assert_eq!(
            presented_key(&with("authorization", "Bearer ")),
            Err(AuthenticationError::Invalid)
        );
        assert_eq!(
            presented_key(&HeaderMap::new()),
            Err(AuthenticationError::Missing)
        );
    }

    #[test]
    fn an_unreadable_authorization_header_is_refused_not_passed_over() {
        let mut headers = with("x-api-key", "sy_abc");
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        );
        assert_eq!(presented_key(&headers), Err(AuthenticationError::Invalid));
    }
}
