//! The operations API: the dead-letter operations over HTTP (JSON), for
//! operators and the dashboard, served by `consumers operations-api` —
//! worker-side, apart from the producers' gateway. It calls the same
//! functions as `consumers dead-letters …`.
//!
//! Every `/api/v1` route needs `Authorization: Bearer syop_…`, an operator
//! token (see [`tokens`]): `viewer` reads, `operator` also replays, edits,
//! resolves and purges. A replay runs in the background: its progress is
//! read at `/api/v1/replays/{id}` and it can be cancelled.
//!
//! The routes are listed once, in [`ROUTES`]; the OpenAPI document
//! (`consumers/operations-openapi.json`, served at `/openapi.json`) is
//! checked against that list by a test.

pub mod error;
pub mod sessions;
pub mod tokens;
pub mod ui;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::database::within;
use shared::http_server::{ConnectionLimits, ServerOptions, serve_http};
use shared::settings::Settings;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::error::ApiError;
use self::sessions::KnownSessions;
use self::tokens::{KnownTokens, OperatorToken, Role};
use crate::dead_letters::replay::{ReplayOptions, ReplayProgress};
use crate::dead_letters::{Actor, Filter, manage, operations, query, repair, replay};
use shared::credentials::FailedChecks;

/// The checked-in OpenAPI document.
pub const OPENAPI_DOCUMENT: &str = include_str!("../../operations-openapi.json");

/// Most replays running at once in one process.
pub const MAX_RUNNING_REPLAYS: usize = 4;
/// Longest a request may take (a replay runs in the background).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A route of the API.
#[derive(Debug, Clone)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path (axum syntax).
    pub path: &'static str,
}

const fn route(method: Method, path: &'static str) -> Route {
    Route { method, path }
}

/// Every route served.
pub const ROUTES: [Route; 17] = [
    route(Method::GET, "/healthz"),
    route(Method::GET, "/openapi.json"),
    route(Method::GET, "/api/v1/whoami"),
    route(Method::GET, "/api/v1/dead-letters"),
    route(Method::GET, "/api/v1/dead-letters/summary"),
    route(Method::GET, "/api/v1/dead-letters/export"),
    route(Method::GET, "/api/v1/dead-letters/{id}"),
    route(Method::PUT, "/api/v1/dead-letters/{id}/event"),
    route(Method::POST, "/api/v1/dead-letters/resolve"),
    route(Method::POST, "/api/v1/dead-letters/purge"),
    route(Method::POST, "/api/v1/dead-letters/reopen"),
    route(Method::POST, "/api/v1/replays"),
    route(Method::POST, "/api/v1/replays/preview"),
    route(Method::GET, "/api/v1/replays/{id}"),
    route(Method::POST, "/api/v1/replays/{id}/cancel"),
    route(Method::GET, "/api/v1/operations"),
    route(Method::GET, "/api/v1/stats"),
];

/// A replay this process runs.
struct RunningReplay {
    progress: watch::Receiver<ReplayProgress>,
    cancel: CancellationToken,
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pool: PgPool,
    settings: Settings,
    replays: Arc<Mutex<HashMap<i64, RunningReplay>>>,
    shutdown: CancellationToken,
    failed_checks: Arc<FailedChecks>,
    slots: Arc<std::sync::atomic::AtomicI64>,
    tokens: Arc<KnownTokens>,
    sessions: Arc<KnownSessions>,
}

/// How often the tokens and sessions held in memory are checked against
/// the database: a revoked token stops working within this.
pub const CREDENTIALS_POLL: Duration = Duration::from_secs(1);

/// Failed token checks one client address may make per second unless told
/// otherwise (see [`FailedChecks`]).
pub const TOKEN_FAILURES_PER_ADDRESS: u32 = 5;

impl ApiState {
    /// Longest one database step of dead-letter work waits
    /// (`SWITCHYARD_DEAD_LETTER_DATABASE_TIMEOUT_MS`, at most 25 s here: a
    /// request is bounded by [`REQUEST_TIMEOUT`]).
    fn patience(&self) -> Duration {
        // Under the request's own limit, so that a database that does not
        // answer (a lock held by a replay's batch, a silent server) gets
        // the promised 503, not the request timeout's 504.
        self.settings
            .dead_letters
            .database_timeout
            .min(REQUEST_TIMEOUT - Duration::from_secs(5))
    }

