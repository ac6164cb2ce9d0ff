//! The dead-letter routes that read (list, summary, export, show, history,
//! stats) and change (edit, resolve, purge, reopen): each checks the
//! caller's role, reads its input, calls the same function as the CLI.

use super::bodies::{JsonBody, close_request, filter_from_query};
use super::*;

pub(super) async fn whoami(caller: Caller) -> Json<OperatorToken> {
    Json(caller.0)
}

pub(super) async fn list(
    caller: Caller,
    State(state): State<ApiState>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Json<query::Page>, ApiError> {
    caller.require(Role::Viewer)?;
    let (filter, after, limit) = filter_from_query(pairs)?;
    let page = query::list(&state.pool, &filter, after, limit);
    Ok(Json(within(state.patience(), page).await?))
}

pub(super) async fn summary(
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
pub(super) async fn export(
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

pub(super) async fn show(
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

pub(super) async fn edit(
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

pub(super) async fn resolve(
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

pub(super) async fn purge(
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
pub(super) async fn reopen(
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

/// Paging of `GET /api/v1/operations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    before: Option<i64>,
    limit: Option<u32>,
}

pub(super) async fn history(
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
pub(super) async fn stats(
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
