//! A delivery as the runtime sees it: the event (or why it is not one) and
//! its attempt history.

use lapin::message::Delivery;
use shared::events::{DecodeError, Event};

use super::attempts::AttemptHistory;

/// One message taken from a work queue.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The raw body, kept for retries and the dead-letter store.
    pub body: Vec<u8>,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The AMQP `message_id`, if any.
    pub message_id: Option<String>,
    /// The decoded event, or the reason it is poison.
    pub event: Result<Event, DecodeError>,
    /// Failed attempts before this delivery.
    pub history: AttemptHistory,
    /// The headers as JSON, for the dead-letter store.
    pub headers_json: serde_json::Value,
}

impl Incoming {
    /// Decodes a delivery; never fails (bad bytes become a poison `Incoming`).
    pub fn from_delivery(delivery: &Delivery, max_event_bytes: usize) -> Self {
        let headers = delivery.properties.headers().as_ref();
        Self {
            body: delivery.data.clone(),
            routing_key: delivery.routing_key.to_string(),
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string()),
            event: Event::decode(&delivery.data, max_event_bytes),
            history: AttemptHistory::from_headers(headers),
            headers_json: headers
                .map(headers_to_json)
                .unwrap_or_else(|| serde_json::json!({})),
        }
    }
}

/// AMQP headers as a JSON object (values in their debug form when they
/// have no JSON equivalent).
pub fn headers_to_json(headers: &lapin::types::FieldTable) -> serde_json::Value {
    use lapin::types::AMQPValue;
    let object = headers
        .inner()
        .iter()
        .map(|(key, value)| {
            let json = match value {
                AMQPValue::LongString(text) => {
                    serde_json::Value::from(String::from_utf8_lossy(text.as_bytes()).into_owned())
                }
                AMQPValue::ShortString(text) => serde_json::Value::from(text.as_str()),
                AMQPValue::LongLongInt(number) => serde_json::Value::from(*number),
                AMQPValue::LongInt(number) => serde_json::Value::from(*number),
                AMQPValue::Boolean(flag) => serde_json::Value::from(*flag),
                other => serde_json::Value::from(format!("{other:?}")),
            };
            (key.to_string(), json)
        })
        .collect();
    serde_json::Value::Object(object)
}
