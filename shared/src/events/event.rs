//! [`Event`]: a decoded, validated event with its metadata.

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use super::envelope::{CloudEventEnvelope, DATA_CONTENT_TYPE, SPEC_VERSION};
use super::event_type::EventType;
use super::payload::EventPayload;

/// A valid event of the catalog, payload at its current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique id; redeliveries and re-sends keep it.
    pub id: Uuid,
    /// URI-reference of the producing system.
    pub source: String,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// Optional subject within the source.
    pub subject: Option<String>,
    /// Business flow this event belongs to.
    pub correlation_id: Option<String>,
    /// The event that caused this one.
    pub causation_id: Option<String>,
    /// W3C `traceparent` of the producer's span.
    pub traceparent: Option<String>,
    /// Ordering key; defaults to the payload's aggregate key.
    pub partition_key: String,
    /// The typed data.
    pub payload: EventPayload,
}

impl Event {
    /// A new event from `source`, with a fresh UUID v7 id, the current time
    /// and the payload's aggregate as partition key.
    pub fn new(source: impl Into<String>, payload: EventPayload) -> Self {
        Self {
            id: Uuid::now_v7(),
            source: source.into(),
            time: Utc::now(),
            subject: None,
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            partition_key: payload.aggregate_key(),
            payload,
        }
    }

    /// Marks this event as caused by `parent`: same correlation id (the
    /// parent's, or the parent's id when it had none) and causation = parent.
    pub fn caused_by(mut self, parent: &Event) -> Self {
        self.correlation_id = Some(
            parent
                .correlation_id
                .clone()
                .unwrap_or_else(|| parent.id.to_string()),
        );
        self.causation_id = Some(parent.id.to_string());
        self
    }

    /// The event's type (its routing key).
    pub fn event_type(&self) -> EventType {
        self.payload.event_type()
    }

    /// The wire envelope, with `dataschema` at the type's current version.
    pub fn to_envelope(&self) -> CloudEventEnvelope {
        let event_type = self.event_type();
        CloudEventEnvelope {
            specversion: SPEC_VERSION.to_owned(),
            id: self.id.to_string(),
            source: self.source.clone(),
            event_type: event_type.as_str().to_owned(),
            time: self.time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            subject: self.subject.clone(),
            datacontenttype: Some(DATA_CONTENT_TYPE.to_owned()),
            dataschema: Some(event_type.schema_uri(event_type.current_version())),
            data: self.payload.to_data(),
            correlationid: self.correlation_id.clone(),
            causationid: self.causation_id.clone(),
            traceparent: self.traceparent.clone(),
            partitionkey: Some(self.partition_key.clone()),
        }
    }

    /// The event as CloudEvents structured-mode JSON bytes.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // A struct of strings and JSON values always serializes.
        serde_json::to_vec(&self.to_envelope()).unwrap_or_default()
    }
}
