//! The dashboard at `/ui`: a page for operators (queue health, dead
//! letters, replays, the audit trail) that calls the `/api/v1` routes —
//! the same operations, on the same code path, audited the same way.
//!
//! Every asset is embedded in the binary (no CDN, no font download), so
//! the page works on a host without internet. An operator signs in at
//! `/ui/login` with an operator token; the browser then holds only a
//! session cookie (see [`super::sessions`]), and the page sends the
//! session's CSRF token with every change. The dashboard itself (`/ui`)
//! is served only to a live session; the login page and the static assets
//! (which hold no data) to anyone.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::{ApiState, ClientAddress, sessions, tokens};

const DASHBOARD: &str = include_str!("../../ui/index.html");
const LOGIN: &str = include_str!("../../ui/login.html");

/// The embedded static assets: name, content type, content.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "login.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/login.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
];

/// Scripts and styles only from this origin, no framing, no plugins.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes (method, path), as the OpenAPI document lists
/// them beside [`super::ROUTES`].
pub const UI_ROUTES: [(&str, &str); 6] = [
    ("GET", "/ui"),
    ("GET", "/ui/"),
    ("GET", "/ui/login"),
    ("POST", "/ui/login"),
    ("POST", "/ui/logout"),
    ("GET", "/ui/assets/{name}"),
];

/// The dashboard's routes, merged into the API's router.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/ui", get(dashboard))
        .route("/ui/", get(dashboard))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/{name}", get(asset))
        .layer(axum::middleware::from_fn(page_headers))
}

async fn page_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Whether the page reached the browser over TLS (terminated by a proxy
/// in front, which says so in `X-Forwarded-Proto`): the cookie is then
/// `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn to_login() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/login")]).into_response()
}

async fn dashboard(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(cookie) = super::session_cookie(&headers) else {
        return Ok(to_login());
    };
    match sessions::find(&state.sessions, &state.tokens, cookie).await? {
        // The CSRF token is 64 hex digits: nothing to escape.
        Some(session) => Ok(html(DASHBOARD.replace("{{csrf}}", &session.csrf))),
        None => Ok(to_login()),
    }
}

async fn login_page() -> Response {
    html(LOGIN.to_owned())
}

/// The body of `POST /ui/login`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

/// Opens a session for a live operator token. JSON only: a form on
/// another origin cannot post it.
async fn login(
    State(state): State<ApiState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(login) = body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::from_json_rejection(rejection)
        } else {
            ApiError::invalid("token", rejection.body_text())
        }
    })?;
    let Some(token) = tokens::authenticate(&state.tokens, login.token.trim()).await? else {
        return Err(state.failed_check(client));
    };
    let opened = sessions::open(&state.pool, &state.sessions, &token).await?;
    tracing::info!(operator = %token.name, role = token.role.as_str(), "dashboard login");
    Ok((
        [(
            header::SET_COOKIE,
            sessions::set_cookie(&opened.cookie, over_tls(&headers)),
        )],
        Json(json!({ "name": token.name, "role": token.role })),
    )
        .into_response())
}

/// Ends the session (a change: it needs the CSRF token).
async fn logout(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let cookie = super::session_cookie(&headers).ok_or_else(ApiError::unauthenticated)?;
    let session = sessions::find(&state.sessions, &state.tokens, cookie)
        .await?
        .ok_or_else(ApiError::unauthenticated)?;
    let presented = headers
        .get(sessions::CSRF_HEADER)
        .and_then(|value| value.to_str().ok());
    if !sessions::csrf_matches(&session, presented) {
        return Err(ApiError::csrf());
    }
    sessions::close(&state.pool, &state.sessions, cookie).await?;
    Ok((
        [(
            header::SET_COOKIE,
            sessions::clear_cookie(over_tls(&headers)),
        )],
        Json(json!({ "signed_out": true })),
    )
        .into_response())
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(asset, _, _)| *asset == name) {
        Some((_, content_type, content)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *content,
        )
            .into_response(),
        None => ApiError::not_found(format!("no asset {name}")).into_response(),
    }
}