    /// State over `pool`; replays stop when `shutdown` is cancelled.
    pub fn new(pool: PgPool, settings: Settings, shutdown: CancellationToken) -> Self {
        let patience = settings.dead_letters.database_timeout;
        Self {
            tokens: Arc::new(tokens::known(pool.clone(), patience)),
            sessions: Arc::new(sessions::known(pool.clone(), patience)),
            pool,
            settings,
            replays: Arc::default(),
            shutdown,
            failed_checks: Arc::new(FailedChecks::new(TOKEN_FAILURES_PER_ADDRESS)),
            slots: Arc::default(),
        }
    }

    /// Lets each client address fail at most `per_second` token checks per
    /// second, twice as many at once (see [`FailedChecks`]).
    #[must_use]
    pub fn with_token_failures_per_address(mut self, per_second: u32) -> Self {
        self.failed_checks = Arc::new(FailedChecks::new(per_second));
        self
    }

    /// A key for a replay that has not recorded its start yet (negative:
    /// operation ids are positive).
    fn next_slot(&self) -> i64 {
        -(self
            .slots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(1))
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<i64, RunningReplay>> {
        self.replays
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The caller, authenticated by its operator token.
pub struct Caller(pub OperatorToken);

impl Caller {
    fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(role.as_str()))
        }
    }

    fn actor(&self) -> Actor {
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
    fn failed_check(&self, client: Option<std::net::IpAddr>) -> ApiError {
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
    fn of(parts: &Parts) -> Self {
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
fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
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

fn handler_for(route: &Route) -> MethodRouter<ApiState> {
    match (route.method.as_str(), route.path) {
        ("GET", "/healthz") => get(|| async { Json(json!({"status": "alive"})) }),
        ("GET", "/openapi.json") => get(|| async {
            (
                [(header::CONTENT_TYPE, "application/json")],
                OPENAPI_DOCUMENT,
            )
        }),
        ("GET", "/api/v1/whoami") => get(whoami),
        ("GET", "/api/v1/dead-letters") => get(list),
        ("GET", "/api/v1/dead-letters/summary") => get(summary),
        ("GET", "/api/v1/dead-letters/export") => get(export),
        ("GET", "/api/v1/dead-letters/{id}") => get(show),
        ("PUT", "/api/v1/dead-letters/{id}/event") => put(edit),
        ("POST", "/api/v1/dead-letters/resolve") => post(resolve),
        ("POST", "/api/v1/dead-letters/purge") => post(purge),
        ("POST", "/api/v1/dead-letters/reopen") => post(reopen),
        ("POST", "/api/v1/replays") => post(start_replay),
        ("POST", "/api/v1/replays/preview") => post(preview),
        ("GET", "/api/v1/replays/{id}") => get(replay_status),
        ("POST", "/api/v1/replays/{id}/cancel") => post(cancel_replay),
        ("GET", "/api/v1/operations") => get(history),
        ("GET", "/api/v1/stats") => get(stats),
        (method, path) => unreachable!("no handler for {method} {path}"),
    }
}

/// The routes over `state`; anything else is a JSON 404, every request is
/// bounded in size and time.
pub fn router(state: ApiState) -> Router {
    let body_limit = body_limit(&state.settings);
    ROUTES
        .iter()
        .fold(Router::<ApiState>::new(), |router, route| {
            // Two methods on one path would need merging; the table has none.
            router.route(route.path, handler_for(route))
        })
        .merge(ui::routes())
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(bounded_in_time))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                declared_within(body_limit, request, next)
            },
        ))
        .with_state(state)
}

/// Most bytes of a request body: an event of the largest size plus room
/// for the JSON around it.
pub fn body_limit(settings: &Settings) -> usize {
    settings.max_event_bytes + 64 * 1024
}

/// Most bytes of an over-limit body read and thrown away before the 413
/// is sent: a client still sending when the server closes would get a
/// reset instead of the answer.
const DRAINED_AT_MOST: usize = 8 * 1024 * 1024;

