//! Operators' tokens: `syop_<token id>_<secret>`, hashed like producers'
//! API keys (see [`shared::secret_tokens`]), each with a role.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::credentials::Credentials;
use sqlx::PgPool;
use uuid::Uuid;

/// Prefix of every operator token (producers' keys start `sy_`).
pub const TOKEN_PREFIX: &str = "syop_";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read: list, summary, show, export, history, stats, replay progress.
    Viewer,
    /// Also replay, cancel replays, edit, resolve and purge.
    Operator,
}

impl Role {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    fn from_stored(name: &str) -> Self {
        if name == "operator" {
            Role::Operator
        } else {
            Role::Viewer
        }
    }
}

/// A token as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorToken {
    /// Public id; names it in `revoke`.
    pub token_id: Uuid,
    /// Who holds it; the audit trail records `api:<name>`.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

type Row = (
    Uuid,
    String,
    String,
    Vec<u8>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

fn from_row((token_id, name, role, hash, created_at, revoked_at): Row) -> (OperatorToken, Vec<u8>) {
    let token = OperatorToken {
        token_id,
        name,
        role: Role::from_stored(&role),
        created_at,
        revoked_at,
    };
    (token, hash)
}

/// Issues a token; returns its record and the full token, which is not
/// stored and cannot be shown again.
pub async fn create(
    pool: &PgPool,
    name: &str,
    role: Role,
) -> Result<(OperatorToken, String), sqlx::Error> {
    let minted = shared::secret_tokens::mint(TOKEN_PREFIX);
    let created_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO operator_tokens (token_id, name, role, secret_sha256) VALUES ($1, $2, $3, $4) \
         RETURNING created_at",
    )
    .bind(minted.id)
    .bind(name)
    .bind(role.as_str())
    .bind(&minted.secret_sha256)
    .fetch_one(pool)
    .await?;
    let token = OperatorToken {
        token_id: minted.id,
        name: name.to_owned(),
        role,
        created_at,
        revoked_at: None,
    };
    Ok((token, minted.token))
}

/// Every token, revoked ones included, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<OperatorToken>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT token_id, name, role, secret_sha256, created_at, revoked_at FROM operator_tokens \
         ORDER BY created_at, token_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|row| from_row(row).0).collect())
}

/// Revokes a token; `false` when no such live token exists.
pub async fn revoke(pool: &PgPool, token_id: Uuid) -> Result<bool, sqlx::Error> {
    let revoked = sqlx::query(
        "UPDATE operator_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL",
    )
    .bind(token_id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(revoked == 1)
}

/// Every token in memory (see [`shared::credentials`]): id → record and
/// the secret's hash.
pub type KnownTokens = Credentials<Uuid, (OperatorToken, Vec<u8>)>;

/// Changes whenever a token is issued or revoked.
const TOKENS_VERSION: &str = "SELECT count(*)::text || '/' || coalesce(max(created_at)::text, '') \
     || '/' || coalesce(max(revoked_at)::text, '') FROM operator_tokens";

/// The tokens of `pool`, held in memory; each query waits at most
/// `patience`.
pub fn known(pool: PgPool, patience: std::time::Duration) -> KnownTokens {
    Credentials::new(
        pool,
        TOKENS_VERSION,
        |pool| {
            Box::pin(async move {
                let rows: Vec<Row> = sqlx::query_as(
                    "SELECT token_id, name, role, secret_sha256, created_at, revoked_at \
                     FROM operator_tokens",
                )
                .fetch_all(&pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        let (token, hash) = from_row(row);
                        (token.token_id, (token, hash))
                    })
                    .collect::<HashMap<_, _>>())
            })
        },
        patience,
    )
}

/// The live token presented, or `None` (unknown, wrong secret, revoked,
/// not shaped like a token). A token already known is checked without a
/// query.
pub async fn authenticate(
    known: &KnownTokens,
    presented: &str,
) -> Result<Option<OperatorToken>, sqlx::Error> {
    let Some((token_id, secret)) = shared::secret_tokens::parse(TOKEN_PREFIX, presented) else {
        return Ok(None);
    };
    Ok(known.find(&token_id).await?.and_then(|(token, hash)| {
        (shared::secret_tokens::matches(&secret, &hash) && token.revoked_at.is_none())
            .then_some(token)
    }))
}

/// The live token `token_id`, from memory.
pub fn live(known: &KnownTokens, token_id: Uuid) -> Option<OperatorToken> {
    known
        .get(&token_id)
        .map(|(token, _)| token)
        .filter(|token| token.revoked_at.is_none())
}
