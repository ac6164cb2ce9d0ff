//! The CloudEvents HTTP protocol binding (v1.0.2): a request body and its
//! headers → the events it carries, in structured, binary or batched mode.
//! Each event is decoded and validated on its own, so one request can
//! report every bad event with its index.

use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use percent_encoding::percent_decode_str;
use serde_json::Value;
use serde_json::value::RawValue;
use shared::events::binary::BinaryAttributes;
use shared::events::{DecodeError, Event};

/// Structured mode: one event, the whole CloudEvent as JSON.
pub const STRUCTURED: &str = shared::events::envelope::CLOUDEVENTS_JSON;
/// Batched mode: a JSON array of structured events.
pub const BATCH: &str = "application/cloudevents-batch+json";
/// The header that marks binary mode (attributes in `ce-*` headers).
const BINARY_MARKER: &str = "ce-specversion";

/// How the request carried its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `application/cloudevents+json`.
    Structured,
    /// `ce-*` headers, the body is `data`.
    Binary,
    /// `application/cloudevents-batch+json`.
    Batch,
}

impl Mode {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Structured => "structured",
            Mode::Binary => "binary",
            Mode::Batch => "batch",
        }
    }
}

/// The request as a whole cannot be read as CloudEvents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Neither a CloudEvents media type nor binary-mode headers, or a
    /// binary-mode body that is not JSON.
    #[error(
        "unsupported content type {0:?}: send application/cloudevents+json, application/cloudevents-batch+json, or binary mode (ce-* headers) with application/json data"
    )]
    UnsupportedMediaType(String),
    /// A batch with more events than allowed.
    #[error("a batch may hold at most {limit} events; this one holds {count}")]
    TooManyEvents {
        /// Events in the batch.
        count: usize,
        /// The configured maximum.
        limit: usize,
    },
    /// The body is not what the mode requires (a batch that is not an
    /// array, an empty batch, malformed JSON).
    #[error("{field}: {reason}")]
    Malformed {
        /// Where (`$` for the whole body).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// The events of one request, each decoded or with its error, in order.
#[derive(Debug)]
pub struct ParsedRequest {
    /// How they came.
    pub mode: Mode,
    /// One entry per event.
    pub events: Vec<Result<Event, DecodeError>>,
}

/// Reads the events of a request.
pub fn parse(
    headers: &HeaderMap,
    body: &[u8],
    max_event_bytes: usize,
    max_batch_events: usize,
) -> Result<ParsedRequest, RequestError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let essence = media_type_essence(content_type);
    if essence == STRUCTURED {
        return Ok(ParsedRequest {
            mode: Mode::Structured,
            events: vec![Event::decode(body, max_event_bytes)],
        });
    }
    if essence == BATCH {
        return parse_batch(body, max_event_bytes, max_batch_events);
    }
    if headers.contains_key(BINARY_MARKER) {
        return parse_binary(headers, &essence, content_type, body, max_event_bytes);
    }
    Err(RequestError::UnsupportedMediaType(content_type.to_owned()))
}

/// `Application/CloudEvents+JSON; charset=utf-8` → `application/cloudevents+json`.
fn media_type_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn parse_batch(
    body: &[u8],
    max_event_bytes: usize,
    max_batch_events: usize,
) -> Result<ParsedRequest, RequestError> {
    // Each element is kept as its raw text, so it is decoded (and held to
    // the single-event size limit) by `Event::decode` like any other event.
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|error| {
        let is_array = body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[');
        RequestError::Malformed {
            field: "$".to_owned(),
            reason: if is_array || serde_json::from_slice::<Value>(body).is_err() {
                format!("not valid JSON: {error}")
            } else {
                "a batch must be a JSON array of CloudEvents".to_owned()
            },
        }
    })?;
    if items.is_empty() {
        return Err(RequestError::Malformed {
            field: "$".to_owned(),
            reason: "a batch must hold at least one event".to_owned(),
        });
    }
    if items.len() > max_batch_events {
        return Err(RequestError::TooManyEvents {
            count: items.len(),
            limit: max_batch_events,
        });
    }
    let events = items
        .into_iter()
        .map(|item| Event::decode(item.get().as_bytes(), max_event_bytes))
        .collect();
    Ok(ParsedRequest {
        mode: Mode::Batch,
        events,
    })
}

