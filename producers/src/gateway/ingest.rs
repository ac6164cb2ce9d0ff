//! `POST /events`: authenticate, read (bounded), decode and validate every
//! event, authorise, rate-limit, claim for idempotency, publish with
//! confirms, answer. A request is all or nothing for its caller: 202 only
//! when the broker confirmed every new event; otherwise nothing is
//! published (400, 403, 429…) or the answer names the events that were not
//! (503), and sending the same request again publishes only those.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shared::events::{DecodeError, Event};
use shared::publish::PublishError;

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

/// Longest the gateway spends reading the body of a request it refused
/// before reading it (401, 429 on key lookups), so the connection can be
/// kept alive; past this, or over the body limit, it answers with
/// `Connection: close` instead of leaving the client's next request to
/// fail on a closed socket.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// What `ingest` came to, and the body if it was never read.
struct Outcome {
    mode: Option<Mode>,
    result: Result<Accepted, GatewayError>,
    unread: Option<Body>,
}

/// The handler: applies the request timeout and records the outcome.
pub async fn post_events(
    State(state): State<GatewayState>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let client = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let timeout = state.config.request_timeout;
    let outcome = tokio::time::timeout(timeout, ingest(&state, &headers, client, body))
        .await
        .unwrap_or_else(|_elapsed| Outcome {
            mode: None,
            result: Err(GatewayError::Timeout(timeout)),
            unread: None,
        });
    let mut close = matches!(outcome.result, Err(GatewayError::Timeout(_)));
    if let Some(body) = outcome.unread {
        close |= !drain(&headers, body, state.config.max_body_bytes).await;
    }
    let mut response = match outcome.result {
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
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    metrics::request(
        outcome.mode.map_or("unknown", Mode::as_str),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Reads and discards a body that was not needed; `false` when it is over
/// `limit`, malformed or too slow (the connection must then be closed).
async fn drain(headers: &HeaderMap, body: Body, limit: usize) -> bool {
    if declared_length(headers).is_some_and(|length| length > limit as u64) {
        return false;
    }
    tokio::time::timeout(DRAIN_TIME, axum::body::to_bytes(body, limit))
        .await
        .is_ok_and(|read| read.is_ok())
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
}

async fn ingest(state: &GatewayState, headers: &HeaderMap, client: IpAddr, body: Body) -> Outcome {
    let key = match state.authenticator.authenticate(headers, client).await {
        Ok(key) => key,
        Err(error) => {
            return Outcome {
                mode: None,
                result: Err(error),
                unread: Some(body),
            };
        }
    };
    let mut mode = None;
    let result = async {
        let limit = state.config.max_body_bytes;
        if declared_length(headers).is_some_and(|length| length > limit as u64) {
            return Err(body_too_large(limit));
        }
        let bytes = read_body(body, limit).await?;
        let parsed = cloudevents::parse(
            headers,
            &bytes,
            state.settings.max_event_bytes,
            state.config.max_batch_events,
        )?;
        mode = Some(parsed.mode);
        let count = parsed.events.len();
        // Every event counts toward the key's rate, valid or not.
        if count > key.burst as usize {
            metrics::events("rejected", "over_burst", count);
            return Err(GatewayError::PayloadTooLarge(format!(
                "this key's burst is {burst} events and this request holds {count}: send at most {burst} events per request",
                burst = key.burst
            )));
        }
        if let Err(limited) = state
            .rate_limits
            .take(key.key_id, key.rate_per_second, key.burst, count)
        {
            metrics::events("rejected", "rate_limited", count);
            return Err(limited.into());
        }
        let events = valid_events(parsed.mode, parsed.events)?;
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
        publish(state, key.key_id, &events).await
    }
    .await;
    Outcome {
        mode,
        result,
        unread: None,
    }
}

fn body_too_large(limit: usize) -> GatewayError {
    GatewayError::PayloadTooLarge(format!("the body is over {limit} bytes"))
}

/// The body, refusing more than `limit` bytes (413) while reading it.
async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, GatewayError> {
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(error) => {
            let over_limit = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if over_limit {
                Err(body_too_large(limit))
            } else {
                Err(GatewayError::MalformedBody {
                    field: "$".to_owned(),
                    reason: format!("the body could not be read: {error}"),
                })
            }
        }
    }
}

/// Every event, or why not: 413 when an event is over the event size
/// limit, 400 `malformed_body` when a single event's body is not JSON,
/// else 400 naming each invalid event.
fn valid_events(
    mode: Mode,
    decoded: Vec<Result<Event, DecodeError>>,
) -> Result<Vec<Event>, GatewayError> {
    let errors: Vec<(usize, &DecodeError)> = decoded
        .iter()
        .enumerate()
        .filter_map(|(index, result)| result.as_ref().err().map(|error| (index, error)))
        .collect();
    if errors.is_empty() {
        return Ok(decoded.into_iter().flatten().collect());
    }
    for (_, error) in &errors {
        metrics::events("rejected", error.code(), 1);
    }
    if let [(_, DecodeError::NotJson(reason))] = errors.as_slice()
        && mode != Mode::Batch
    {
        return Err(GatewayError::MalformedBody {
            field: "$".to_owned(),
            reason: reason.clone(),
        });
    }
    let too_large = errors
        .iter()
        .any(|(_, error)| matches!(error, DecodeError::TooLarge { .. }));
    let failures = errors
        .into_iter()
        .map(|(index, error)| EventFailure::invalid(index, error))
        .collect();
    if too_large {
        return Err(GatewayError::EventsTooLarge(failures));
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
        // The claims hold only validated sources and ids: whatever the
        // SQLSTATE table says, the request is not at fault (503, retry).
        let fault = shared::database_errors::classify(&error);
        tracing::warn!(%error, ?fault, "idempotency store unavailable");
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
            // One result per published event; a missing one is a failure,
            // never a success.
            results.next().unwrap_or_else(|| {
                Err(PublishError::BrokerUnavailable(
                    "no confirm was recorded for this event".to_owned(),
                ))
            })
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
