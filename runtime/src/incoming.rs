//! A delivery as the runtime sees it: the event (or why it is not one) and
//! its attempt history.

use lapin::BasicProperties;
use lapin::message::Delivery;
use shared::events::amqp::{claimed_identity, decode_delivery};
use shared::events::{DecodeError, Event};
use shared::groups::ConsumerGroup;
use shared::storable;
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
    /// The decoded event (structured or binary mode), or why it is not
    /// one this group applies.
    pub event: Result<Event, Refusal>,
    /// Failed attempts before this delivery.
    pub history: AttemptHistory,
    /// Set when the body was over the event limit: `body` then holds only
    /// its first [`KEPT_OF_OVERSIZE`] bytes.
    pub oversize: Option<Oversize>,
}

/// How much a worker keeps of a body over the event limit: enough to see
/// what it was, never the whole of it.
pub const KEPT_OF_OVERSIZE: usize = 4096;

/// What is kept of a body over the event limit besides its first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversize {
    /// Its size in bytes.
    pub size: usize,
    /// The SHA-256 of the whole of it.
    pub sha256: [u8; 32],
}

impl Incoming {
    /// The event's id and type: decoded, or, for a message that did not
    /// decode, as its headers or properties claim them.
    pub fn identity(&self) -> (Option<Uuid>, Option<String>) {
        match self.event() {
            Some(event) => (Some(event.id), Some(event.event_type().as_str().to_owned())),
            None => {
                let (id, event_type) = claimed_identity(&self.properties);
                if id.is_some() && event_type.is_some() {
                    return (id, event_type);
                }
                let (body_id, body_type) = claimed_by_body(&self.body);
                (id.or(body_id), event_type.or(body_type))
            }
        }
    }

    /// The event, when the message decoded as one (whether or not this
    /// group may apply it).
    pub fn event(&self) -> Option<&Event> {
        match &self.event {
            Ok(event) => Some(event),
            Err(Refusal::TypeMismatch { event, .. } | Refusal::NotHandled { event, .. }) => {
                Some(event)
            }
            Err(Refusal::Undecodable(_)) => None,
        }
    }

    /// Refuses an event that `group` must not apply: one whose type is
    /// not the routing key it was published with (when it came through an
    /// exchange; retries and replays come through the default exchange,
    /// addressed to the work queue by name), or of a type the group does
    /// not handle. Either is dead-lettered, never acked with no effect.
    pub fn check_route(&mut self, group: ConsumerGroup, via_exchange: bool) {
        let Ok(event) = &self.event else { return };
        let event_type = event.event_type();
        let refusal = if via_exchange && self.routing_key != event_type.as_str() {
            Refusal::TypeMismatch {
                routing_key: self.routing_key.clone(),
                event: Box::new(event.clone()),
            }
        } else if !group.handles(event_type) {
            Refusal::NotHandled {
                group,
                event: Box::new(event.clone()),
            }
        } else {
            return;
        };
        self.event = Err(refusal);
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
    ///
    /// A body over `max_event_bytes` is not parsed and not kept: only its
    /// size, its hash and its first [`KEPT_OF_OVERSIZE`] bytes, so a worker
    /// holds no more of such bodies than that while they wait to be
    /// dead-lettered.
    pub fn take_from(delivery: &mut Delivery, max_event_bytes: usize, key: &AttemptKey) -> Self {
        let mut body = std::mem::take(&mut delivery.data);
        let properties = std::mem::take(&mut delivery.properties);
        let (history, trust) =
            AttemptHistory::from_headers(properties.headers().as_ref(), &body, key);
        let oversize = (body.len() > max_event_bytes).then(|| {
            use sha2::Digest;
            let oversize = Oversize {
                size: body.len(),
                sha256: sha2::Sha256::digest(&body).into(),
            };
            body.truncate(KEPT_OF_OVERSIZE);
            body.shrink_to_fit();
            oversize
        });
        if trust == HistoryTrust::Refused {
            tracing::warn!(
                message_id = ?properties.message_id(),
                routing_key = %delivery.routing_key,
                "attempt headers not signed by the workers; ignored: counted as a first attempt"
            );
        }
        let event = match &oversize {
            Some(oversize) => Err(DecodeError::TooLarge {
                size: oversize.size,
                limit: max_event_bytes,
            }),
            None => decode_delivery(&properties, &body, max_event_bytes),
        };
        Self {
            event: event.map_err(Refusal::Undecodable),
            oversize,
            body,
            routing_key: delivery.routing_key.to_string(),
            properties,
            history,
        }
    }
}

/// Why a delivery is not an event its group applies. Each is
/// dead-lettered at once with its own error kind.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// Not a valid event: bytes, JSON or schema ([`DecodeError`]).
    #[error(transparent)]
    Undecodable(DecodeError),
    /// A valid event published with a routing key other than its type:
    /// the broker routed it by the key, so the groups of its real type
    /// never saw it.
    #[error("type: the event is a {:?} but was published with routing key {routing_key:?}", .event.event_type().as_str())]
    TypeMismatch {
        /// The routing key it came with.
        routing_key: String,
        /// The event.
        event: Box<Event>,
    },
    /// A valid event of a type the group does not handle (published
    /// straight to its queue, or a type newly routed to it).
    #[error("type: the {group} group does not handle {:?} events", .event.event_type().as_str())]
    NotHandled {
        /// The group.
        group: ConsumerGroup,
        /// The event.
        event: Box<Event>,
    },
}

