//! The CloudEvents 1.0 JSON structured-mode envelope exactly as it travels.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits::{MAX_ATTRIBUTE_CHARS, MAX_SHORT_ATTRIBUTE_BYTES};
use super::validation::{ASCII_TEXT_PATTERN, TEXT_PATTERN, URI_REFERENCE_PATTERN};

/// JSON Schema pattern of `traceparent`.
const TRACEPARENT_PATTERN: &str = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$";
/// JSON Schema pattern of `dataschema`.
const DATASCHEMA_PATTERN: &str = "^urn:switchyard:schema:[a-z_.]+:v[1-9][0-9]*$";

/// The only CloudEvents spec version accepted.
pub const SPEC_VERSION: &str = "1.0";
/// Media type of a structured-mode CloudEvent (the AMQP `content_type`).
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// Media type of `data`.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// A CloudEvent in JSON structured mode. Attribute names are the spec's;
/// `correlationid`, `causationid`, `traceparent` and `partitionkey` are
/// extension attributes.
// `D` is how `data` is held: parsed (`serde_json::Value`, the default), or
// as its raw JSON text (`Box<serde_json::value::RawValue>`), which the
// decoder reads straight into the payload's type. (Not in the doc comment:
// that is the schema's description.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CloudEventEnvelope")]
pub struct CloudEventEnvelope<D = serde_json::Value> {
    /// Always `"1.0"`.
    #[schemars(extend("const" = "1.0"))]
    pub specversion: String,
    /// The event id: a UUID (new ids are version 7). Duplicates share it.
    #[schemars(extend("format" = "uuid"))]
    pub id: String,
    /// URI-reference of the producing system, e.g. `/checkout`: 1–255
    /// printable ASCII characters (it is also the AMQP `app_id`).
    #[schemars(length(min = 1, max = MAX_SHORT_ATTRIBUTE_BYTES), pattern(URI_REFERENCE_PATTERN))]
    pub source: String,
    /// Event type from the catalog, e.g. `order.placed`; also the routing key.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// What it is about inside the source, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_ATTRIBUTE_CHARS), pattern(TEXT_PATTERN))]
    pub subject: Option<String>,
    /// `application/json` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["application/json", null]))]
    pub datacontenttype: Option<String>,
    /// `urn:switchyard:schema:<type>:v<N>`; when absent, the data is read
    /// as the one version of its type whose fields it matches exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DATASCHEMA_PATTERN))]
    pub dataschema: Option<String>,
    /// The payload, shaped by the type's schema version.
    pub data: D,
    /// Id shared by every event of one business flow: 1–255 printable ASCII
    /// characters (it is also the AMQP `correlation_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_SHORT_ATTRIBUTE_BYTES), pattern(ASCII_TEXT_PATTERN))]
    pub correlationid: Option<String>,
    /// Id of the event that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_ATTRIBUTE_CHARS), pattern(TEXT_PATTERN))]
    pub causationid: Option<String>,
    /// W3C trace context of the producer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(TRACEPARENT_PATTERN))]
    pub traceparent: Option<String>,
    /// Aggregate key (e.g. the order id): events with one key are ordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_ATTRIBUTE_CHARS), pattern(TEXT_PATTERN))]
    pub partitionkey: Option<String>,
}
