//! `POST /events`: authenticate, read (bounded), decode and validate every
//! event, authorise, rate-limit, claim for idempotency, publish with
//! confirms, answer. A request is all or nothing for its caller: 202 only
//! when the broker confirmed every new event; otherwise nothing is
//! published (400, 403, 429…) or the answer names the events that were not
//! (503), and sending the same request again publishes only those.

use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shared::events::Event;

use super::GatewayState;
use super::accepted_events;
use super::cloudevents::{self, Mode};
use super::error::{EventFailure, GatewayError};
use super::metrics;

/// What became of one event of an accepted request.
#[derive(Debug, Serialize)]
struct AcceptedEvent {
    index: usize,
    id: String,
    /// `published`, or `duplicate` (accepted before, within the window).
    status: &'static str,
}

/// The 202 body.
#[derive(Debug, Serialize)]
struct Accepted {
    published: usize,
    duplicates: usize,
    events: Vec<AcceptedEvent>,
}

/// The handler: applies the request timeout and records the outcome.
pub async fn post_events(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let timeout = state.config.request_timeout;
    let (mode, result) = match tokio::time::timeout(timeout, ingest(&state, &headers, body)).await {
        Ok((mode, result)) => (mode, result),
        Err(_elapsed) => (None, Err(GatewayError::Timeout(timeout))),
    };
    let response = match result {
        Ok(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Err(error) => {
            if error.status().is_server_error() {
                tracing::warn!(error = %error, code = error.code(), "request not accepted");
            } else {
                tracing::debug!(error = %error, code = error.code(), "request refused");
            }
            error.into_response()
        }
    };
    metrics::request(
        mode.map_or("unknown", Mode::as_str),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn ingest(
    state: &GatewayState,
    headers: &HeaderMap,
    body: Body,
) -> (Option<Mode>, Result<Accepted, GatewayError>) {
    let mut mode = None;
    let result = async {
        let key = state.authenticator.authenticate(headers).await?;
        let bytes = read_body(headers, body, state.config.max_body_bytes).await?;
        let parsed = cloudevents::parse(
            headers,
            &bytes,
            state.settings.max_event_bytes,
            state.config.max_batch_events,
        )?;
        mode = Some(parsed.mode);
        let events = valid_events(parsed.events)?;
        let forbidden: Vec<EventFailure> = events
            .iter()
            .enumerate()
            .filter_map(|(index, event)| {
                key.grants
                    .check(event)
                    .err()
                    .map(|error| EventFailure::not_granted(index, event.id.to_string(), &error))
            })
            .collect();
        if !forbidden.is_empty() {
            tracing::info!(key_id = %key.key_id, producer = %key.producer, refused = forbidden.len(), "events not granted to this key");
            metrics::events("rejected", "not_granted", events.len());
            return Err(GatewayError::Forbidden(forbidden));
        }
        if let Err(limited) =
            state
                .rate_limits
                .take(key.key_id, key.rate_per_second, key.burst, events.len())
        {
            metrics::events("rejected", "rate_limited", events.len());
            return Err(limited.into());
        }
        publish(state, key.key_id, &events).await
    }
    .await;
    (mode, result)
}

/// The body, refusing more than `limit` bytes (413) before reading them
/// when the length is declared, and while reading otherwise.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, GatewayError> {
    let too_large = || GatewayError::PayloadTooLarge(format!("the body is over {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(error) => {
            let over_limit = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if over_limit {
                Err(too_large())
            } else {
                Err(GatewayError::MalformedBody {
                    field: "$".to_owned(),
                    reason: format!("the body could not be read: {error}"),
                })
            }
        }
    }
}

/// Every event, or 400 naming each one that is invalid.
fn valid_events(
    decoded: Vec<Result<Event, shared::events::DecodeError>>,
) -> Result<Vec<Event>, GatewayError> {
    let failures: Vec<EventFailure> = decoded
        .iter()
        .enumerate()
        .filter_map(|(index, result)| {
            result
                .as_ref()
                .err()
                .map(|error| EventFailure::invalid(index, error))
        })
        .collect();
    if failures.is_empty() {
        return Ok(decoded.into_iter().flatten().collect());
    }
    for failure in &failures {
        metrics::events("rejected", &failure.code, 1);
    }
    Err(GatewayError::InvalidEvents(failures))
}

/// Claims the events, publishes the new ones with confirms, and settles
/// the claims (undoing those of events the broker did not confirm).
async fn publish(
    state: &GatewayState,
    key_id: uuid::Uuid,
    events: &[Event],
) -> Result<Accepted, GatewayError> {
    let references: Vec<&Event> = events.iter().collect();
    let claim = accepted_events::claim(
        &state.pool,
        key_id,
        &references,
        state.config.idempotency_window,
    )
    .await
    .map_err(|error| {
        tracing::warn!(%error, "idempotency store unavailable");
        GatewayError::DatabaseUnavailable
    })?;
    let to_publish: Vec<Event> = events
        .iter()
        .zip(&claim.publish)
        .filter(|(_, publish)| **publish)
        .map(|(event, _)| event.clone())
        .collect();
    let started = Instant::now();
    let mut results = state.publisher.publish_all(&to_publish).await.into_iter();
    metrics::publish_confirmed(started.elapsed());
    let mut accepted = Vec::with_capacity(events.len());
    let mut failures = Vec::new();
    let mut not_published: Vec<&Event> = Vec::new();
    for (index, (event, publish)) in events.iter().zip(&claim.publish).enumerate() {
        let outcome = if *publish {
            results.next().unwrap_or(Ok(()))
        } else {
            accepted.push(AcceptedEvent {
                index,
                id: event.id.to_string(),
                status: "duplicate",
            });
            continue;
        };
        match outcome {
            Ok(()) => accepted.push(AcceptedEvent {
                index,
                id: event.id.to_string(),
                status: "published",
            }),
            Err(error) => {
                tracing::warn!(event_id = %event.id, %error, "event not confirmed by the broker");
                failures.push(EventFailure {
                    index,
                    id: Some(event.id.to_string()),
                    field: "$".to_owned(),
                    code: error.code().to_owned(),
                    reason: error.to_string(),
                });
                not_published.push(event);
            }
        }
    }
    if let Err(error) = claim.settle(&not_published).await {
        // The confirmed events are in the broker; only their idempotency
        // record is lost, so a re-send would publish them again (the
        // workers apply each event once regardless).
        tracing::warn!(%error, "could not record accepted event ids");
    }
    let published = accepted.iter().filter(|a| a.status == "published").count();
    let duplicates = accepted.len() - published;
    metrics::events("published", "ok", published);
    metrics::events("duplicate", "ok", duplicates);
    if !failures.is_empty() {
        metrics::events("rejected", "broker_unavailable", failures.len());
        return Err(GatewayError::BrokerUnavailable {
            failures,
            accepted: accepted.iter().map(|event| event.index).collect(),
        });
    }
    Ok(Accepted {
        published,
        duplicates,
        events: accepted,
    })
}