impl Refusal {
    /// The dead letter's error kind: `poison` for a message that is not a
    /// valid event, `type_mismatch` and `type_not_handled` for the others.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Undecodable(_) => "poison",
            Refusal::TypeMismatch { .. } => "type_mismatch",
            Refusal::NotHandled { .. } => "type_not_handled",
        }
    }

    /// The attempt log's error code: the decode error's own, or the kind.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Undecodable(error) => error.code(),
            other => other.kind(),
        }
    }
}

/// AMQP headers as a JSON object that PostgreSQL's jsonb can always store:
/// text that is not UTF-8 or holds a NUL (which jsonb refuses) becomes
/// `{"bytes_hex": "…"}`, exact and reversible; arrays and tables are JSON
/// arrays and objects (see `value_to_json` for the rest), so the page and
/// `show` read them as JSON, never as a debug dump.
pub fn headers_to_json(headers: &lapin::types::FieldTable) -> serde_json::Value {
    table_to_json(headers, 0)
}

/// Deepest nesting of arrays and tables kept as JSON (PostgreSQL's parser
/// has a stack limit too, and a header nested thousands deep must never
/// stop its dead letter from being stored).
const MAX_HEADER_DEPTH: usize = 32;

fn table_to_json(table: &lapin::types::FieldTable, depth: usize) -> serde_json::Value {
    serde_json::Value::Object(
        table
            .inner()
            .iter()
            .map(|(key, value)| (storable::string(key.as_str()), value_to_json(value, depth)))
            .collect(),
    )
}

/// One AMQP value as JSON: text as text (hex bytes when not storable),
/// numbers as numbers, arrays and tables as arrays and objects; a timestamp
/// as `{"timestamp": seconds}`, a decimal as `{"decimal": "12.34"}`, bytes
/// as `{"bytes_hex": …}`, void as null, a float that is not finite as
/// text.
fn value_to_json(value: &lapin::types::AMQPValue, depth: usize) -> serde_json::Value {
    use lapin::types::AMQPValue;
    use serde_json::{Value, json};
    if depth >= MAX_HEADER_DEPTH
        && matches!(value, AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_))
    {
        return Value::from(format!("(nested deeper than {MAX_HEADER_DEPTH} levels)"));
    }
    let float = |number: f64| {
        serde_json::Number::from_f64(number)
            .map_or_else(|| Value::from(number.to_string()), Value::Number)
    };
    match value {
        AMQPValue::LongString(text) => storable::bytes(text.as_bytes()),
        AMQPValue::ShortString(text) => storable::bytes(text.as_str().as_bytes()),
        AMQPValue::Boolean(flag) => Value::from(*flag),
        AMQPValue::ShortShortInt(number) => Value::from(*number),
        AMQPValue::ShortShortUInt(number) => Value::from(*number),
        AMQPValue::ShortInt(number) => Value::from(*number),
        AMQPValue::ShortUInt(number) => Value::from(*number),
        AMQPValue::LongInt(number) => Value::from(*number),
        AMQPValue::LongUInt(number) => Value::from(*number),
        AMQPValue::LongLongInt(number) => Value::from(*number),
        AMQPValue::Float(number) => float(f64::from(*number)),
        AMQPValue::Double(number) => float(*number),
        AMQPValue::DecimalValue(decimal) => {
            let digits = decimal.value.to_string();
            let scale = usize::from(decimal.scale);
            let text = if scale == 0 {
                digits
            } else {
                let padded = format!("{digits:0>width$}", width = scale + 1);
                let (whole, fraction) = padded.split_at(padded.len() - scale);
                format!("{whole}.{fraction}")
            };
            json!({ "decimal": text })
        }
        AMQPValue::FieldArray(array) => Value::Array(
            array
                .as_slice()
                .iter()
                .map(|item| value_to_json(item, depth + 1))
                .collect(),
        ),
        AMQPValue::Timestamp(seconds) => json!({ "timestamp": seconds }),
        AMQPValue::FieldTable(table) => table_to_json(table, depth + 1),
        AMQPValue::ByteArray(bytes) => json!({ "bytes_hex": hex::encode(bytes.as_slice()) }),
        AMQPValue::Void => Value::Null,
    }
}

