//! Every answer the gateway gives other than 202, as one type: its status,
//! its headers and its JSON body `{"error", "message", "failures"?}`.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shared::events::DecodeError;

use super::api_keys::AuthenticationError;
use super::cloudevents::RequestError;
use super::grants::NotGranted;
use super::rate_limit::RateLimited;

/// Seconds a client is told to wait when the broker or database is down.
pub const RETRY_AFTER_UNAVAILABLE: Duration = Duration::from_secs(5);

/// One event of a request that was not accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventFailure {
    /// Position in the request (0 for structured and binary mode).
    pub index: usize,
    /// The event's id, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The attribute or data field at fault (`data.lines[0].quantity`), `$` for the whole event.
    pub field: String,
    /// Machine-readable kind (`invalid`, `unknown_type`, `not_granted`, `broker_unavailable`…).
    pub code: String,
    /// What is wrong, for a person.
    pub reason: String,
}

impl EventFailure {
    /// An event that did not decode or validate.
    pub fn invalid(index: usize, error: &DecodeError) -> Self {
        Self {
            index,
            id: None,
            field: error.field().to_owned(),
            code: error.code().to_owned(),
            reason: error.to_string(),
        }
    }

    /// An event its key may not publish.
    pub fn not_granted(index: usize, id: String, error: &NotGranted) -> Self {
        Self {
            index,
            id: Some(id),
            field: error.field.to_owned(),
            code: "not_granted".to_owned(),
            reason: error.reason.clone(),
        }
    }
}

/// Why a request was not (wholly) accepted.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// 401: no key, or not a valid one.
    #[error(transparent)]
    Unauthenticated(#[from] AuthenticationError),
    /// 403: the key may not publish some of the events.
    #[error("{} event(s) may not be published with this key; nothing was published", .0.len())]
    Forbidden(Vec<EventFailure>),
    /// 400: some events are invalid.
    #[error("{} event(s) are invalid; nothing was published", .0.len())]
    InvalidEvents(Vec<EventFailure>),
    /// 400: the body is not what its content type promises.
    #[error("{field}: {reason}")]
    MalformedBody {
        /// Where.
        field: String,
        /// What.
        reason: String,
    },
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 413: the body or the batch is over its limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 413: events over the event size limit (and any other invalid ones).
    #[error("{} event(s) refused, at least one over the event size limit; nothing was published", .0.len())]
    EventsTooLarge(Vec<EventFailure>),
    /// 429: over the key's rate.
    #[error("{message}")]
    RateLimited {
        /// How long to wait.
        retry_after: Duration,
        /// What happened.
        message: String,
    },
    /// 503: the broker did not confirm some events; those that it did are
    /// listed, and a re-send of the whole request publishes only the rest.
    #[error("the broker did not confirm {} event(s); send the request again", .failures.len())]
    BrokerUnavailable {
        /// The events not published.
        failures: Vec<EventFailure>,
        /// Indexes of events that are safe: confirmed now, or accepted before.
        accepted: Vec<usize>,
    },
    /// 503: the key store or the idempotency store is unreachable.
    #[error("the gateway's database is unavailable")]
    DatabaseUnavailable,
    /// 503: the request took longer than the gateway allows.
    #[error("the request did not complete within {0:?}; send it again")]
    Timeout(Duration),
}

