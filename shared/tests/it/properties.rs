//! Property tests: every valid event round-trips; no input panics the
//! decoder; every accepted event becomes an AMQP message without panicking.

use proptest::prelude::*;
use shared::events::catalog::*;
use shared::events::{DEFAULT_MAX_EVENT_BYTES, Event, EventPayload};
use shared::publish::OutgoingMessage;
use uuid::Uuid;

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}
fn sku() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}"
}
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9][a-zA-Z0-9 éü'&-]{{0,{}}}", max - 1))
        .unwrap()
}
fn currency() -> impl Strategy<Value = String> {
    "[A-Z]{3}"
}
fn cents() -> impl Strategy<Value = i64> {
    0i64..10_000_000
}
fn line() -> impl Strategy<Value = OrderLine> {
    (sku(), text(100), 1i64..1_000, cents()).prop_map(
        |(sku, category, quantity, unit_price_cents)| OrderLine {
            sku,
            category,
            quantity,
            unit_price_cents,
        },
    )
}

fn payload() -> impl Strategy<Value = EventPayload> {
    prop_oneof![
        (uuid(), "[a-z]{1,20}@[a-z]{1,20}\\.com", text(200)).prop_map(
            |(customer_id, email, name)| {
                EventPayload::CustomerRegistered(CustomerRegistered {
                    customer_id,
                    email,
                    name,
                })
            }
        ),
        (sku(), text(200), text(100), cents(), currency()).prop_map(
            |(sku, name, category, price_cents, currency)| {
                EventPayload::ProductListed(ProductListed {
                    sku,
                    name,
                    category,
                    price_cents,
                    currency,
                })
            }
        ),
        (sku(), cents(), cents(), currency()).prop_map(
            |(sku, old_price_cents, new_price_cents, currency)| {
                EventPayload::ProductPriceChanged(ProductPriceChanged {
                    sku,
                    old_price_cents,
                    new_price_cents,
                    currency,
                })
            }
        ),
        (sku(), 1i64..1_000_000).prop_map(|(sku, quantity)| {
            EventPayload::InventoryRestocked(InventoryRestocked { sku, quantity })
        }),
        (
            uuid(),
            uuid(),
            currency(),
            proptest::collection::vec(line(), 1..20)
        )
            .prop_map(|(order_id, customer_id, currency, lines)| {
                EventPayload::OrderPlaced(OrderPlaced {
                    order_id,
                    customer_id,
                    currency,
                    lines,
                })
            }),
        (uuid(), uuid(), 1i64..10_000_000, currency()).prop_map(
            |(payment_id, order_id, amount_cents, currency)| {
                EventPayload::PaymentCaptured(PaymentCaptured {
                    payment_id,
                    order_id,
                    amount_cents,
                    currency,
                })
            }
        ),
        (uuid(), uuid(), 1i64..10_000_000, currency(), text(500)).prop_map(
            |(payment_id, order_id, amount_cents, currency, reason)| {
                EventPayload::PaymentFailed(PaymentFailed {
                    payment_id,
                    order_id,
                    amount_cents,
                    currency,
                    reason,
                })
            }
        ),
        (uuid(), uuid(), text(100), text(100)).prop_map(
            |(order_id, shipment_id, carrier, tracking_number)| {
                EventPayload::OrderShipped(OrderShipped {
                    order_id,
                    shipment_id,
                    carrier,
                    tracking_number,
                })
            }
        ),
        (uuid(), text(500)).prop_map(|(order_id, reason)| {
            EventPayload::OrderCancelled(OrderCancelled { order_id, reason })
        }),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    (
        payload(),
        "/[a-z]{1,30}",
        proptest::option::of("[a-z0-9-]{1,40}"),
        proptest::option::of("[a-z0-9-]{1,40}"),
        0i64..4_102_444_800_000_000_000,
    )
        .prop_map(|(payload, source, subject, correlation, nanos)| {
            let mut event = Event::new(source, payload);
            event.subject = subject;
            event.correlation_id = correlation;
            event.time = chrono::DateTime::from_timestamp_nanos(nanos);
            event
        })
}

proptest! {
    #[test]
    fn every_valid_event_round_trips(event in event()) {
        let decoded = Event::decode(&event.to_json_bytes(), DEFAULT_MAX_EVENT_BYTES);
        prop_assert_eq!(decoded, Ok(event));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Event::decode(&bytes, DEFAULT_MAX_EVENT_BYTES);
    }

    #[test]
    fn corrupted_valid_events_never_panic_the_decoder(
        event in event(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = event.to_json_bytes();
        for (index, value) in flips {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        let _ = Event::decode(&bytes, DEFAULT_MAX_EVENT_BYTES);
        let _ = Event::decode(&bytes[..cut.index(bytes.len())], DEFAULT_MAX_EVENT_BYTES);
    }

    #[test]
    fn every_accepted_event_converts_to_an_amqp_message(
        event in event(),
        attributes in proptest::collection::vec(proptest::option::of("\\PC{0,300}"), 5),
    ) {
        // Any text, of any length around the AMQP short-string limit, in
        // every free-text attribute; whatever decodes must convert.
        let mut envelope = serde_json::to_value(event.to_envelope()).unwrap();
        for (name, value) in ["source", "correlationid", "subject", "causationid", "partitionkey"]
            .into_iter()
            .zip(attributes)
        {
            if let Some(value) = value {
                envelope[name] = serde_json::Value::from(value);
            }
        }
        let bytes = serde_json::to_vec(&envelope).unwrap();
        if let Ok(decoded) = Event::decode(&bytes, DEFAULT_MAX_EVENT_BYTES) {
            let message = OutgoingMessage::for_event(&decoded);
            let app_id = message.properties.app_id().as_ref().map(|id| id.to_string());
            prop_assert_eq!(app_id.as_deref(), Some(decoded.source.as_str()));
            let correlation = message.properties.correlation_id().as_ref().map(|id| id.to_string());
            prop_assert_eq!(correlation, decoded.correlation_id.clone());
            prop_assert_eq!(Event::decode(&message.body, DEFAULT_MAX_EVENT_BYTES), Ok(decoded));
        }
    }

    #[test]
    fn arbitrary_json_documents_never_panic_the_decoder(value in arbitrary_json()) {
        let _ = Event::from_json_value(value);
    }
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z.:0-9-]{0,12}".prop_map(serde_json::Value::from),
    ];
    let keys = prop_oneof![
        Just("specversion".to_owned()),
        Just("id".to_owned()),
        Just("type".to_owned()),
        Just("time".to_owned()),
        Just("source".to_owned()),
        Just("data".to_owned()),
        Just("dataschema".to_owned()),
        Just("lines".to_owned()),
        "[a-z]{1,6}",
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(keys.clone(), inner, 0..8)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}