/// Reads the request body before the routes see it, refusing one over
/// `limit` bytes with a JSON 413: at once when its `Content-Length` says
/// so (a length of 10^12 and no body is not waited for; a client that
/// sent `Expect: 100-continue` sends nothing), else once `limit` bytes have
/// come, after reading and dropping the rest (up to [`DRAINED_AT_MOST`]) so
/// that the client reads the answer. A body that does not arrive within
/// [`REQUEST_TIMEOUT`] is answered 408.
async fn declared_within(
    limit: usize,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use futures_util::StreamExt;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let closing = |error: ApiError| {
        let mut response = error.into_response();
        // The body is not read to its end: the connection cannot carry
        // another request.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        response
    };
    if declared.is_some_and(|length| length > limit as u64) {
        return closing(ApiError::too_large(Some(limit)));
    }
    let (parts, body) = request.into_parts();
    let mut chunks = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0_usize;
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, chunks.next()).await {
            Err(_) => {
                return closing(ApiError::new_public(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the request body did not arrive in time",
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                return closing(ApiError::invalid(
                    "$",
                    format!("the body could not be read: {error}"),
                ));
            }
            Ok(Some(Ok(chunk))) => {
                seen = seen.saturating_add(chunk.len());
                if seen <= limit {
                    kept.extend_from_slice(&chunk);
                } else if seen > DRAINED_AT_MOST {
                    return closing(ApiError::too_large(Some(limit)));
                }
            }
        }
    }
    if seen > limit {
        return ApiError::too_large(Some(limit)).into_response();
    }
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(kept));
    next.run(request).await
}

async fn bounded_in_time(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout().into_response(),
    }
}

/// Serves on `listener` until `shutdown` with `limits` on connections and
/// header time (the same server as the producers' gateway); running
/// replays are cancelled (each stops after the batch in flight is
/// confirmed and marked).
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    limits: ConnectionLimits,
    trusted_proxies: shared::http_server::TrustedProxies,
) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let replays = Arc::clone(&state.replays);
    let failed_checks = Arc::clone(&state.failed_checks);
    let forget = tokio::spawn(async move {
        let mut every_minute = tokio::time::interval(Duration::from_secs(60));
        loop {
            every_minute.tick().await;
            failed_checks.forget_recovered();
        }
    });
    // The credentials are read before the first request, then kept
    // current: a revoked token stops working within a second.
    let asked = tokio::time::Instant::now();
    if let Err(error) = state.tokens.check_since(asked).await {
        tracing::warn!(%error, "operator tokens could not be read yet; tried again each second");
    }
    let _ = state.sessions.check_since(asked).await;
    tokio::spawn(Arc::clone(&state.tokens).poll(CREDENTIALS_POLL, shutdown.clone()));
    tokio::spawn(Arc::clone(&state.sessions).poll(CREDENTIALS_POLL, shutdown.clone()));
    let options = ServerOptions {
        trusted_proxies: Arc::new(trusted_proxies),
        limits,
        panic_message: "the operations API failed on this request; check the operation history for what it did",
        // Logged by the server; this process exports no metrics.
        on_refused: || {},
    };
    let served = serve_http(listener, router(state), options, shutdown).await;
    forget.abort();
    let mut waiting: Vec<watch::Receiver<ReplayProgress>> = replays
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .map(|replay| replay.progress.clone())
        .collect();
    for progress in &mut waiting {
        let _ = tokio::time::timeout(
            Duration::from_secs(60),
            progress.wait_for(|state| state.outcome != "running"),
        )
        .await;
    }
    served
}

async fn whoami(caller: Caller) -> Json<OperatorToken> {
    Json(caller.0)
}

