//! A delivery as the runtime sees it: the event (or why it is not one) and
//! its attempt history.

use lapin::BasicProperties;
use lapin::message::Delivery;
use shared::events::amqp::{claimed_identity, decode_delivery};
use shared::events::{DecodeError, Event};
use uuid::Uuid;

use super::attempts::{AttemptHistory, AttemptKey, HistoryTrust};

/// One message taken from a work queue.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The raw body, kept for retries and the dead-letter store.
    pub body: Vec<u8>,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The AMQP properties it came with: message id, content type (a
    /// binary-mode event needs it to be read again when replayed), send
    /// time and headers, republished as they are with a retry.
    pub properties: BasicProperties,
    /// The decoded event (structured or binary mode), or the reason it is poison.
    pub event: Result<Event, DecodeError>,
    /// Failed attempts before this delivery.
    pub history: AttemptHistory,
}

impl Incoming {
    /// The event's id and type: decoded, or, for a message that did not
    /// decode, as its headers or properties claim them.
    pub fn identity(&self) -> (Option<Uuid>, Option<String>) {
        match &self.event {
            Ok(event) => (Some(event.id), Some(event.event_type().as_str().to_owned())),
            Err(_) => claimed_identity(&self.properties),
        }
    }

    /// The AMQP `message_id`, if any.
    pub fn message_id(&self) -> Option<&str> {
        self.properties.message_id().as_ref().map(|id| id.as_str())
    }

    /// The AMQP `content_type`, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.properties
            .content_type()
            .as_ref()
            .map(|kind| kind.as_str())
    }

    /// The headers as JSON, for the dead-letter store ([`headers_to_json`]).
    pub fn headers_json(&self) -> serde_json::Value {
        self.properties
            .headers()
            .as_ref()
            .map(headers_to_json)
            .unwrap_or_else(|| serde_json::json!({}))
    }

    /// Decodes a delivery, moving its body and properties out of it (what
    /// is left serves to acknowledge it); never fails (bad bytes become a
    /// poison `Incoming`). Its attempt history is believed only when
    /// signed with `key`.
    pub fn take_from(delivery: &mut Delivery, max_event_bytes: usize, key: &AttemptKey) -> Self {
        let body = std::mem::take(&mut delivery.data);
        let properties = std::mem::take(&mut delivery.properties);
        let (history, trust) =
            AttemptHistory::from_headers(properties.headers().as_ref(), &body, key);
        if trust == HistoryTrust::Refused {
            tracing::warn!(
                message_id = ?properties.message_id(),
                routing_key = %delivery.routing_key,
                "attempt headers not signed by the workers; ignored: counted as a first attempt"
            );
        }
        Self {
            event: decode_delivery(&properties, &body, max_event_bytes),
            body,
            routing_key: delivery.routing_key.to_string(),
            properties,
            history,
        }
    }
}

/// AMQP headers as a JSON object that PostgreSQL's jsonb can always store:
/// text that is not UTF-8 or holds a NUL (which jsonb refuses) becomes
/// `{"bytes_hex": "…"}`, exact and reversible; values with no JSON
/// equivalent are kept in their debug form.
pub fn headers_to_json(headers: &lapin::types::FieldTable) -> serde_json::Value {
    use lapin::types::AMQPValue;
    let object = headers
        .inner()
        .iter()
        .map(|(key, value)| {
            let json = match value {
                AMQPValue::LongString(text) => storable_text(text.as_bytes()),
                AMQPValue::ShortString(text) => storable_text(text.as_str().as_bytes()),
                AMQPValue::LongLongInt(number) => serde_json::Value::from(*number),
                AMQPValue::LongInt(number) => serde_json::Value::from(*number),
                AMQPValue::Boolean(flag) => serde_json::Value::from(*flag),
                other => serde_json::Value::from(without_nul(&format!("{other:?}"))),
            };
            (without_nul(key.as_str()), json)
        })
        .collect();
    serde_json::Value::Object(object)
}

/// The AMQP headers stored by [`headers_to_json`], read back: text, hex
/// bytes, integers and booleans exactly; values kept only in their debug
/// form (and names over 255 bytes) are left out.
pub fn headers_from_json(json: &serde_json::Value) -> lapin::types::FieldTable {
    use lapin::types::{AMQPValue, LongString, ShortString};
    let mut headers = lapin::types::FieldTable::default();
    let Some(object) = json.as_object() else {
        return headers;
    };
    for (key, value) in object {
        let Ok(name) = ShortString::try_new(key.as_str()) else {
            continue;
        };
        let value = match value {
            serde_json::Value::String(text) => {
                AMQPValue::LongString(LongString::from(text.as_str()))
            }
            serde_json::Value::Bool(flag) => AMQPValue::Boolean(*flag),
            serde_json::Value::Number(number) => match number.as_i64() {
                Some(integer) => AMQPValue::LongLongInt(integer),
                None => continue,
            },
            serde_json::Value::Object(fields) => {
                match fields
                    .get("bytes_hex")
                    .and_then(|hex| hex.as_str())
                    .map(hex::decode)
                {
                    Some(Ok(bytes)) => AMQPValue::LongString(LongString::from(bytes)),
                    _ => continue,
                }
            }
            _ => continue,
        };
        headers.insert(name, value);
    }
    headers
}

fn storable_text(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => serde_json::Value::from(text),
        _ => serde_json::json!({ "bytes_hex": hex::encode(bytes) }),
    }
}

/// `text` with each NUL written as the six characters `\u0000`.
pub fn without_nul(text: &str) -> String {
    text.replace('\0', "\\u0000")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldTable, LongString};

    #[test]
    fn headers_with_nul_or_bad_utf8_become_storable_json() {
        let mut headers = FieldTable::default();
        headers.insert(
            "a\0b".into(),
            AMQPValue::LongString(LongString::from("x\0y")),
        );
        headers.insert(
            "bytes".into(),
            AMQPValue::LongString(LongString::from(vec![0xff, 0xfe])),
        );
        headers.insert(
            "plain".into(),
            AMQPValue::LongString(LongString::from("ok")),
        );
        headers.insert("count".into(), AMQPValue::LongLongInt(-3));
        headers.insert("flag".into(), AMQPValue::Boolean(true));
        let json = headers_to_json(&headers);
        assert_eq!(json["a\\u0000b"]["bytes_hex"], "780079");
        assert_eq!(json["bytes"]["bytes_hex"], "fffe");
        assert_eq!(json["plain"], "ok");
        let back = headers_from_json(&json);
        let inner = back.inner();
        assert_eq!(
            inner.get("bytes"),
            Some(&AMQPValue::LongString(LongString::from(vec![0xff, 0xfe])))
        );
        assert_eq!(
            inner.get("plain"),
            Some(&AMQPValue::LongString(LongString::from("ok")))
        );
        assert_eq!(inner.get("count"), Some(&AMQPValue::LongLongInt(-3)));
        assert_eq!(inner.get("flag"), Some(&AMQPValue::Boolean(true)));
    }
}
