//! The CloudEvents 1.0 JSON structured-mode envelope exactly as it travels.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only CloudEvents spec version accepted.
pub const SPEC_VERSION: &str = "1.0";
/// Media type of a structured-mode CloudEvent (the AMQP `content_type`).
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// Media type of `data`.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// A CloudEvent in JSON structured mode. Attribute names are the spec's;
/// `correlationid`, `causationid`, `traceparent` and `partitionkey` are
/// extension attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudEventEnvelope {
    /// Always `"1.0"`.
    pub specversion: String,
    /// The event id: a UUID (new ids are version 7). Duplicates share it.
    pub id: String,
    /// URI-reference of the producing system, e.g. `/checkout`.
    pub source: String,
    /// Event type from the catalog, e.g. `order.placed`; also the routing key.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened, RFC 3339.
    pub time: String,
    /// What it is about inside the source, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `application/json` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// `urn:switchyard:schema:<type>:v<N>`; absent means version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    /// The payload, shaped by the type's schema version.
    pub data: serde_json::Value,
    /// Id shared by every event of one business flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<String>,
    /// Id of the event that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
    /// W3C trace context of the producer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Aggregate key (e.g. the order id): events with one key are ordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitionkey: Option<String>,
}