/// Query parameters as a [`Filter`] plus paging: values are read as the
/// filter's JSON types, so the same names and checks apply (`ids` is
/// comma-separated).
fn filter_from_query(pairs: Vec<(String, String)>) -> Result<(Filter, i64, u32), ApiError> {
    let mut object = serde_json::Map::new();
    let (mut after, mut limit) = (0_i64, 50_u32);
    for (name, value) in pairs {
        let number = |field: &str| {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| ApiError::invalid(field, format!("{field} must be a whole number")))
        };
        match name.as_str() {
            "after" => after = number("after")?,
            "limit" => {
                limit = u32::try_from(number("limit")?)
                    .ok()
                    .filter(|limit| (1..=query::MAX_PAGE).contains(limit))
                    .ok_or_else(|| ApiError::invalid("limit", "limit must be 1 to 1000"))?;
            }
            "min_attempts" | "max_attempts" => {
                object.insert(name.clone(), Value::from(number(&name)?));
            }
            "ids" => {
                let ids = value
                    .split(',')
                    .filter(|id| !id.trim().is_empty())
                    .map(|id| id.trim().parse::<i64>())
                    .collect::<Result<Vec<i64>, _>>()
                    .map_err(|_| {
                        ApiError::invalid("ids", "ids must be comma-separated whole numbers")
                    })?;
                object.insert(name, Value::from(ids));
            }
            _ => {
                object.insert(name, Value::from(value));
            }
        }
    }
    let filter = parse_filter(Value::Object(object))?;
    Ok((filter, after, limit))
}

/// `value` as a JSON object, or a 400 naming `field`: serde would read a
/// struct from an array by position (`[]` as the empty filter).
fn object(value: Value, field: &str) -> Result<serde_json::Map<String, Value>, ApiError> {
    match value {
        Value::Object(object) => Ok(object),
        other => Err(ApiError::invalid(
            field,
            format!("must be a JSON object, not {}", json_kind(&other)),
        )),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_filter(value: Value) -> Result<Filter, ApiError> {
    let value = Value::Object(object(value, "filter")?);
    let filter: Filter = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        // An unknown field's path is its parent: the message names it.
        let field = match path.as_str() {
            "" | "." => message
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_else(|| "filter".to_owned()),
            _ => path,
        };
        ApiError::invalid(field, message)
    })?;
    filter
        .validate()
        .map_err(|error| ApiError::invalid(error.field, error.reason))?;
    Ok(filter)
}

async fn list(
    caller: Caller,
    State(state): State<ApiState>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Json<query::Page>, ApiError> {
    caller.require(Role::Viewer)?;
    let (filter, after, limit) = filter_from_query(pairs)?;
    let page = query::list(&state.pool, &filter, after, limit);
    Ok(Json(within(state.patience(), page).await?))
}

async fn summary(
    caller: Caller,
    State(state): State<ApiState>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Json<Vec<query::SummaryLine>>, ApiError> {
    caller.require(Role::Viewer)?;
    let (filter, _, _) = filter_from_query(pairs)?;
    let lines = query::summary(&state.pool, &filter);
    Ok(Json(within(state.patience(), lines).await?))
}

/// NDJSON of the matching dead letters (the CLI's `export`), streamed a
/// page at a time: constant memory whatever the set's size. It is not
/// bounded by the request timeout: it ends when the last page is sent, or
/// with a line `{"error": …}` if the database fails midway.
async fn export(
    caller: Caller,
    State(state): State<ApiState>,
    QueryPairs(pairs): QueryPairs,
) -> Result<axum::response::Response, ApiError> {
    caller.require(Role::Viewer)?;
    let (filter, _, _) = filter_from_query(pairs)?;
    // The first page is read here, so that a failure is an error answer.
    let patience = state.patience();
    let first = repair::export_page(&state.pool, &filter, 0, patience).await?;
    let pool = state.pool.clone();
    let pages = futures_util::stream::unfold(
        (first, pool, filter),
        move |(page, pool, filter)| async move {
            let (text, _, last) = page?;
            // Each page is bounded: a database that stops answering ends
            // the stream with its error line instead of holding it open.
            let next = match repair::export_page(&pool, &filter, last, patience).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::warn!(%error, "export over the API ended early");
                    // A last line says so: a cut-short export is never mistaken for a whole one.
                    let line = json!({ "error": format!("the export ended early: {error}") });
                    Some((format!("{line}\n"), 0, i64::MAX))
                }
            };
            Some((Ok::<_, std::io::Error>(text), (next, pool, filter)))
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(pages),
    )
        .into_response())
}

