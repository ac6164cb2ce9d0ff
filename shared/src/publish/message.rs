//! What goes on the wire for one event.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::events::Event;
use crate::events::envelope::CLOUDEVENTS_JSON;

/// AMQP header carrying the W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// A message ready to publish: body, routing key and properties.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Routing key: the event type for new events.
    pub routing_key: String,
    /// Exchange to publish to; `None` means the publisher's events exchange.
    pub exchange: Option<String>,
    /// The body (structured-mode CloudEvent JSON for events).
    pub body: Vec<u8>,
    /// AMQP properties.
    pub properties: BasicProperties,
}

impl OutgoingMessage {
    /// The message for `event`: persistent, `message_id` = event id, `type`,
    /// `content_type`, `timestamp` = now (when it is sent to Switchyard's
    /// queues; the event's own time is in the body), `app_id` = source, `correlation_id` and
    /// the `traceparent` header. Never panics: `app_id` and `correlation_id`
    /// are AMQP short strings (255 bytes), which `Event::decode` guarantees
    /// for decoded events; a longer value built in code is left out of the
    /// properties (the body, which is the event, still carries it).
    pub fn for_event(event: &Event) -> Self {
        let mut headers = FieldTable::default();
        if let Some(traceparent) = &event.traceparent {
            headers.insert(
                TRACEPARENT_HEADER.into(),
                AMQPValue::LongString(LongString::from(traceparent.as_str())),
            );
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(event.id.to_string().into())
            .with_type(event.event_type().as_str().into())
            .with_content_type(CLOUDEVENTS_JSON.into())
            .with_timestamp(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default())
            .with_headers(headers);
        if let Ok(source) = ShortString::try_new(event.source.as_str()) {
            properties = properties.with_app_id(source);
        }
        if let Some(Ok(correlation_id)) = event.correlation_id.as_deref().map(ShortString::try_new)
        {
            properties = properties.with_correlation_id(correlation_id);
        }
        Self {
            routing_key: event.event_type().as_str().to_owned(),
            exchange: None,
            body: event.to_json_bytes(),
            properties,
        }
    }
}
