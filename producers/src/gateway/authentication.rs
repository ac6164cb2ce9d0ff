//! Who is calling: the API key from `Authorization: Bearer <key>` (or
//! `X-Api-Key` when there is no `Authorization` header), checked against
//! the keys held in memory (see [`shared::credentials`]): a valid key is
//! answered without a query, whatever else arrives. The copy is checked
//! against the key store every `key_cache_ttl` (a revoked key stops
//! working within it; zero: before every answer); a key issued elsewhere
//! works at its first use.
//!
//! Failed checks of well-formed keys are counted per client address:
//! past the allowance a failure is answered 429 instead of 401. A valid
//! key is never refused because of them.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use shared::credentials::{Credentials, FailedChecks};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::api_keys::{self, ApiKey, AuthenticationError};
use super::error::GatewayError;

/// Alternative header for clients that cannot set `Authorization`.
const API_KEY_HEADER: &str = "x-api-key";

/// Longest a check of the key store waits.
const STORE_PATIENCE: Duration = Duration::from_secs(5);

/// Checks presented keys against the keys held in memory.
pub struct Authenticator {
    keys: Arc<Credentials<Uuid, (ApiKey, Vec<u8>)>>,
    /// How often the copy is checked against the store (zero: at every
    /// request).
    refresh: Duration,
    failures: FailedChecks,
}

impl Authenticator {
    /// Checks keys against `pool`'s, checking the copy every `refresh`, and
    /// answering 429 to an address past `failures_per_second` failed checks
    /// (with a burst of twice that).
    pub fn new(pool: PgPool, refresh: Duration, failures_per_second: u32) -> Self {
        Self {
            keys: Arc::new(api_keys::known(pool, STORE_PATIENCE)),
            refresh,
            failures: FailedChecks::new(failures_per_second),
        }
    }

    /// Reads the keys now, then keeps the copy current until `shutdown`.
    pub async fn keep_current(&self, shutdown: CancellationToken) {
        if let Err(error) = self.keys.check_since(tokio::time::Instant::now()).await {
            tracing::warn!(%error, "API keys could not be read yet; tried again at each request");
        }
        if !self.refresh.is_zero() {
            tokio::spawn(Arc::clone(&self.keys).poll(self.refresh, shutdown));
        }
    }

    /// The caller's live key; 401 when there is none or it is not valid
    /// (429 once `client` is past its allowance of failures), 503 when the
    /// store is needed and unreachable.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<ApiKey, GatewayError> {
        let presented = presented_key(headers)?;
        // Not shaped like a key: refused without looking anything up, and
        // not counted.
        let (key_id, secret) = shared::secret_tokens::parse(api_keys::KEY_PREFIX, presented)
            .ok_or(AuthenticationError::Invalid)?;
        let checked = async {
            if self.refresh.is_zero() {
                self.keys
                    .check_since(tokio::time::Instant::now())
                    .await
                    .map_err(store_unavailable)?;
            }
            let (key, hash) = self
                .keys
                .find(&key_id)
                .await
                .map_err(store_unavailable)?
                .ok_or(AuthenticationError::Invalid)?;
            if !shared::secret_tokens::matches(&secret, &hash) || key.revoked_at.is_some() {
                return Err(AuthenticationError::Invalid.into());
            }
            Ok(key)
        };
        match checked.await {
            Err(GatewayError::Unauthenticated(AuthenticationError::Invalid)) => {
                match self.failures.failed(client) {
                    Some(retry_after) => {
                        tracing::info!(%client, "too many failed API key checks from one address");
                        Err(GatewayError::RateLimited {
                            retry_after,
                            message: "too many invalid API keys from this address; slow down"
                                .to_owned(),
                        })
                    }
                    None => Err(AuthenticationError::Invalid.into()),
                }
            }
            other => other,
        }
    }

    /// Forgets per-address counts that have recovered (call now and then:
    /// the limiter keeps one entry per address it has seen).
    pub fn forget_idle_addresses(&self) {
        self.failures.forget_recovered();
    }
}

fn store_unavailable(error: sqlx::Error) -> GatewayError {
    tracing::warn!(%error, "API key store unavailable");
    GatewayError::DatabaseUnavailable
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