async fn show(
    caller: Caller,
    State(state): State<ApiState>,
    Id(id): Id,
) -> Result<Json<query::DeadLetterDetail>, ApiError> {
    caller.require(Role::Viewer)?;
    within(state.patience(), query::show(&state.pool, id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no dead letter {id}")))
}

async fn edit(
    caller: Caller,
    State(state): State<ApiState>,
    Id(id): Id,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<repair::Edited>, ApiError> {
    caller.require(Role::Operator)?;
    let body = body.map_err(ApiError::from_bytes_rejection)?;
    let edited = repair::edit(
        &state.pool,
        id,
        &body,
        &caller.actor(),
        state.settings.max_event_bytes,
        state.patience(),
    )
    .await?;
    Ok(Json(edited))
}

/// The body of resolve and purge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    filter: Value,
    #[serde(default)]
    confirm: bool,
}

/// A JSON request body, or a 400 (413 when over the limit).
type JsonBody = Result<Json<Value>, axum::extract::rejection::JsonRejection>;

fn json_body(body: JsonBody) -> Result<serde_json::Map<String, Value>, ApiError> {
    let Json(mut value) = body.map_err(ApiError::from_json_rejection)?;
    integral(&mut value);
    object(value, "$")
}

/// Numbers with no fraction written as floats (`2210.0`) made integers:
/// JSON (and the OpenAPI document's `integer`) does not tell them apart,
/// serde does.
fn integral(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(float) = number
                .as_f64()
                .filter(|_| !number.is_i64() && !number.is_u64())
                && float.fract() == 0.0
                && float.abs() < 9.0e15
            {
                *value = Value::from(float as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral),
        Value::Object(fields) => fields.values_mut().for_each(integral),
        _ => {}
    }
}

fn close_request(body: JsonBody) -> Result<(Filter, bool), ApiError> {
    let request: CloseRequest = serde_path_to_error::deserialize(Value::Object(json_body(body)?))
        .map_err(|error| {
        let field = match error.path().to_string().as_str() {
            "" | "." => error
                .inner()
                .to_string()
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_else(|| "$".to_owned()),
            path => path.to_owned(),
        };
        ApiError::invalid(field, error.inner().to_string())
    })?;
    Ok((parse_filter(request.filter)?, request.confirm))
}

async fn resolve(
    caller: Caller,
    State(state): State<ApiState>,
    body: JsonBody,
) -> Result<Json<manage::Closed>, ApiError> {
    caller.require(Role::Operator)?;
    let (filter, _) = close_request(body)?;
    Ok(Json(
        manage::resolve(&state.pool, &filter, &caller.actor(), state.patience()).await?,
    ))
}

async fn purge(
    caller: Caller,
    State(state): State<ApiState>,
    body: JsonBody,
) -> Result<Json<manage::Closed>, ApiError> {
    caller.require(Role::Operator)?;
    let (filter, confirm) = close_request(body)?;
    if !confirm {
        return Err(ApiError::invalid(
            "confirm",
            "purging deletes payloads: send \"confirm\": true",
        ));
    }
    Ok(Json(
        manage::purge(&state.pool, &filter, &caller.actor(), state.patience()).await?,
    ))
}

/// Opens resolved dead letters again (audited as `reopen`).
async fn reopen(
    caller: Caller,
    State(state): State<ApiState>,
    body: JsonBody,
) -> Result<Json<manage::Closed>, ApiError> {
    caller.require(Role::Operator)?;
    let (filter, _) = close_request(body)?;
    Ok(Json(
        manage::reopen(&state.pool, &filter, &caller.actor(), state.patience()).await?,
    ))
}

fn replay_options(body: JsonBody) -> Result<ReplayOptions, ApiError> {
    let mut object = json_body(body)?;
    // The filter is checked on its own so that its errors name its fields.
    let filter = match object.remove("filter") {
        Some(filter) => parse_filter(filter)?,
        None => Filter::default(),
    };
    let mut options: ReplayOptions = serde_path_to_error::deserialize(Value::Object(object))
        .map_err(|error| {
            let path = error.path().to_string();
            let field = if path.is_empty() || path == "." {
                "$".to_owned()
            } else {
                path
            };
            ApiError::invalid(field, error.inner().to_string())
        })?;
    options.filter = filter;
    options.validate()?;
    Ok(options)
}

async fn preview(
    caller: Caller,
    State(state): State<ApiState>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let options = replay_options(body)?;
    let mut sample = Vec::new();
    let report = replay::dry_run(&state.pool, &state.settings, &options, &mut |candidate| {
        if sample.len() < 100 {
            sample.push(candidate);
        }
    })
    .await?;
    Ok(Json(json!({ "report": report, "sample": sample })))
}

async fn start_replay(
    caller: Caller,
    State(state): State<ApiState>,
    body: JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Operator)?;
    let options = replay_options(body)?;
    options.filter.for_change().map_err(ApiError::from_filter)?;
    let (sender, mut receiver) = watch::channel(ReplayProgress::default());
    let cancel = state.shutdown.child_token();
    // The slot is taken under the same lock that counts the running ones:
    // two requests at once cannot both take the last.
    let slot = {
        let mut running = state.running();
        // A replay that has not started yet ("") holds its slot too.
        running.retain(|_, replay| {
            matches!(replay.progress.borrow().outcome.as_str(), "" | "running")
        });
        if running.len() >= MAX_RUNNING_REPLAYS {
            return Err(ApiError::busy(format!(
                "{MAX_RUNNING_REPLAYS} replays are running; wait for one to end"
            )));
        }
        let slot = state.next_slot();
        running.insert(
            slot,
            RunningReplay {
                progress: receiver.clone(),
                cancel: cancel.clone(),
            },
        );
        slot
    };
    spawn_replay(
        state.clone(),
        caller.actor(),
        options,
        sender,
        cancel.clone(),
    );
    // The operation id exists once the replay recorded its start.
    let started = tokio::time::timeout(
        REPLAY_START_PATIENCE,
        receiver.wait_for(|progress| {
            progress.operation_id != 0 || !matches!(progress.outcome.as_str(), "" | "running")
        }),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|progress| progress.clone());
    let Some(progress) = started.filter(|progress| progress.operation_id != 0) else {
        // Not started in time: it is cancelled, and stays tracked (it holds
        // its slot) until it has ended.
        cancel.cancel();
        let detail = receiver.borrow().detail.clone();
        return Err(ApiError::unavailable(detail.unwrap_or_else(|| {
            "the replay did not start in time and was cancelled; try again".to_owned()
        })));
    };
    {
        let mut running = state.running();
        if let Some(replay) = running.remove(&slot) {
            running.insert(progress.operation_id, replay);
        }
    }
    let location = format!("/api/v1/replays/{}", progress.operation_id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(progress),
    ))
}