impl GatewayError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::InvalidEvents(_) | GatewayError::MalformedBody { .. } => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::PayloadTooLarge(_) | GatewayError::EventsTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::BrokerUnavailable { .. }
            | GatewayError::DatabaseUnavailable
            | GatewayError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable `error` code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Unauthenticated(AuthenticationError::Missing) => "missing_api_key",
            GatewayError::Unauthenticated(AuthenticationError::Invalid) => "invalid_api_key",
            GatewayError::Forbidden(_) => "forbidden",
            GatewayError::InvalidEvents(_) => "invalid_events",
            GatewayError::MalformedBody { .. } => "malformed_body",
            GatewayError::UnsupportedMediaType(_) => "unsupported_media_type",
            GatewayError::PayloadTooLarge(_) | GatewayError::EventsTooLarge(_) => {
                "payload_too_large"
            }
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::BrokerUnavailable { .. } => "broker_unavailable",
            GatewayError::DatabaseUnavailable => "database_unavailable",
            GatewayError::Timeout(_) => "timeout",
        }
    }

    /// One value of every variant, for checks that every answer is
    /// documented. The match below fails to compile when a variant is
    /// added, as a reminder to add it here.
    pub fn examples() -> Vec<GatewayError> {
        let examples = vec![
            GatewayError::Unauthenticated(AuthenticationError::Missing),
            GatewayError::Unauthenticated(AuthenticationError::Invalid),
            GatewayError::Forbidden(Vec::new()),
            GatewayError::InvalidEvents(Vec::new()),
            GatewayError::MalformedBody {
                field: "$".to_owned(),
                reason: String::new(),
            },
            GatewayError::UnsupportedMediaType(String::new()),
            GatewayError::PayloadTooLarge(String::new()),
            GatewayError::EventsTooLarge(Vec::new()),
            GatewayError::RateLimited {
                retry_after: Duration::from_secs(1),
                message: String::new(),
            },
            GatewayError::BrokerUnavailable {
                failures: Vec::new(),
                accepted: Vec::new(),
            },
            GatewayError::DatabaseUnavailable,
            GatewayError::Timeout(Duration::from_secs(1)),
        ];
        for example in &examples {
            match example {
                GatewayError::Unauthenticated(_)
                | GatewayError::Forbidden(_)
                | GatewayError::InvalidEvents(_)
                | GatewayError::MalformedBody { .. }
                | GatewayError::UnsupportedMediaType(_)
                | GatewayError::PayloadTooLarge(_)
                | GatewayError::EventsTooLarge(_)
                | GatewayError::RateLimited { .. }
                | GatewayError::BrokerUnavailable { .. }
                | GatewayError::DatabaseUnavailable
                | GatewayError::Timeout(_) => {}
            }
        }
        examples
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::RateLimited { retry_after, .. } => Some(*retry_after),
            GatewayError::BrokerUnavailable { .. }
            | GatewayError::DatabaseUnavailable
            | GatewayError::Timeout(_) => Some(RETRY_AFTER_UNAVAILABLE),
            _ => None,
        }
    }
}

impl From<RequestError> for GatewayError {
    fn from(error: RequestError) -> Self {
        match error {
            RequestError::UnsupportedMediaType(_) => {
                GatewayError::UnsupportedMediaType(error.to_string())
            }
            RequestError::TooManyEvents { .. } => GatewayError::PayloadTooLarge(error.to_string()),
            RequestError::Malformed { field, reason } => {
                GatewayError::MalformedBody { field, reason }
            }
        }
    }
}

impl From<RateLimited> for GatewayError {
    fn from(limited: RateLimited) -> Self {
        // A request larger than the burst can never pass: waiting would
        // not help, so it is not a 429.
        if limited.over_burst {
            return GatewayError::PayloadTooLarge(
                "more events in one request than this key's burst allows; send smaller batches"
                    .to_owned(),
            );
        }
        GatewayError::RateLimited {
            retry_after: limited.retry_after,
            message: "this key is over its rate limit; slow down".to_owned(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    failures: Option<&'a [EventFailure]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accepted: Option<&'a [usize]>,
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (failures, accepted) = match &self {
            GatewayError::Forbidden(failures)
            | GatewayError::InvalidEvents(failures)
            | GatewayError::EventsTooLarge(failures) => (Some(failures.as_slice()), None),
            GatewayError::BrokerUnavailable { failures, accepted } => {
                (Some(failures.as_slice()), Some(accepted.as_slice()))
            }
            _ => (None, None),
        };
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
            failures,
            accepted,
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(wait) = self.retry_after() {
            // Whole seconds, rounded up, at least one.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if matches!(self, GatewayError::Unauthenticated(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchyard\""),
            );
        }
        response
    }
}
