//! The wire contract: what decodes, what does not, and which field is named.

use serde_json::{Value, json};
use shared::events::catalog::OrderPlaced;
use shared::events::{DEFAULT_MAX_EVENT_BYTES, DecodeError, Event, EventPayload, EventType};

use crate::publisher::sample_event;

fn envelope(event_type: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": "0193a2b0-7c3e-7a11-9f00-5d5e1c9d0a01",
        "source": "/checkout",
        "type": event_type,
        "time": "2026-11-23T10:00:00Z",
        "datacontenttype": "application/json",
        "dataschema": format!("urn:switchyard:schema:{event_type}:v1"),
        "data": data,
    })
}

fn order_v2() -> Value {
    let mut value = envelope(
        "order.placed",
        json!({
            "order_id": "0193a2b0-7c3e-7a11-9f00-5d5e1c9d0a02",
            "customer_id": "0193a2b0-7c3e-7a11-9f00-5d5e1c9d0a03",
            "currency": "EUR",
            "lines": [{"sku": "SKU-1", "category": "kitchen", "quantity": 2, "unit_price_cents": 1500}]
        }),
    );
    value["dataschema"] = json!("urn:switchyard:schema:order.placed:v2");
    value
}

/// A change to a valid envelope that should make it fail.
type Mutation = Box<dyn Fn(&mut Value)>;

fn decode(value: &Value) -> Result<Event, DecodeError> {
    Event::decode(&serde_json::to_vec(value).unwrap(), DEFAULT_MAX_EVENT_BYTES)
}

fn field_of(value: &Value) -> String {
    decode(value)
        .expect_err("must be rejected")
        .field()
        .to_owned()
}

#[test]
fn every_catalog_type_round_trips_through_its_wire_form() {
    for event_type in EventType::ALL {
        let event = sample_event(event_type);
        let decoded = Event::decode(&event.to_json_bytes(), DEFAULT_MAX_EVENT_BYTES).unwrap();
        assert_eq!(decoded, event, "{event_type}");
    }
}

#[test]
fn a_current_order_decodes_with_its_partition_key_defaulting_to_the_order_id() {
    let event = decode(&order_v2()).unwrap();
    let EventPayload::OrderPlaced(order) = &event.payload else {
        panic!("wrong type")
    };
    assert_eq!(order.currency, "EUR");
    assert_eq!(event.partition_key, order.order_id.to_string());
    assert_eq!(order.total_cents(), Some(3_000));
}

#[test]
fn a_version_1_order_is_upcast_to_the_current_struct_in_us_dollars() {
    let mut value = order_v2();
    value["data"].as_object_mut().unwrap().remove("currency");
    value["dataschema"] = json!("urn:switchyard:schema:order.placed:v1");

    let event = decode(&value).unwrap();

    let EventPayload::OrderPlaced(OrderPlaced {
        currency, lines, ..
    }) = event.payload
    else {
        panic!("wrong type")
    };
    assert_eq!(currency, "USD");
    assert_eq!(lines.len(), 1);
}

fn currency_of(event: &Event) -> &str {
    let EventPayload::OrderPlaced(order) = &event.payload else {
        panic!("wrong type")
    };
    &order.currency
}

#[test]
fn without_dataschema_a_current_order_keeps_its_currency() {
    let mut value = order_v2();
    value.as_object_mut().unwrap().remove("dataschema");
    let event = decode(&value).unwrap();
    assert_eq!(currency_of(&event), "EUR");
}

#[test]
fn without_dataschema_a_version_1_order_is_read_as_version_1_in_us_dollars() {
    let mut value = order_v2();
    value.as_object_mut().unwrap().remove("dataschema");
    value["data"].as_object_mut().unwrap().remove("currency");
    let event = decode(&value).unwrap();
    assert_eq!(currency_of(&event), "USD");
}

#[test]
fn without_dataschema_data_that_fits_no_version_is_refused_against_the_newest() {
    let mut value = order_v2();
    value.as_object_mut().unwrap().remove("dataschema");
    value["data"]["coupon"] = json!("XMAS");
    let error = decode(&value).unwrap_err();
    assert_eq!(error.code(), "unknown_field");
    assert_eq!(error.field(), "data.coupon");
    assert!(
        error
            .to_string()
            .contains("urn:switchyard:schema:order.placed:v2"),
        "{error}"
    );
}