/// How long a replay may take to record its start before the request
/// gives up on it (and cancels it).
const REPLAY_START_PATIENCE: Duration = Duration::from_secs(10);

/// Runs a replay in the background. Whatever ends it (an error, a panic)
/// ends its progress as `failed` and its audit record with it, so that it
/// frees its slot and never reads `running` for good.
fn spawn_replay(
    state: ApiState,
    actor: crate::dead_letters::Actor,
    options: ReplayOptions,
    sender: watch::Sender<ReplayProgress>,
    cancel: CancellationToken,
) {
    let sender = Arc::new(sender);
    let task_sender = Arc::clone(&sender);
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        replay::replay(
            &task_state.pool,
            &task_state.settings,
            &actor,
            &options,
            &task_sender,
            &cancel,
        )
        .await
    });
    tokio::spawn(async move {
        let detail = match task.await {
            Ok(Ok(_)) => return,
            // The replay recorded its own failure where it could.
            Ok(Err(error)) => {
                tracing::warn!(%error, "replay over the API failed");
                sender.send_modify(|progress| {
                    progress.outcome = "failed".to_owned();
                    progress.detail = Some(error.to_string());
                });
                return;
            }
            Err(join) => format!("the replay stopped unexpectedly: {join}"),
        };
        tracing::error!(%detail, "replay over the API failed");
        sender.send_modify(|progress| {
            progress.outcome = "failed".to_owned();
            progress.detail = Some(detail.clone());
        });
        let progress = sender.borrow().clone();
        if progress.operation_id != 0 {
            let ended = within(state.patience(), async {
                let mut connection = state.pool.acquire().await?;
                operations::update(
                    &mut connection,
                    progress.operation_id,
                    progress.counts(),
                    Some(("failed", Some(&detail))),
                )
                .await
            })
            .await;
            if let Err(error) = ended {
                tracing::warn!(%error, operation_id = progress.operation_id, "the replay's failure was not recorded");
            }
        }
    });
}