/// Binary mode: every `ce-<name>` header is the attribute `<name>`
/// (percent-decoded, as the binding requires), `Content-Type` is
/// `datacontenttype`, the body is `data`; decoded by the same code as
/// binary mode over AMQP. W3C `traceparent` is read from its own header
/// when there is no `ce-traceparent`.
fn parse_binary(
    headers: &HeaderMap,
    essence: &str,
    content_type: &str,
    body: &[u8],
    max_event_bytes: usize,
) -> Result<ParsedRequest, RequestError> {
    if essence != "application/json" {
        return Err(RequestError::UnsupportedMediaType(content_type.to_owned()));
    }
    let event = (|| {
        let mut attributes = BinaryAttributes::new();
        for (name, value) in headers {
            let Some(attribute) = name.as_str().strip_prefix("ce-") else {
                continue;
            };
            let text = value
                .to_str()
                .ok()
                .and_then(|raw| percent_decode_str(raw).decode_utf8().ok())
                .ok_or_else(|| DecodeError::Malformed {
                    field: attribute.to_owned(),
                    reason: format!("header ce-{attribute} is not valid UTF-8"),
                })?;
            attributes.insert(attribute, name.as_str(), text.into_owned())?;
        }
        let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
        attributes.traceparent_fallback(traceparent.map(str::to_owned))?;
        Event::from_binary(attributes, Some(essence), body, max_event_bytes)
    })();
    Ok(ParsedRequest {
        mode: Mode::Binary,
        events: vec![event],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use shared::events::DEFAULT_MAX_EVENT_BYTES;
    use shared::simulation::StoreTraffic;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn parse_with(headers: &HeaderMap, body: &[u8]) -> Result<ParsedRequest, RequestError> {
        parse(headers, body, DEFAULT_MAX_EVENT_BYTES, 3)
    }

    #[test]
    fn structured_mode_accepts_parameters_and_any_case() {
        let event = StoreTraffic::new(1).next_event();
        let parsed = parse_with(
            &headers(&[(
                "content-type",
                "Application/CloudEvents+JSON; charset=utf-8",
            )]),
            &event.to_json_bytes(),
        )
        .unwrap();
        assert_eq!(parsed.mode, Mode::Structured);
        assert_eq!(parsed.events[0].as_ref().unwrap(), &event);
    }

    #[test]
    fn binary_mode_reads_percent_encoded_attributes_and_the_body_as_data() {
        let event = StoreTraffic::new(2).next_event();
        let envelope = event.to_envelope();
        let source = format!("{}/caf%25C3%25A9%2Fx", envelope.source);
        let parsed = parse_with(
            &headers(&[
                ("content-type", "application/json"),
                ("ce-specversion", "1.0"),
                ("ce-id", &envelope.id),
                ("ce-source", &source),
                ("ce-type", &envelope.event_type),
                ("ce-time", &envelope.time),
            ]),
            &serde_json::to_vec(&envelope.data).unwrap(),
        )
        .unwrap();
        assert_eq!(parsed.mode, Mode::Binary);
        let decoded = parsed.events[0].as_ref().unwrap();
        assert_eq!(decoded.id, event.id);
        assert_eq!(decoded.source, format!("{}/caf%C3%A9/x", envelope.source));
        assert_eq!(decoded.payload, event.payload);
    }

    #[test]
    fn binary_mode_reports_a_missing_attribute_by_name() {
        let parsed = parse_with(
            &headers(&[
                ("content-type", "application/json"),
                ("ce-specversion", "1.0"),
            ]),
            b"{}",
        )
        .unwrap();
        assert_eq!(parsed.events[0].as_ref().unwrap_err().field(), "id");
    }

    #[test]
    fn batches_report_each_event_and_are_bounded() {
        let good = StoreTraffic::new(3).next_event();
        let body = format!(
            "[{}, {{\"specversion\": \"1.0\"}}]",
            String::from_utf8(good.to_json_bytes()).unwrap()
        );
        let parsed = parse_with(&headers(&[("content-type", BATCH)]), body.as_bytes()).unwrap();
        assert_eq!(parsed.mode, Mode::Batch);
        assert!(parsed.events[0].is_ok());
        assert!(parsed.events[1].is_err());
        assert_eq!(
            parse_with(&headers(&[("content-type", BATCH)]), b"[1,2,3,4]").unwrap_err(),
            RequestError::TooManyEvents { count: 4, limit: 3 }
        );
        assert!(matches!(
            parse_with(&headers(&[("content-type", BATCH)]), b"[]"),
            Err(RequestError::Malformed { .. })
        ));
        assert!(matches!(
            parse_with(&headers(&[("content-type", BATCH)]), b"{}"),
            Err(RequestError::Malformed { .. })
        ));
    }

    #[test]
    fn other_media_types_are_unsupported() {
        for content_type in ["application/json", "text/plain", ""] {
            assert!(matches!(
                parse_with(&headers(&[("content-type", content_type)]), b"{}"),
                Err(RequestError::UnsupportedMediaType(_))
            ));
        }
        assert!(matches!(
            parse_with(
                &headers(&[("content-type", "text/xml"), ("ce-specversion", "1.0")]),
                b"<a/>"
            ),
            Err(RequestError::UnsupportedMediaType(_))
        ));
    }
}