#[test]
fn a_field_its_version_lacks_is_refused_naming_the_field_and_the_versions() {
    let mut value = order_v2();
    value["dataschema"] = json!("urn:switchyard:schema:order.placed:v1");
    let error = decode(&value).unwrap_err();
    assert_eq!(error.code(), "unknown_field");
    assert_eq!(error.field(), "data.currency");
    let message = error.to_string();
    assert!(message.contains("order.placed v1"), "{message}");
    assert!(message.contains("v1, v2"), "{message}");
}

#[test]
fn unknown_fields_are_refused_at_every_depth_and_in_the_envelope() {
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "data.lines[0].colour",
            Box::new(|v| v["data"]["lines"][0]["colour"] = json!("red")),
        ),
        ("data.note", Box::new(|v| v["data"]["note"] = json!("hi"))),
        ("tenant", Box::new(|v| v["tenant"] = json!("acme"))),
    ];
    for (field, mutate) in cases {
        let mut value = order_v2();
        mutate(&mut value);
        let error = decode(&value).unwrap_err();
        assert_eq!(error.code(), "unknown_field", "{error}");
        assert_eq!(error.field(), field, "{error}");
    }
    for event_type in EventType::ALL {
        let mut value: Value =
            serde_json::from_slice(&sample_event(event_type).to_json_bytes()).unwrap();
        value["data"]["extra"] = json!(1);
        assert_eq!(
            decode(&value).unwrap_err().field(),
            "data.extra",
            "{event_type}"
        );
    }
}

#[test]
fn attributes_that_travel_in_amqp_short_strings_are_ascii_and_bounded_to_255_bytes() {
    for attribute in ["source", "correlationid"] {
        let mut value = order_v2();
        value[attribute] = json!(format!("/{}", "a".repeat(255)));
        let error = decode(&value).unwrap_err();
        assert_eq!(error.field(), attribute, "{error}");
        assert!(error.to_string().contains("255 bytes"), "{error}");
        // Non-ASCII would make characters and bytes differ: refused, named.
        value[attribute] = json!("/café");
        let error = decode(&value).unwrap_err();
        assert_eq!(error.field(), attribute, "{error}");
        assert!(error.to_string().contains("printable ASCII"), "{error}");
        value[attribute] = json!(format!("/{}", "a".repeat(254)));
        decode(&value).unwrap();
    }
    let mut value = order_v2();
    value["source"] = json!("/check out");
    assert_eq!(decode(&value).unwrap_err().field(), "source");
    value["source"] = json!("/checkout");
    value["correlationid"] = json!("flow 42");
    decode(&value).unwrap();
    value["subject"] = json!("s".repeat(1024));
    decode(&value).unwrap();
    value["subject"] = json!("s".repeat(1025));
    assert_eq!(decode(&value).unwrap_err().field(), "subject");
}

#[test]
fn a_nul_character_is_refused_wherever_it_is_naming_the_field() {
    let cases: Vec<(&str, Mutation)> = vec![
        ("source", Box::new(|v| v["source"] = json!("/a\u{0}b"))),
        ("subject", Box::new(|v| v["subject"] = json!("x\u{0}"))),
        (
            "correlationid",
            Box::new(|v| v["correlationid"] = json!("\u{0}")),
        ),
        (
            "data.lines[0].category",
            Box::new(|v| v["data"]["lines"][0]["category"] = json!("kit\u{0}chen")),
        ),
        ("data.x\u{0}", Box::new(|v| v["data"]["x\u{0}"] = json!(1))),
    ];
    for (field, mutate) in cases {
        let mut value = order_v2();
        mutate(&mut value);
        let error = decode(&value).unwrap_err();
        assert_eq!(error.field(), field, "{error}");
        assert!(error.to_string().contains("NUL"), "{error}");
    }
    // The same through the wire form, escaped as JSON writes it.
    let text = serde_json::to_string(&order_v2())
        .unwrap()
        .replace("/checkout", "/check\\u0000out");
    let error = Event::decode(text.as_bytes(), DEFAULT_MAX_EVENT_BYTES).unwrap_err();
    assert_eq!(error.field(), "source");
}

