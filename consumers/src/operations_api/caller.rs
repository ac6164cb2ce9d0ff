//! Who is calling: the `Caller` extractor (a bearer operator token, or the
//! dashboard's session cookie and, on a change, its CSRF token), checked in
//! memory; a failed check counted per client address; and the small
//! extractors that answer a JSON 400 naming the field (`Id`, `QueryPairs`).

use super::*;

/// The caller, authenticated by its operator token.
pub struct Caller(pub OperatorToken);

impl Caller {
    pub(super) fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(role.as_str()))
        }
    }

    pub(super) fn actor(&self) -> Actor {
        Actor::api(&self.0.name)
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    /// A bearer token, or else the dashboard's session cookie; a change
    /// (any method but GET and HEAD) made with the cookie must also carry
    /// the session's CSRF token.
    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let cookie = if bearer.is_none() {
            session_cookie(&parts.headers)
        } else {
            None
        };
        if bearer.is_none() && cookie.is_none() {
            return Err(ApiError::unauthenticated());
        }
        let ClientAddress(client) = ClientAddress::of(parts);
        // Checked first, in memory: a live credential is never refused
        // because of other callers' failures.
        let found = match (bearer, cookie) {
            (Some(presented), _) => tokens::authenticate(&state.tokens, presented).await?,
            (None, Some(cookie)) => {
                match sessions::find(&state.sessions, &state.tokens, cookie).await? {
                    Some(session) => {
                        let safe = matches!(parts.method, Method::GET | Method::HEAD);
                        let presented = parts
                            .headers
                            .get(sessions::CSRF_HEADER)
                            .and_then(|value| value.to_str().ok());
                        if !safe && !sessions::csrf_matches(&session, presented) {
                            return Err(ApiError::csrf());
                        }
                        Some(session.token)
                    }
                    None => None,
                }
            }
            (None, None) => None,
        };
        match found {
            Some(token) => Ok(Caller(token)),
            None => Err(state.failed_check(client)),
        }
    }
}

impl ApiState {
    /// Counts a failed credential check from `client`: 401, or 429 once
    /// the address is past its allowance of failures.
    pub(super) fn failed_check(&self, client: Option<std::net::IpAddr>) -> ApiError {
        match client.and_then(|client| self.failed_checks.failed(client)) {
            Some(_) => ApiError::rate_limited(),
            None => ApiError::unauthenticated(),
        }
    }
}

/// The client's address, when the server recorded it (for
/// [`FailedChecks`]).
pub struct ClientAddress(pub Option<std::net::IpAddr>);

impl ClientAddress {
    pub(super) fn of(parts: &Parts) -> Self {
        Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(client)| client.ip()),
        )
    }
}

impl FromRequestParts<ApiState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &ApiState) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}

/// The dashboard's session cookie in `headers`, if any.
pub(super) fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| sessions::cookie_value(value, sessions::COOKIE))
}

/// The `{id}` of a path, or a JSON 400 naming `id`.
pub struct Id(pub i64);

impl FromRequestParts<ApiState> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        Path::<i64>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Id(id))
            .map_err(|_| ApiError::invalid("id", "id must be a whole number"))
    }
}

/// The query string's pairs, or a JSON 400 when it cannot be read.
pub struct QueryPairs(pub Vec<(String, String)>);

impl FromRequestParts<ApiState> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Query(pairs)| QueryPairs(pairs))
            .map_err(|rejection| ApiError::invalid("query", rejection.body_text()))
    }
}
