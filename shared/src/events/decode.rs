//! Bytes → [`Event`]: size limit, JSON, envelope attributes, then payload.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::decode_error::DecodeError;
use super::envelope::{CloudEventEnvelope, SPEC_VERSION};
use super::event::Event;
use super::event_type::{EventType, SCHEMA_URI_PREFIX};
use super::limits::{MAX_ATTRIBUTE_CHARS, MAX_SHORT_ATTRIBUTE_BYTES};
use super::payload::{EventPayload, PayloadData};

impl Event {
    /// Decodes a structured-mode CloudEvent, refusing bodies over `max_bytes`.
    /// Never panics: any input either yields a valid event or a [`DecodeError`].
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Event, DecodeError> {
        if bytes.len() > max_bytes {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                limit: max_bytes,
            });
        }
        if let Some(event) = Self::decode_direct(bytes) {
            return Ok(event);
        }
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|error| DecodeError::NotJson(format!("not valid JSON: {error}")))?;
        Self::from_json_value(value)
    }

    /// The common case without a JSON tree: the envelope read straight from
    /// the bytes, `data` straight into its version's type. Taken only where
    /// it cannot differ from the parsed path: an object, no `\u0000` escape
    /// anywhere (so no NUL in any string or key), a `dataschema` (one
    /// version, no guessing) and no failure at all — a duplicate key, which
    /// the parsed path reads as its last value, fails here; `None` sends the
    /// bytes down the parsed path, which also words every error.
    fn decode_direct(bytes: &[u8]) -> Option<Event> {
        let opens_object = bytes
            .iter()
            .find(|byte| !byte.is_ascii_whitespace())
            .is_some_and(|byte| *byte == b'{');
        if !opens_object || may_hold_nul(bytes) {
            return None;
        }
        let envelope: CloudEventEnvelope<Box<serde_json::value::RawValue>> =
            serde_json::from_slice(bytes).ok()?;
        envelope.dataschema.as_ref()?;
        Self::from_envelope(envelope).ok()
    }

    /// Decodes an already parsed JSON document (the outbox's rows, binary
    /// mode's attributes).
    pub fn from_json_value(value: serde_json::Value) -> Result<Event, DecodeError> {
        if !value.is_object() {
            return Err(DecodeError::NotJson(
                "an event must be a JSON object".to_owned(),
            ));
        }
        // PostgreSQL's text and jsonb cannot hold NUL: refuse it here, with
        // the field named, rather than fail later in a worker's transaction.
        check_no_nul(&value, "")?;
        let envelope: CloudEventEnvelope =
            serde_path_to_error::deserialize(value).map_err(|error| {
                let path = error.path().to_string();
                DecodeError::from_serde(None, &path, error.into_inner().to_string())
            })?;
        Self::from_envelope(envelope)
    }

    /// Checks every attribute of `envelope` and decodes its `data`.
    pub fn from_envelope<D: PayloadData>(
        envelope: CloudEventEnvelope<D>,
    ) -> Result<Event, DecodeError> {
        if envelope.specversion != SPEC_VERSION {
            return Err(DecodeError::invalid("specversion", "must be \"1.0\""));
        }
        // The hyphenated form only (what JSON Schema's `uuid` format means).
        let id = Some(envelope.id.as_str())
            .filter(|id| id.len() == 36)
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or_else(|| {
                DecodeError::invalid(
                    "id",
                    "must be a UUID in its hyphenated form (8-4-4-4-12 hex digits)",
                )
            })?;
        check_ascii_attribute("source", &envelope.source, false)?;
        let event_type: EventType = envelope
            .event_type
            .parse()
            .map_err(|_| DecodeError::UnknownType(envelope.event_type.clone()))?;
        let time = DateTime::parse_from_rfc3339(&envelope.time)
            .map_err(|_| DecodeError::invalid("time", "must be an RFC 3339 timestamp"))?
            .with_timezone(&Utc);
        if let Some(content_type) = &envelope.datacontenttype
            && !is_json_media_type(content_type)
        {
            return Err(DecodeError::invalid(
                "datacontenttype",
                "must be application/json",
            ));
        }
        if let Some(correlation_id) = &envelope.correlationid {
            check_ascii_attribute("correlationid", correlation_id, true)?;
        }
        for (field, value) in [
            ("subject", &envelope.subject),
            ("causationid", &envelope.causationid),
            ("partitionkey", &envelope.partitionkey),
        ] {
            if let Some(value) = value {
                check_attribute(field, value)?;
            }
        }
        if let Some(traceparent) = &envelope.traceparent {
            check_traceparent(traceparent)?;
        }
        let payload = match envelope.dataschema.as_deref() {
            Some(uri) => {
                let version = schema_version(event_type, uri)?;
                EventPayload::from_data(event_type, version, &envelope.data)?
            }
            None => EventPayload::from_unversioned_data(event_type, &envelope.data)?,
        };
        Ok(Event {
            id,
            source: envelope.source,
            time,
            subject: envelope.subject,
            correlation_id: envelope.correlationid,
            causation_id: envelope.causationid,
            traceparent: envelope.traceparent,
            partition_key: envelope
                .partitionkey
                .unwrap_or_else(|| payload.aggregate_key()),
            payload,
        })
    }
}

