//! Producers' API keys: issue, list, revoke, and authenticate a presented
//! key. A key reads `sy_<key id: 32 hex>_<secret: 64 hex>`; the database
//! keeps the key id, the SHA-256 of the secret and what the key may publish.
//! The secret is shown once, at creation, and never logged.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::grants::Grants;

/// Prefix of every key, so leaked keys are easy to recognise and scan for.
pub const KEY_PREFIX: &str = "sy_";

/// What a key may do, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Public part of the key; names it in logs and in `keys revoke`.
    pub key_id: Uuid,
    /// Who holds it (free text, e.g. `checkout`).
    pub producer: String,
    /// Event types and sources it may publish.
    pub grants: Grants,
    /// Sustained events per second.
    pub rate_per_second: u32,
    /// Events it may send at once above the sustained rate.
    pub burst: u32,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key to issue.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Who will hold it.
    pub producer: String,
    /// What it may publish.
    pub grants: Grants,
    /// Sustained events per second.
    pub rate_per_second: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
}

/// Why a presented key was refused. Deliberately says nothing about which
/// part was wrong beyond what the caller already knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthenticationError {
    /// No `Authorization: Bearer` or `X-Api-Key` header.
    #[error("an API key is required (Authorization: Bearer <key>)")]
    Missing,
    /// Not a key, unknown, wrong secret or revoked.
    #[error("the API key is not valid")]
    Invalid,
}

/// A key could not be stored or read.
#[derive(Debug, thiserror::Error)]
#[error("API key store: {0}")]
pub struct KeyStoreError(#[from] sqlx::Error);

/// Issues a key; returns its record and the full key, which is not stored
/// and cannot be shown again.
pub async fn create(pool: &PgPool, key: NewApiKey) -> Result<(ApiKey, String), KeyStoreError> {
    let minted = shared::secret_tokens::mint(KEY_PREFIX);
    let key_id = minted.id;
    let created_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO api_keys (key_id, producer, secret_sha256, allowed_types, allowed_sources, rate_per_second, burst)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING created_at",
    )
    .bind(key_id)
    .bind(&key.producer)
    .bind(&minted.secret_sha256)
    .bind(key.grants.types())
    .bind(key.grants.sources())
    .bind(key.rate_per_second as i32)
    .bind(key.burst as i32)
    .fetch_one(pool)
    .await?;
    let record = ApiKey {
        key_id,
        producer: key.producer,
        grants: key.grants,
        rate_per_second: key.rate_per_second,
        burst: key.burst,
        created_at,
        revoked_at: None,
    };
    Ok((record, minted.token))
}

type KeyRow = (
    Uuid,
    String,
    Vec<u8>,
    Vec<String>,
    Vec<String>,
    i32,
    i32,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

const SELECT_ALL: &str = "SELECT key_id, producer, secret_sha256, allowed_types, allowed_sources, rate_per_second, burst, created_at, revoked_at FROM api_keys ORDER BY created_at, key_id";

fn from_row(row: KeyRow) -> (ApiKey, Vec<u8>) {
    let (key_id, producer, hash, types, sources, rate, burst, created_at, revoked_at) = row;
    let key = ApiKey {
        key_id,
        producer,
        grants: Grants::from_stored(types, sources),
        rate_per_second: rate.max(1) as u32,
        burst: burst.max(1) as u32,
        created_at,
        revoked_at,
    };
    (key, hash)
}

/// Every key, revoked ones included, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<ApiKey>, KeyStoreError> {
    let rows: Vec<KeyRow> = sqlx::query_as(SELECT_ALL).fetch_all(pool).await?;
    Ok(rows.into_iter().map(|row| from_row(row).0).collect())
}

/// Revokes a key; `false` when no such live key exists.
pub async fn revoke(pool: &PgPool, key_id: Uuid) -> Result<bool, KeyStoreError> {
    let revoked = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
    )
    .bind(key_id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(revoked == 1)
}

/// Changes whenever a key is issued or revoked.
const KEYS_VERSION: &str = "SELECT count(*)::text || '/' || coalesce(max(created_at)::text, '') \
     || '/' || coalesce(max(revoked_at)::text, '') FROM api_keys";

/// Every key of `pool`, held in memory (see [`shared::credentials`]): key
/// id → record and the secret's hash.
pub fn known(
    pool: PgPool,
    patience: std::time::Duration,
) -> shared::credentials::Credentials<Uuid, (ApiKey, Vec<u8>)> {
    shared::credentials::Credentials::new(
        pool,
        KEYS_VERSION,
        |pool| {
            Box::pin(async move {
                let rows: Vec<KeyRow> = sqlx::query_as(SELECT_ALL).fetch_all(&pool).await?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        let (key, hash) = from_row(row);
                        (key.key_id, (key, hash))
                    })
                    .collect())
            })
        },
        patience,
    )
}
