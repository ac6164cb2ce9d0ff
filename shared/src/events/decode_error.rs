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
    /// The body is not a JSON document at all (or not a JSON object).
    #[error("$: {0}")]
    NotJson(String),
    /// A field or attribute that the event's schema does not define: it is
    /// refused rather than silently dropped.
    #[error("{field}: {reason}")]
    UnknownField {
        /// Dotted path of the field (`data.currency`) or the attribute name.
        field: String,
        /// Which schema lacks it, and what to send instead.
        reason: String,
    },
    /// Truncated, a wrong JSON type or a missing field.
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
            DecodeError::TooLarge { .. } | DecodeError::NotJson(_) => "$",
            DecodeError::Malformed { field, .. }
            | DecodeError::Invalid { field, .. }
            | DecodeError::UnknownField { field, .. } => field,
            DecodeError::UnknownType(_) => "type",
            DecodeError::UnsupportedVersion { .. } => "dataschema",
        }
    }

    /// What is wrong, without the field in front (for a message that
    /// names the field on its own: `data.quantity: must be at least 1`,
    /// never `data.quantity: data.quantity: …`).
    pub fn reason(&self) -> String {
        let text = self.to_string();
        match text
            .strip_prefix(self.field())
            .and_then(|rest| rest.strip_prefix(": "))
        {
            Some(reason) => reason.to_owned(),
            None => text,
        }
    }

    /// A stable machine-readable code for the kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::UnknownField { .. } => "unknown_field",
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
        // serde names a missing or unknown field only in its message:
        // "missing field `x`", "unknown field `x`, expected one of …".
        let named = |prefix: &str| {
            reason
                .strip_prefix(prefix)
                .and_then(|rest| rest.split_once('`'))
                .map(|(name, _)| name.to_owned())
        };
        let missing = named("missing field `");
        let unknown = named("unknown field `");
        // The path already ends at an unknown field, not at a missing one.
        if let Some(name) = missing.as_deref() {
            segments.push(name);
        }
        let field = if segments.is_empty() {
            "$".to_owned()
        } else {
            segments.join(".")
        };
        if missing.is_some() {
            return DecodeError::Malformed {
                field,
                reason: "is required".to_owned(),
            };
        }
        if unknown.is_some() {
            return DecodeError::UnknownField {
                field,
                reason: "is not defined by this schema".to_owned(),
            };
        }
        DecodeError::Malformed { field, reason }
    }

    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        DecodeError::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}