/// The schema version named by a `dataschema` URI.
fn schema_version(event_type: EventType, uri: &str) -> Result<u32, DecodeError> {
    let expected_prefix = format!("{SCHEMA_URI_PREFIX}{}:v", event_type.as_str());
    let version: u32 = uri
        .strip_prefix(&expected_prefix)
        .and_then(|digits| digits.parse().ok())
        .filter(|version| *version >= 1)
        .ok_or_else(|| {
            DecodeError::invalid(
                "dataschema",
                format!("must be {expected_prefix}<version> for this type"),
            )
        })?;
    if version > event_type.current_version() {
        return Err(DecodeError::UnsupportedVersion {
            event_type,
            version,
            newest: event_type.current_version(),
        });
    }
    Ok(version)
}

/// An attribute that is also an AMQP short string (255 bytes): printable
/// ASCII (spaces only where `spaces`), so characters and bytes are one.
fn check_ascii_attribute(field: &str, value: &str, spaces: bool) -> Result<(), DecodeError> {
    if value.trim().is_empty() {
        return Err(DecodeError::invalid(field, "must not be empty"));
    }
    let printable = |c: char| c.is_ascii_graphic() || (spaces && c == ' ');
    if let Some(bad) = value.chars().find(|c| !printable(*c)) {
        let what = if spaces {
            "printable ASCII"
        } else {
            "printable ASCII without spaces, as a URI-reference is (percent-encode others)"
        };
        return Err(DecodeError::invalid(
            field,
            format!("must be {what}; found {bad:?}"),
        ));
    }
    if value.len() > MAX_SHORT_ATTRIBUTE_BYTES {
        return Err(DecodeError::invalid(
            field,
            format!(
                "must be at most {MAX_SHORT_ATTRIBUTE_BYTES} bytes (it travels in an AMQP short string), got {}",
                value.len()
            ),
        ));
    }
    Ok(())
}

