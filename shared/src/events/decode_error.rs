//! Why bytes could not become an [`Event`](super::Event).

use super::event_type::EventType;

/// A message that is not a valid event. Every variant names what is wrong so
/// that an HTTP answer, a log line and a dead-letter reason can all quote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Bigger than the configured limit; not parsed at all.
    #[error("event is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Size of the message body.
        size: usize,
        /// The configured maximum.
        limit: usize,
    },
    /// Not JSON, truncated, a wrong JSON type or a missing field.
    #[error("{field}: {reason}")]
    Malformed {
        /// Dotted path of the field (`data.lines[0].quantity`), or `$` for the whole body.
        field: String,
        /// What the parser said.
        reason: String,
    },
    /// Well-formed, but a value breaks a rule (bad id, negative quantity…).
    #[error("{field}: {reason}")]
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The `type` attribute names no event type in the catalog.
    #[error("type: unknown event type {0:?}")]
    UnknownType(String),
    /// A version of the type that this build cannot read (newer than it knows).
    #[error("dataschema: {event_type} version {version} is not supported (newest known: {newest})")]
    UnsupportedVersion {
        /// The event's type.
        event_type: EventType,
        /// The version the producer declared.
        version: u32,
        /// The newest version this build decodes.
        newest: u32,
    },
}

impl DecodeError {
    /// The field the error is about (`$` for the whole message).
    pub fn field(&self) -> &str {
        match self {
            DecodeError::TooLarge { .. } => "$",
            DecodeError::Malformed { field, .. } | DecodeError::Invalid { field, .. } => field,
            DecodeError::UnknownType(_) => "type",
            DecodeError::UnsupportedVersion { .. } => "dataschema",
        }
    }

    /// A stable machine-readable code for the kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::Invalid { .. } => "invalid",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
        }
    }

    /// A serde failure at `path` (as `serde_path_to_error` prints it, `.`
    /// for the root) under `prefix`, turned into a [`DecodeError::Malformed`]
    /// whose field names the missing or mistyped field itself.
    pub(crate) fn from_serde(prefix: Option<&str>, path: &str, reason: String) -> Self {
        let mut segments: Vec<&str> = prefix.into_iter().collect();
        if path != "." {
            segments.push(path);
        }
        // serde names a missing field only in its message: "missing field `x`".
        let missing = reason
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name.to_owned());
        if let Some(name) = missing.as_deref() {
            segments.push(name);
        }
        let field = if segments.is_empty() {
            "$".to_owned()
        } else {
            segments.join(".")
        };
        let reason = if missing.is_some() {
            "is required".to_owned()
        } else {
            reason
        };
        DecodeError::Malformed { field, reason }
    }

    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        DecodeError::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}
