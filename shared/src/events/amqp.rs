//! The CloudEvents AMQP bindings as the workers read a delivery.
//!
//! - **Structured mode**: content type `application/cloudevents+json`, the
//!   body is the whole event (what Switchyard's own publishers send). A
//!   message with no CloudEvents header at all is read this way too.
//! - **Binary mode**: the attributes are headers named `ce-<attribute>`
//!   (the 0-9-1 convention of the CloudEvents SDKs' RabbitMQ bindings and
//!   Knative eventing-rabbitmq), `cloudEvents_<attribute>` or
//!   `cloudEvents:<attribute>` (the AMQP 1.0 binding's application
//!   properties, as RabbitMQ 4 shows them to 0-9-1 consumers); the
//!   `content_type` property is `datacontenttype` and the body is `data`.
//!   Header values are strings (`time` may also be an AMQP timestamp); they
//!   are not percent-encoded, unlike HTTP headers.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use uuid::Uuid;

use super::binary::BinaryAttributes;
use super::decode::is_media_type;
use super::decode_error::DecodeError;
use super::envelope::CLOUDEVENTS_JSON;
use super::event::Event;

/// Header name prefixes that carry a binary-mode attribute.
pub const ATTRIBUTE_PREFIXES: [&str; 3] = ["ce-", "cloudEvents_", "cloudEvents:"];

/// The W3C trace context header, read when no attribute carries it.
const TRACEPARENT: &str = "traceparent";

/// Decodes a delivery's body and properties in whichever mode it came.
/// Never panics: any input either yields a valid event or a [`DecodeError`].
pub fn decode_delivery(
    properties: &BasicProperties,
    body: &[u8],
    max_event_bytes: usize,
) -> Result<Event, DecodeError> {
    let content_type = properties
        .content_type()
        .as_ref()
        .map(|value| value.as_str());
    let headers = properties.headers().as_ref();
    let structured = content_type.is_some_and(|value| is_media_type(value, CLOUDEVENTS_JSON));
    match headers {
        Some(headers) if !structured && has_attribute_headers(headers) => {
            let attributes = binary_attributes(headers)?;
            Event::from_binary(attributes, content_type, body, max_event_bytes)
        }
        _ => Event::decode(body, max_event_bytes),
    }
}

/// The event id and type a message claims, read without decoding it: from
/// binary-mode headers, else from the AMQP `message_id` and `type`
/// properties. For dead letters of messages that did not decode.
pub fn claimed_identity(properties: &BasicProperties) -> (Option<Uuid>, Option<String>) {
    let header = |name: &str| {
        properties.headers().as_ref().and_then(|headers| {
            headers.inner().iter().find_map(|(key, value)| {
                (attribute_name(key.as_str())? == name)
                    .then(|| header_text(value))
                    .flatten()
            })
        })
    };
    let id = header("id")
        .or_else(|| properties.message_id().as_ref().map(|id| id.to_string()))
        .and_then(|id| Uuid::parse_str(id.trim()).ok());
    let event_type = header("type")
        .or_else(|| properties.kind().as_ref().map(|kind| kind.to_string()))
        .filter(|kind| !kind.is_empty() && kind.len() <= 255 && !kind.contains('\0'));
    (id, event_type)
}

fn has_attribute_headers(headers: &FieldTable) -> bool {
    headers
        .inner()
        .keys()
        .any(|key| attribute_name(key.as_str()).is_some())
}

/// `ce-id` → `id`; `None` for a header that is not an attribute.
fn attribute_name(header: &str) -> Option<&str> {
    ATTRIBUTE_PREFIXES.iter().find_map(|prefix| {
        let head = header.get(..prefix.len())?;
        head.eq_ignore_ascii_case(prefix)
            .then(|| &header[prefix.len()..])
            .filter(|name| !name.is_empty())
    })
}

fn binary_attributes(headers: &FieldTable) -> Result<BinaryAttributes, DecodeError> {
    let mut attributes = BinaryAttributes::new();
    for (key, value) in headers.inner() {
        let Some(name) = attribute_name(key.as_str()) else {
            continue;
        };
        let text = match (name, value) {
            ("time", AMQPValue::Timestamp(seconds)) => i64::try_from(*seconds)
                .ok()
                .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
                .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            _ => header_text(value),
        }
        .ok_or_else(|| DecodeError::Malformed {
            field: name.to_owned(),
            reason: format!("header {key} must be a UTF-8 string"),
        })?;
        attributes.insert(name, key.as_str(), text)?;
    }
    attributes.traceparent_fallback(headers.inner().get(TRACEPARENT).and_then(header_text))?;
    Ok(attributes)
}

fn header_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => String::from_utf8(text.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_stripped_whatever_their_case() {
        assert_eq!(attribute_name("ce-id"), Some("id"));
        assert_eq!(attribute_name("CE-id"), Some("id"));
        assert_eq!(attribute_name("cloudEvents_type"), Some("type"));
        assert_eq!(attribute_name("cloudEvents:source"), Some("source"));
        assert_eq!(attribute_name("ce-"), None);
        assert_eq!(attribute_name("traceparent"), None);
        assert_eq!(attribute_name("x-death"), None);
        assert_eq!(attribute_name("é"), None);
    }
}