fn check_attribute(field: &str, value: &str) -> Result<(), DecodeError> {
    if value.trim().is_empty() {
        return Err(DecodeError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_ATTRIBUTE_CHARS {
        return Err(DecodeError::invalid(
            field,
            format!("must be at most {MAX_ATTRIBUTE_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Whether JSON text may hold a NUL character: JSON writes one only as the
/// escape `\u0000` (a raw control character is invalid JSON).
fn may_hold_nul(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|window| window == br"\u0000")
}

/// Refuses a NUL character in any string or object key of `value`, naming
/// where it is (`source`, `data.lines[0].sku`).
fn check_no_nul(value: &serde_json::Value, path: &str) -> Result<(), DecodeError> {
    use serde_json::Value;
    let nul = |path: &str| {
        let field = if path.is_empty() { "$" } else { path };
        DecodeError::invalid(field, "must not contain a NUL character (\\u0000)")
    };
    match value {
        Value::String(text) if text.contains('\0') => Err(nul(path)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(index, item)| check_no_nul(item, &format!("{path}[{index}]"))),
        Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                return Err(nul(&child));
            }
            check_no_nul(item, &child)
        }),
        _ => Ok(()),
    }
}

fn is_json_media_type(content_type: &str) -> bool {
    is_media_type(content_type, "application/json")
}

/// Whether `content_type` (parameters and case aside) is `essence`.
pub(crate) fn is_media_type(content_type: &str, essence: &str) -> bool {
    let actual = content_type.split(';').next().unwrap_or_default().trim();
    actual.eq_ignore_ascii_case(essence)
}

/// `version-traceid-parentid-flags`: 2, 32, 16 and 2 lower-case hex digits.
fn check_traceparent(value: &str) -> Result<(), DecodeError> {
    let lengths: Vec<usize> = value.split('-').map(str::len).collect();
    let hex = value
        .chars()
        .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c));
    if lengths != [2, 32, 16, 2] || !hex {
        return Err(DecodeError::invalid(
            "traceparent",
            "must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::events::limits::DEFAULT_MAX_EVENT_BYTES;
    use crate::simulation::StoreTraffic;

    /// What `decode` gave before the direct path: the parsed path alone.
    fn parsed_path(bytes: &[u8]) -> Result<Event, DecodeError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|error| DecodeError::NotJson(format!("not valid JSON: {error}")))?;
        Event::from_json_value(value)
    }

    fn edited(bytes: &[u8], edit: impl FnOnce(&str) -> String) -> Vec<u8> {
        edit(std::str::from_utf8(bytes).unwrap()).into_bytes()
    }

    #[test]
    fn the_direct_path_decodes_every_store_event_as_the_parsed_path_does() {
        let mut store = StoreTraffic::new(5);
        let mut types = std::collections::BTreeSet::new();
        for _ in 0..3_000 {
            let event = store.next_event();
            types.insert(event.event_type());
            let bytes = event.to_json_bytes();
            let direct = Event::decode_direct(&bytes).expect("taken for a producer's event");
            assert_eq!(direct, event);
            assert_eq!(Ok(direct), parsed_path(&bytes));
        }
        assert_eq!(types.len(), EventType::ALL.len(), "every type seen");
    }

    #[test]
    fn whatever_the_direct_path_cannot_vouch_for_decodes_as_before() {
        let event = StoreTraffic::new(7).next_event();
        let bytes = event.to_json_bytes();
        let source = format!("\"source\":\"{}\"", event.source);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            // The parsed path keeps the last of duplicate keys.
            (
                "duplicate attribute",
                edited(&bytes, |text| {
                    text.replacen(&source, &format!("{source},\"source\":\"/other\""), 1)
                }),
            ),
            (
                "duplicate data field",
                edited(&bytes, |text| {
                    text.replacen("\"data\":{", "\"data\":{\"x\":1,\"x\":2,", 1)
                }),
            ),
            (
                "NUL in a string",
                edited(&bytes, |text| {
                    text.replacen(&source, "\"source\":\"/a\\u0000b\"", 1)
                }),
            ),
            (
                "no dataschema",
                edited(&bytes, |text| {
                    let start = text.find(",\"dataschema\":\"").unwrap();
                    let end = start + 1 + text[start + 1..].find("\",").unwrap() + 1;
                    format!("{}{}", &text[..start], &text[end..])
                }),
            ),
            (
                "an array",
                format!("[{}]", std::str::from_utf8(&bytes).unwrap()).into_bytes(),
            ),
            ("not JSON", b"{\"id\":".to_vec()),
            (
                "an unknown attribute",
                edited(&bytes, |text| text.replacen('{', "{\"extra\":1,", 1)),
            ),
        ];
        for (case, bytes) in cases {
            assert_ne!(bytes, event.to_json_bytes(), "{case}: the edit applied");
            if case != "no dataschema" {
                assert!(Event::decode_direct(&bytes).is_none(), "{case}: not direct");
            }
            assert_eq!(
                Event::decode(&bytes, DEFAULT_MAX_EVENT_BYTES),
                parsed_path(&bytes),
                "{case}"
            );
        }
        // Accepted through the parsed path: the last duplicate wins.
        let duplicate = edited(&bytes, |text| {
            text.replacen(&source, &format!("{source},\"source\":\"/other\""), 1)
        });
        let decoded = Event::decode(&duplicate, DEFAULT_MAX_EVENT_BYTES).unwrap();
        assert_eq!(decoded.source, "/other");
    }
}