/// The AMQP headers stored by [`headers_to_json`], read back for what a
/// replay needs to decode the body (binary-mode attributes are text): text,
/// hex bytes, integers and booleans exactly; arrays, tables and the other
/// kinds (and names over 255 bytes) are left out.
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

/// The event id and type a body that did not decode claims: a JSON object
/// with a string `id` (a UUID) and `type` (at most 255 bytes, no NUL), as
/// a structured event that broke its schema still has. So such a dead
/// letter keeps its type for the summary and `--type`.
fn claimed_by_body(body: &[u8]) -> (Option<Uuid>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Claimed {
        id: Option<serde_json::Value>,
        #[serde(rename = "type")]
        event_type: Option<serde_json::Value>,
    }
    let Ok(claimed) = serde_json::from_slice::<Claimed>(body) else {
        return (None, None);
    };
    let id = claimed
        .id
        .as_ref()
        .and_then(serde_json::Value::as_str)
        .and_then(|id| Uuid::parse_str(id.trim()).ok());
    let event_type = claimed
        .event_type
        .as_ref()
        .and_then(serde_json::Value::as_str)
        .filter(|kind| !kind.is_empty() && kind.len() <= 255 && !kind.contains('\0'))
        .map(str::to_owned);
    (id, event_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_headers_read_as_json_and_a_deep_one_is_cut_short() {
        use lapin::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, LongString};
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(2));
        death.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from("rejected")),
        );
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        headers.insert(
            "price".into(),
            AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 5 }),
        );
        headers.insert("nan".into(), AMQPValue::Double(f64::NAN));
        headers.insert("void".into(), AMQPValue::Void);
        let mut deep = AMQPValue::Void;
        for _ in 0..500 {
            deep = AMQPValue::FieldArray(FieldArray::from(vec![deep]));
        }
        headers.insert("deep".into(), deep);
        let json = headers_to_json(&headers);
        assert_eq!(
            json["x-death"],
            serde_json::json!([{ "count": 2, "reason": "rejected" }])
        );
        assert_eq!(json["price"], serde_json::json!({ "decimal": "0.05" }));
        assert_eq!(json["nan"], "NaN");
        assert!(json["void"].is_null());
        let text = json["deep"].to_string();
        assert!(text.contains("nested deeper than 32 levels"), "{text}");
        assert!(!text.contains("FieldArray"));
    }

    #[test]
    fn a_body_that_broke_its_schema_still_names_its_type_and_id() {
        let id = Uuid::now_v7();
        let body = format!(
            r#"{{"specversion":"1.0","id":"{id}","type":"order.placed","data":{{"quantity":0}}}}"#
        );
        assert_eq!(
            claimed_by_body(body.as_bytes()),
            (Some(id), Some("order.placed".to_owned()))
        );
        // Only strings count, and only a type that can be stored.
        assert_eq!(claimed_by_body(br#"{"id":7,"type":["x"]}"#), (None, None));
        assert_eq!(claimed_by_body(br#"{"type":"a\u0000b"}"#), (None, None));
        assert_eq!(claimed_by_body(b"[1,2]"), (None, None));
        assert_eq!(claimed_by_body(&[0xff, 0xfe]), (None, None));
    }
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
