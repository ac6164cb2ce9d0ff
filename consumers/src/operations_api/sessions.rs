//! The dashboard's sessions: a login with an operator token gives the
//! browser a session cookie (HttpOnly, SameSite=Strict, Secure behind
//! TLS) and the page a CSRF token it must send with every change. The
//! cookie's value is stored only as its SHA-256 (`operator_sessions`); a
//! session ends when it expires, when its operator signs out, or when its
//! token is revoked.

use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use std::collections::HashMap;

use shared::credentials::Credentials;

use super::tokens::{KnownTokens, OperatorToken};

/// The cookie's name.
pub const COOKIE: &str = "switchyard_session";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts from its login.
pub const LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// A session just opened: the cookie's value and the CSRF token.
#[derive(Clone)]
pub struct Opened {
    /// The cookie's value (64 hex digits); never stored.
    pub cookie: String,
    /// The CSRF token the page sends back.
    pub csrf: String,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Opened").finish_non_exhaustive()
    }
}

/// A live session's operator and CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token the operator signed in with.
    pub token: OperatorToken,
    /// What the page must send in [`CSRF_HEADER`].
    pub csrf: String,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn digest(cookie: &str) -> Vec<u8> {
    Sha256::digest(cookie.as_bytes()).to_vec()
}

/// A session as held in memory.
#[derive(Debug, Clone)]
pub struct Stored {
    token_id: uuid::Uuid,
    csrf: String,
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// Every session in memory (see [`shared::credentials`]), by the SHA-256
/// of its cookie.
pub type KnownSessions = Credentials<Vec<u8>, Stored>;

/// Changes whenever a session is opened or closed.
const SESSIONS_VERSION: &str = "SELECT count(*)::text || '/' || coalesce(max(expires_at)::text, '') \
     FROM operator_sessions";

/// The sessions of `pool`, held in memory.
pub fn known(pool: PgPool, patience: Duration) -> KnownSessions {
    Credentials::new(
        pool,
        SESSIONS_VERSION,
        |pool| {
            Box::pin(async move {
                let rows: Vec<(Vec<u8>, uuid::Uuid, String, chrono::DateTime<chrono::Utc>)> =
                    sqlx::query_as(
                        "SELECT session_sha256, token_id, csrf, expires_at FROM operator_sessions \
                         WHERE expires_at > now()",
                    )
                    .fetch_all(&pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(digest, token_id, csrf, expires_at)| {
                        let stored = Stored {
                            token_id,
                            csrf,
                            expires_at,
                        };
                        (digest, stored)
                    })
                    .collect::<HashMap<_, _>>())
            })
        },
        patience,
    )
}

/// Opens a session for `token` (already authenticated); expired sessions
/// are removed on the way.
pub async fn open(
    pool: &PgPool,
    known: &KnownSessions,
    token: &OperatorToken,
) -> Result<Opened, sqlx::Error> {
    let opened = Opened {
        cookie: random_hex(),
        csrf: random_hex(),
    };
    sqlx::query("DELETE FROM operator_sessions WHERE expires_at < now()")
        .execute(pool)
        .await?;
    let expires_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "INSERT INTO operator_sessions (session_sha256, token_id, csrf, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at",
    )
    .bind(digest(&opened.cookie))
    .bind(token.token_id)
    .bind(&opened.csrf)
    .bind(LIFETIME.as_secs_f64())
    .fetch_one(pool)
    .await?;
    known.insert(
        digest(&opened.cookie),
        Stored {
            token_id: token.token_id,
            csrf: opened.csrf.clone(),
            expires_at,
        },
    );
    Ok(opened)
}

/// The live session whose cookie is `cookie`, or `None` (unknown, expired,
/// signed out, token revoked, not shaped like a session cookie); from
/// memory when it is known.
pub async fn find(
    sessions: &KnownSessions,
    tokens: &KnownTokens,
    cookie: &str,
) -> Result<Option<Session>, sqlx::Error> {
    if cookie.len() != 64 || !cookie.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let Some(stored) = sessions.find(&digest(cookie)).await? else {
        return Ok(None);
    };
    if stored.expires_at <= chrono::Utc::now() {
        return Ok(None);
    }
    let token = match super::tokens::live(tokens, stored.token_id) {
        Some(token) => Some(token),
        // Issued elsewhere a moment ago: the tokens are checked once.
        None => tokens
            .find(&stored.token_id)
            .await?
            .map(|(token, _)| token)
            .filter(|token| token.revoked_at.is_none()),
    };
    Ok(token.map(|token| Session {
        token,
        csrf: stored.csrf,
    }))
}

/// Ends the session whose cookie is `cookie`.
pub async fn close(pool: &PgPool, known: &KnownSessions, cookie: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM operator_sessions WHERE session_sha256 = $1")
        .bind(digest(cookie))
        .execute(pool)
        .await?;
    known.remove(&digest(cookie));
    Ok(())
}

/// The value of cookie `name` in a `Cookie` header (`cookie` parses it;
/// a pair it cannot read is skipped).
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    cookie::Cookie::split_parse(header)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name)
        .and_then(|cookie| cookie.value_raw())
}

/// The session cookie's attributes: the whole site, never read by the
/// page's scripts, never sent from another site, `Secure` when the page
/// is served over TLS.
fn session_cookie(value: &str, max_age: std::time::Duration, secure: bool) -> String {
    let max_age =
        cookie::time::Duration::seconds(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX));
    cookie::Cookie::build((COOKIE, value))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(max_age)
        .secure(secure)
        .build()
        .to_string()
}

/// A `Set-Cookie` value holding `value` for [`LIFETIME`].
pub fn set_cookie(value: &str, secure: bool) -> String {
    session_cookie(value, LIFETIME, secure)
}

/// A `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(secure: bool) -> String {
    session_cookie("", std::time::Duration::ZERO, secure)
}

/// Whether `presented` is the session's CSRF token (compared in constant
/// time).
pub fn csrf_matches(session: &Session, presented: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    presented.is_some_and(|presented| {
        presented.len() == session.csrf.len()
            && bool::from(presented.as_bytes().ct_eq(session.csrf.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_found_among_others_by_its_exact_name() {
        let header = "theme=dark; switchyard_session_old=x; switchyard_session=abc; z=1";
        assert_eq!(cookie_value(header, COOKIE), Some("abc"));
        assert_eq!(cookie_value("theme=dark", COOKIE), None);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_only_behind_tls() {
        let plain = set_cookie("v", false);
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        assert!(set_cookie("v", true).contains("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
