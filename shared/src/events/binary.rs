//! CloudEvents binary mode, for every transport: the attributes travel
//! beside the data (HTTP `ce-*` headers; AMQP headers named `ce-…`,
//! `cloudEvents_…` or `cloudEvents:…`), the content type is
//! `datacontenttype`, and the body is `data`. The attributes are gathered
//! into the structured-mode envelope and decoded by the same code, so both
//! modes accept the same events and refuse bad ones with the same errors.

use serde_json::{Map, Value};

use super::decode_error::DecodeError;
use super::event::Event;

/// Attributes a binary-mode transport may not carry as headers: the body is
/// `data`, and the content type is `datacontenttype`.
const CARRIED_ELSEWHERE: [&str; 2] = ["data", "datacontenttype"];
/// The W3C trace-context attribute, and the header of the same name.
const TRACEPARENT: &str = "traceparent";

/// The attributes of one binary-mode event, gathered from its headers.
#[derive(Debug, Default, Clone)]
pub struct BinaryAttributes {
    attributes: Map<String, Value>,
}

impl BinaryAttributes {
    /// No attributes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds attribute `name` (its header's prefix removed). `header` is the
    /// header as sent, for the error when the attribute is given twice or
    /// is one that travels elsewhere.
    pub fn insert(&mut self, name: &str, header: &str, value: String) -> Result<(), DecodeError> {
        if CARRIED_ELSEWHERE.contains(&name) {
            return Err(DecodeError::invalid(
                name,
                format!(
                    "header {header} is not allowed in binary mode: data is the body and datacontenttype the content type"
                ),
            ));
        }
        if self.attributes.contains_key(name) {
            return Err(DecodeError::invalid(
                name,
                format!("is given twice (again as header {header})"),
            ));
        }
        self.attributes
            .insert(name.to_owned(), Value::String(value));
        Ok(())
    }

    /// W3C trace context from the transport's own `traceparent` header,
    /// used when no attribute carries it.
    pub fn traceparent_fallback(&mut self, header: Option<String>) -> Result<(), DecodeError> {
        match header {
            Some(value) if !self.contains(TRACEPARENT) => {
                self.insert(TRACEPARENT, TRACEPARENT, value)
            }
            _ => Ok(()),
        }
    }

    /// Whether `name` was given.
    pub fn contains(&self, name: &str) -> bool {
        self.attributes.contains_key(name)
    }

    /// The string value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).and_then(Value::as_str)
    }
}

impl Event {
    /// Decodes a binary-mode event: `attributes` from the headers,
    /// `content_type` (absent means `application/json`) and the body as
    /// `data`. The body is held to `max_event_bytes`.
    pub fn from_binary(
        attributes: BinaryAttributes,
        content_type: Option<&str>,
        body: &[u8],
        max_event_bytes: usize,
    ) -> Result<Event, DecodeError> {
        if body.len() > max_event_bytes {
            return Err(DecodeError::TooLarge {
                size: body.len(),
                limit: max_event_bytes,
            });
        }
        let mut envelope = attributes.attributes;
        if let Some(content_type) = content_type {
            envelope.insert("datacontenttype".to_owned(), content_type.into());
        }
        let data: Value = serde_json::from_slice(body).map_err(|error| {
            DecodeError::NotJson(format!(
                "the body (the event's data) is not valid JSON: {error}"
            ))
        })?;
        envelope.insert("data".to_owned(), data);
        Event::from_json_value(Value::Object(envelope))
    }
}