/// A replay as `GET /api/v1/replays/{id}` shows it: one shape whether this
/// process runs it or it is only in the audit trail.
#[derive(Debug, serde::Serialize)]
struct ReplayStatus {
    /// Whether this process runs it now.
    live: bool,
    #[serde(flatten)]
    progress: ReplayProgress,
}

async fn replay_status(
    caller: Caller,
    State(state): State<ApiState>,
    Id(id): Id,
) -> Result<Json<ReplayStatus>, ApiError> {
    caller.require(Role::Viewer)?;
    let live = state
        .running()
        .get(&id)
        .map(|replay| replay.progress.borrow().clone())
        .filter(|progress| progress.outcome == "running");
    if let Some(progress) = live {
        return Ok(Json(ReplayStatus {
            live: true,
            progress,
        }));
    }
    // Not running here: the audit trail's record, with the failures of its
    // events counted now (an event fails again after its retries, which
    // may be long after the replay ended).
    let record = within(state.patience(), async {
        let Some(operation) = operations::get(&state.pool, id).await? else {
            return Ok(None);
        };
        let failed_again = replay::failed_again(&state.pool, id).await?;
        Ok::<_, sqlx::Error>(Some((operation, failed_again)))
    })
    .await?;
    match record {
        Some((operation, failed_again)) if operation.action == "replay" => Ok(Json(ReplayStatus {
            live: false,
            progress: ReplayProgress {
                operation_id: operation.id,
                matched: operation.matched,
                replayed: operation.affected,
                skipped: operation.skipped,
                failed_again,
                outcome: operation.outcome,
                detail: operation.detail,
            },
        })),
        _ => Err(ApiError::not_found(format!("no replay {id}"))),
    }
}

async fn cancel_replay(
    caller: Caller,
    State(state): State<ApiState>,
    Id(id): Id,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Operator)?;
    let progress = {
        let running = state.running();
        let replay = running
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("no replay {id} runs in this process")))?;
        replay.cancel.cancel();
        replay.progress.clone()
    };
    let mut progress = progress;
    let ended = tokio::time::timeout(
        REQUEST_TIMEOUT - Duration::from_secs(5),
        progress.wait_for(|state| state.outcome != "running"),
    )
    .await
    .is_ok_and(|waited| waited.is_ok());
    let current = progress.borrow().clone();
    let status = if ended {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(current)))
}

/// Paging of `GET /api/v1/operations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    before: Option<i64>,
    limit: Option<u32>,
}

async fn history(
    caller: Caller,
    State(state): State<ApiState>,
    paging: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<operations::Operation>>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(paging) =
        paging.map_err(|rejection| ApiError::invalid("query", rejection.body_text()))?;
    let limit = paging.limit.unwrap_or(50);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit must be 1 to 1000"));
    }
    let history = operations::history(&state.pool, paging.before, limit);
    Ok(Json(within(state.patience(), history).await?))
}

/// `consumers stats --json` over HTTP: every group's figures now.
async fn stats(
    caller: Caller,
    State(state): State<ApiState>,
) -> Result<Json<crate::stats::Stats>, ApiError> {
    caller.require(Role::Viewer)?;
    let connection = shared::broker::connect_once(&state.settings, "switchyard-operations-stats")
        .await
        .map_err(|error| {
            tracing::warn!(%error, "operations API: broker unreachable");
            ApiError::unavailable("the broker is unreachable; try again")
        })?;
    let topology = shared::topology::Topology::new(&state.settings);
    let management = shared::topology::management::Management::new(&state.settings);
    let stats = crate::stats::collect(&connection, &topology, &state.pool, &management).await;
    let _ = connection.close(200, "OK".into()).await;
    stats.map(Json).map_err(|error| {
        tracing::warn!(%error, "operations API: stats failed");
        ApiError::unavailable("the figures could not be read; try again")
    })
}
