//! Who is calling: the API key from `Authorization: Bearer <key>` (or
//! `X-Api-Key`), checked against the key store, with a short-lived cache so
//! that a busy producer does not cost a database query per request. A
//! revoked key stops working within the cache's time to live.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::api_keys::{self, ApiKey, AuthenticateError, AuthenticationError};
use super::error::GatewayError;

/// Alternative header for clients that cannot set `Authorization`.
const API_KEY_HEADER: &str = "x-api-key";

/// SHA-256 of a presented key → when it was checked, and the live key it
/// named (`None`: refused).
type AnswerCache = HashMap<[u8; 32], (Instant, Option<ApiKey>)>;

/// Cached outcomes of recent authentications, keyed by the SHA-256 of the
/// presented key (the key itself is not kept).
pub struct Authenticator {
    pool: PgPool,
    time_to_live: Duration,
    cache: Mutex<AnswerCache>,
}

/// Most cached entries kept; the cache is cleared when it grows past this.
const MAX_CACHED: usize = 10_000;

impl Authenticator {
    /// Checks keys against `pool`, remembering each answer for `time_to_live`.
    pub fn new(pool: PgPool, time_to_live: Duration) -> Self {
        Self {
            pool,
            time_to_live,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The caller's live key, or 401, or 503 when the store is unreachable.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<ApiKey, GatewayError> {
        let presented = presented_key(headers).ok_or(AuthenticationError::Missing)?;
        let fingerprint: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if let Some(known) = self.cached(&fingerprint) {
            return known.ok_or(AuthenticationError::Invalid.into());
        }
        let answer = match api_keys::authenticate(&self.pool, presented).await {
            Ok(key) => Some(key),
            Err(AuthenticateError::Refused(_)) => None,
            Err(AuthenticateError::Store(error)) => {
                tracing::warn!(%error, "API key store unavailable");
                return Err(GatewayError::DatabaseUnavailable);
            }
        };
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(fingerprint, (Instant::now(), answer.clone()));
        answer.ok_or(AuthenticationError::Invalid.into())
    }

    fn cached(&self, fingerprint: &[u8; 32]) -> Option<Option<ApiKey>> {
        let cache = self.lock();
        let (at, answer) = cache.get(fingerprint)?;
        (at.elapsed() < self.time_to_live).then(|| answer.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AnswerCache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The key from `Authorization: Bearer …` or `X-Api-Key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, key) = value.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| key.trim())
            .filter(|key| !key.is_empty());
    }
    headers
        .get(API_KEY_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty())
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
            Some("sy_abc")
        );
        assert_eq!(
            presented_key(&with("authorization", "bearer  sy_abc ")),
            Some("sy_abc")
        );
        assert_eq!(presented_key(&with("x-api-key", "sy_abc")), Some("sy_abc"));
        assert_eq!(presented_key(&with("authorization", "Basic Zm9v")), None);
        assert_eq!(presented_key(&with("authorization", "Bearer ")), None);
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }
}