#[test]
fn a_newer_unknown_version_is_a_typed_error() {
    let mut value = order_v2();
    value["dataschema"] = json!("urn:switchyard:schema:order.placed:v3");
    let error = decode(&value).unwrap_err();
    assert_eq!(
        error,
        DecodeError::UnsupportedVersion {
            event_type: EventType::OrderPlaced,
            version: 3,
            newest: 2
        }
    );
    assert_eq!(error.field(), "dataschema");
}

#[test]
fn an_unknown_type_is_a_typed_error() {
    let value = envelope("order.teleported", json!({}));
    assert_eq!(
        decode(&value).unwrap_err(),
        DecodeError::UnknownType("order.teleported".into())
    );
}

#[test]
fn bytes_that_are_not_json_are_not_json_at_the_root() {
    let error = Event::decode(b"\x00\xffnot json", DEFAULT_MAX_EVENT_BYTES).unwrap_err();
    assert_eq!(error.code(), "not_json");
    assert_eq!(error.field(), "$");
}

#[test]
fn truncated_json_is_not_json() {
    let bytes = serde_json::to_vec(&order_v2()).unwrap();
    let error = Event::decode(&bytes[..bytes.len() / 2], DEFAULT_MAX_EVENT_BYTES).unwrap_err();
    assert_eq!(error.code(), "not_json");
}

#[test]
fn a_json_array_is_not_an_event() {
    assert_eq!(field_of(&json!([1, 2])), "$");
}

#[test]
fn a_payload_over_the_size_limit_is_refused_before_parsing() {
    let bytes = serde_json::to_vec(&order_v2()).unwrap();
    let error = Event::decode(&bytes, 100).unwrap_err();
    assert_eq!(
        error,
        DecodeError::TooLarge {
            size: bytes.len(),
            limit: 100
        }
    );
}

#[test]
fn each_bad_attribute_is_named() {
    let cases: Vec<(&str, Mutation)> = vec![
        ("id", Box::new(|v| v["id"] = json!("not-a-uuid"))),
        ("id", Box::new(|v| v["id"] = json!(42))),
        ("time", Box::new(|v| v["time"] = json!("yesterday"))),
        (
            "time",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("time");
            }),
        ),
        ("specversion", Box::new(|v| v["specversion"] = json!("0.3"))),
        ("source", Box::new(|v| v["source"] = json!(""))),
        (
            "type",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("type");
            }),
        ),
        (
            "data",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("data");
            }),
        ),
        (
            "datacontenttype",
            Box::new(|v| v["datacontenttype"] = json!("text/xml")),
        ),
        (
            "dataschema",
            Box::new(|v| v["dataschema"] = json!("urn:other:thing")),
        ),
        (
            "traceparent",
            Box::new(|v| v["traceparent"] = json!("00-xyz")),
        ),
    ];
    for (field, mutate) in cases {
        let mut value = order_v2();
        mutate(&mut value);
        let error = decode(&value).unwrap_err();
        assert!(
            error.field().starts_with(field),
            "expected {field}, got {error}"
        );
    }
}

#[test]
fn each_bad_payload_field_is_named_with_its_path() {
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "data.lines[0].quantity",
            Box::new(|v| v["data"]["lines"][0]["quantity"] = json!(-3)),
        ),
        (
            "data.lines[0].quantity",
            Box::new(|v| v["data"]["lines"][0]["quantity"] = json!("two")),
        ),
        (
            "data.lines[0].unit_price_cents",
            Box::new(|v| v["data"]["lines"][0]["unit_price_cents"] = json!(1.5)),
        ),
        (
            "data.lines[0].sku",
            Box::new(|v| v["data"]["lines"][0]["sku"] = json!("no spaces allowed")),
        ),
        ("data.lines", Box::new(|v| v["data"]["lines"] = json!([]))),
        (
            "data.currency",
            Box::new(|v| v["data"]["currency"] = json!("euro")),
        ),
        (
            "data.order_id",
            Box::new(|v| v["data"]["order_id"] = json!("42")),
        ),
        (
            "data.customer_id",
            Box::new(|v| {
                v["data"].as_object_mut().unwrap().remove("customer_id");
            }),
        ),
        (
            "data.lines[0].sku",
            Box::new(|v| {
                v["data"]["lines"][0].as_object_mut().unwrap().remove("sku");
            }),
        ),
        ("data", Box::new(|v| v["data"] = json!("a string"))),
    ];
    for (field, mutate) in cases {
        let mut value = order_v2();
        mutate(&mut value);
        let error = decode(&value).unwrap_err();
        assert_eq!(error.field(), field, "{error}");
    }
}

