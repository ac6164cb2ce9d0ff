//! Business-rule validation of payloads, with errors that name the field.

use std::fmt;

/// A payload broke a rule; `field` is a dotted path inside `data`
/// (`lines[2].quantity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Path of the offending field, relative to the payload.
    pub field: String,
    /// What is wrong with it, as a sentence fragment ("must be at least 1").
    pub reason: String,
}

impl ValidationError {
    /// A rule broken by `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error seen from a parent: `within("lines[2]")` turns
    /// `quantity` into `lines[2].quantity`.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ValidationError {}

/// JSON Schema pattern of free text: not only white space, no NUL (what
/// [`check_text`] and the decoder's NUL rule accept).
///
/// White space is spelled out as Rust's `char::is_whitespace` (Unicode's
/// White_Space) sees it, since regex engines disagree on what `\s` means.
pub const TEXT_PATTERN: &str = r"^[^\u0000]*[^\u0000\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$";
/// JSON Schema pattern of a URI-reference: printable ASCII, no spaces.
pub const URI_REFERENCE_PATTERN: &str = r"^[!-~]+$";
/// JSON Schema pattern of an identifier: printable ASCII, not blank.
pub const ASCII_TEXT_PATTERN: &str = r"^[ -~]*[!-~][ -~]*$";
/// JSON Schema pattern of an e-mail address as [`check_email`] reads it
/// (ASCII here, so that the 254-character limit is also 254 bytes).
pub const EMAIL_PATTERN: &str = r"^[!-?A-~]+@[!-?A-~]+$";

/// The largest integer every JSON implementation reads exactly (I-JSON,
/// RFC 7493): 2^53 − 1. Integer fields hold at most this, either sign.
pub const MAX_JSON_INTEGER: i64 = (1 << 53) - 1;

/// Deserializes an integer field as JSON Schema reads `"type": "integer"`:
/// `3` and `3.0` are both the integer 3. Refused: a fraction, and anything
/// beyond ±(2^53 − 1), where a JSON number may already have been rounded.
pub fn json_integer<'de, D>(deserializer: D) -> Result<i64, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    let out_of_range = || {
        serde::de::Error::custom(format!(
            "must be an integer from -{MAX_JSON_INTEGER} to {MAX_JSON_INTEGER}"
        ))
    };
    let number = serde_json::Number::deserialize(deserializer)?;
    let value = if let Some(value) = number.as_i64() {
        value
    } else if let Some(value) = number.as_f64().filter(|value| value.fract() == 0.0) {
        // Exact: |value| <= 2^53 - 1 is checked below before any use.
        if value.abs() > MAX_JSON_INTEGER as f64 {
            return Err(out_of_range());
        }
        value as i64
    } else if number.is_f64() {
        return Err(serde::de::Error::custom(format!(
            "must be a whole number, got {number}"
        )));
    } else {
        return Err(out_of_range());
    };
    if value.unsigned_abs() > MAX_JSON_INTEGER.unsigned_abs() {
        return Err(out_of_range());
    }
    Ok(value)
}

/// Deserializes a UUID written in its hyphenated form only (8-4-4-4-12 hex
/// digits, what JSON Schema's `uuid` format means); the `uuid` crate alone
/// would also take the simple, braced and URN forms.
pub fn hyphenated_uuid<'de, D>(deserializer: D) -> Result<uuid::Uuid, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
    Some(text.as_ref())
        .filter(|text| text.len() == 36)
        .and_then(|text| uuid::Uuid::parse_str(text).ok())
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "must be a UUID in its hyphenated form (8-4-4-4-12 hex digits), got {text:?}"
            ))
        })
}

/// Implemented by every payload: checks the rules serde cannot express.
pub trait Validate {
    /// `Ok` when every field holds a value the business accepts.
    fn validate(&self) -> Result<(), ValidationError>;
}

/// Non-empty text of at most `max_chars` characters, not only white space.
pub fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max_chars} characters, got {chars}"),
        ));
    }
    Ok(())
}

/// A SKU: 1–64 characters of ASCII letters, digits, `-`, `_` and `.`.
pub fn check_sku(field: &str, value: &str) -> Result<(), ValidationError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if value.is_empty() || value.len() > 64 || !value.chars().all(allowed) {
        return Err(ValidationError::new(
            field,
            "must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
        ));
    }
    Ok(())
}

/// An ISO 4217-shaped currency code: exactly three upper-case ASCII letters.
pub fn check_currency(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.len() != 3 || !value.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(ValidationError::new(
            field,
            "must be an ISO 4217 code of three upper-case letters",
        ));
    }
    Ok(())
}

/// An e-mail address in the loose sense: one `@` with text on both sides, ≤ 254 bytes.
pub fn check_email(field: &str, value: &str) -> Result<(), ValidationError> {
    let shaped = match value.split_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !domain.contains('@'),
        None => false,
    };
    if !shaped || value.len() > 254 || value.chars().any(char::is_whitespace) {
        return Err(ValidationError::new(field, "must be an e-mail address"));
    }
    Ok(())
}

/// A count or amount of at least 1.
pub fn check_positive(field: &str, value: i64) -> Result<(), ValidationError> {
    if value < 1 {
        return Err(ValidationError::new(
            field,
            format!("must be at least 1, got {value}"),
        ));
    }
    Ok(())
}

/// A count or amount of at most `max`.
pub fn check_at_most(field: &str, value: i64, max: i64) -> Result<(), ValidationError> {
    if value > max {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max}, got {value}"),
        ));
    }
    Ok(())
}

/// An amount of zero or more.
pub fn check_non_negative(field: &str, value: i64) -> Result<(), ValidationError> {
    if value < 0 {
        return Err(ValidationError::new(
            field,
            format!("must not be negative, got {value}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every character the text pattern treats as blank is white space to
    /// Rust, and the other way round (over the whole Basic Multilingual Plane).
    #[test]
    fn the_text_pattern_spells_out_rusts_white_space() {
        let listed: Vec<char> =
            "\t\n\u{b}\u{c}\r \u{85}\u{a0}\u{1680}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}"
                .chars()
                .chain('\u{2000}'..='\u{200a}')
                .collect();
        for c in (0..=0xFFFF).filter_map(char::from_u32) {
            assert_eq!(c.is_whitespace(), listed.contains(&c), "{:?}", c);
        }
    }
}
