//! Every answer of the operations API other than success: a status and a
//! JSON body `{"error": code, "message": text, "field"?: name}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::dead_letters::OperationError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// Machine-readable code.
    pub error: &'static str,
    /// For a person.
    pub message: String,
    /// The request field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
            field: None,
        }
    }

    /// 401: no token, or not a live one.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "an operator token is required (Authorization: Bearer syop_…)",
        )
    }

    /// 403: the token's role may not do this.
    pub fn forbidden(needed: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the {needed} role"),
        )
    }

    /// 403: a change asked with the session cookie but without its CSRF
    /// token (a page on another origin cannot know it).
    pub fn csrf() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "a change made with the session cookie needs the session's X-CSRF-Token header",
        )
    }

    /// 400 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid", message)
        }
    }

    /// 413: the request body is over the limit (`limit` bytes, when known).
    pub fn too_large(limit: Option<usize>) -> Self {
        let message = match limit {
            Some(limit) => format!("the request body is over the limit of {limit} bytes"),
            None => "the request body is over the limit".to_owned(),
        };
        Self {
            field: Some("$".to_owned()),
            ..Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
        }
    }

    /// A JSON body that could not be read: 413 when over the size limit,
    /// else 400 naming the body.
    pub fn from_json_rejection(rejection: axum::extract::rejection::JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::too_large(None)
        } else {
            Self::invalid("$", rejection.body_text())
        }
    }

    /// A body that could not be read: 413 when over the size limit, else
    /// 400 naming the body.
    pub fn from_bytes_rejection(rejection: axum::extract::rejection::BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::too_large(None)
        } else {
            Self::invalid("$", rejection.body_text())
        }
    }

    /// Any status with its code and message.
    pub fn new_public(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self::new(status, error, message)
    }

    /// 400 for a filter that cannot be applied.
    pub fn from_filter(error: crate::dead_letters::filter::FilterError) -> Self {
        Self::invalid(error.field, error.reason)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 429: too many replays running.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", message)
    }

    /// 429: this client address failed too many token checks.
    pub fn rate_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed token checks from this address; try again later",
        )
    }

    /// 503: the database or broker is unreachable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 504: the request took longer than allowed.
    pub fn timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the request took too long; narrow the filter",
        )
    }

    /// One of each, for the OpenAPI check.
    pub fn examples() -> Vec<Self> {
        vec![
            Self::unauthenticated(),
            Self::forbidden("operator"),
            Self::csrf(),
            Self::invalid("group", "unknown"),
            Self::too_large(Some(1024)),
            Self::not_found("no dead letter 1"),
            Self::new(StatusCode::CONFLICT, "conflict", "closed"),
            Self::busy("4 replays running"),
            Self::rate_limited(),
            Self::unavailable("database"),
            Self::timeout(),
        ]
    }
}

impl From<OperationError> for ApiError {
    fn from(error: OperationError) -> Self {
        match error {
            OperationError::Filter(filter) => Self::invalid(filter.field, filter.reason),
            OperationError::Refused { field, reason } => {
                let conflict =
                    reason.contains("only open") || reason.contains("already has an open");
                if conflict {
                    Self {
                        field: Some(field),
                        ..Self::new(StatusCode::CONFLICT, "conflict", reason)
                    }
                } else {
                    Self::invalid(field, reason)
                }
            }
            OperationError::NotFound(id) => Self::not_found(format!("no dead letter {id}")),
            OperationError::Database(error) => {
                tracing::warn!(%error, "operations API: database error");
                Self::unavailable("the database failed; try again")
            }
            OperationError::Broker(error) => {
                tracing::warn!(%error, "operations API: broker error");
                Self::unavailable("the broker failed; try again")
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        OperationError::Database(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}