#[test]
fn a_missing_payload_field_is_named_in_the_reason() {
    let mut value = order_v2();
    value["data"].as_object_mut().unwrap().remove("customer_id");
    let error = decode(&value).unwrap_err();
    assert!(error.to_string().contains("customer_id"), "{error}");
}

#[test]
fn line_bounds_keep_every_order_total_within_64_bits() {
    let mut value = order_v2();
    value["data"]["lines"][0]["quantity"] = json!(i64::MAX);
    assert_eq!(
        decode(&value).unwrap_err().field(),
        "data.lines[0].quantity"
    );
    let mut value = order_v2();
    value["data"]["lines"][0]["unit_price_cents"] = json!(10_000_000_001i64);
    assert_eq!(
        decode(&value).unwrap_err().field(),
        "data.lines[0].unit_price_cents"
    );
    // The largest order the bounds allow still totals within 64 bits.
    let mut value = order_v2();
    let line = json!({"sku": "SKU-1", "category": "kitchen", "quantity": 1_000_000, "unit_price_cents": 10_000_000_000i64});
    value["data"]["lines"] = json!(vec![line; 500]);
    let event = decode(&value).unwrap();
    let EventPayload::OrderPlaced(order) = event.payload else {
        panic!("wrong type")
    };
    assert_eq!(order.total_cents(), Some(5_000_000_000_000_000_000));
}

#[test]
fn caused_by_links_correlation_and_causation() {
    let order = sample_event(EventType::OrderPlaced);
    let payment = sample_event(EventType::PaymentCaptured).caused_by(&order);
    assert_eq!(payment.causation_id, Some(order.id.to_string()));
    assert_eq!(payment.correlation_id, Some(order.id.to_string()));
    let shipment = sample_event(EventType::OrderShipped).caused_by(&payment);
    assert_eq!(shipment.correlation_id, Some(order.id.to_string()));
}

#[test]
fn new_event_ids_are_uuid_version_7() {
    assert_eq!(sample_event(EventType::OrderPlaced).id.get_version_num(), 7);
}

#[test]
fn integers_are_read_as_json_schema_reads_them() {
    let quantity = |value: Value| {
        let mut event = order_v2();
        event["data"]["lines"][0]["quantity"] = value;
        decode(&event)
    };
    // 3.0 is the integer 3 for JSON Schema, and so for the decoder.
    let event = quantity(json!(3.0)).unwrap();
    let EventPayload::OrderPlaced(order) = event.payload else {
        panic!("wrong type")
    };
    assert_eq!(order.lines[0].quantity, 3);
    for refused in [
        json!(2.5),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e300),
        json!("3"),
    ] {
        assert_eq!(
            quantity(refused.clone()).unwrap_err().field(),
            "data.lines[0].quantity",
            "{refused}"
        );
    }
    // Beyond 2^53 - 1 a JSON number may already have been rounded.
    let mut restock = envelope(
        "inventory.restocked",
        json!({"sku": "SKU-1", "quantity": 9_007_199_254_740_992i64}),
    );
    assert_eq!(decode(&restock).unwrap_err().field(), "data.quantity");
    restock["data"]["quantity"] = json!(9_007_199_254_740_991i64);
    decode(&restock).unwrap();
    // A large whole number written with a fraction is read exactly.
    let text = serde_json::to_string(&restock)
        .unwrap()
        .replace("9007199254740991", "1826163803519447.0");
    let event = Event::decode(text.as_bytes(), DEFAULT_MAX_EVENT_BYTES).unwrap();
    let EventPayload::InventoryRestocked(restocked) = event.payload else {
        panic!("wrong type")
    };
    assert_eq!(restocked.quantity, 1_826_163_803_519_447);
}
