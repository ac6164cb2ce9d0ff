//! Operators' tokens: `syop_<token id>_<secret>`, hashed like producers'
//! API keys (see [`shared::secret_tokens`]), each with a role.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Serialize;
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

/// The live token presented, or `None` (unknown, wrong secret, revoked,
/// not shaped like a token).
pub async fn authenticate(
    pool: &PgPool,
    presented: &str,
) -> Result<Option<OperatorToken>, sqlx::Error> {
    let Some((token_id, secret)) = shared::secret_tokens::parse(TOKEN_PREFIX, presented) else {
        return Ok(None);
    };
    let row: Option<Row> = sqlx::query_as(
        "SELECT token_id, name, role, secret_sha256, created_at, revoked_at FROM operator_tokens \
         WHERE token_id = $1",
    )
    .bind(token_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(from_row).and_then(|(token, hash)| {
        (shared::secret_tokens::matches(&secret, &hash) && token.revoked_at.is_none())
            .then_some(token)
    }))
}

/// Failed token checks per client address: each address may fail only so
/// often (a token guessed, or a flood of well-formed random tokens, each
/// costing a query); past its allowance every request from it is answered
/// 429 without a query until the allowance recovers. Callers with a live
/// token never fail, so they are never slowed.
pub struct FailedChecks {
    allowance: DefaultKeyedRateLimiter<IpAddr>,
    blocked_until: Mutex<HashMap<IpAddr, Instant>>,
}

impl FailedChecks {
    /// `per_second` failures per address, twice as many at once.
    pub fn new(per_second: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        Self {
            allowance: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            blocked_until: Mutex::default(),
        }
    }

    /// Whether `address` has used up its allowance.
    pub fn blocked(&self, address: IpAddr) -> bool {
        let mut blocked = self.lock();
        match blocked.get(&address) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                blocked.remove(&address);
                false
            }
            None => false,
        }
    }

    /// Counts a failed check from `address`.
    pub fn failed(&self, address: IpAddr) {
        if let Err(not_until) = self.allowance.check_key(&address) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            self.lock().insert(address, Instant::now() + wait);
        }
    }

    /// Forgets addresses whose allowance has recovered.
    pub fn forget_recovered(&self) {
        self.allowance.retain_recent();
        self.allowance.shrink_to_fit();
        let now = Instant::now();
        self.lock().retain(|_, until| *until > now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.blocked_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
