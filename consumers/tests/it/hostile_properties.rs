//! A property test of the real decode → dead-letter path on a real
//! database: whatever a delivery holds — arbitrary bytes, JSON with NUL in
//! keys and values, lone surrogates, invalid UTF-8, deep nesting, numbers
//! past any float, headers of every AMQP field type, any routing key and
//! exchange — it is dead-lettered exactly once (a redelivery adds
//! nothing), and the valid event beside it in the batch is applied.

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use proptest::prelude::*;
use runtime::batch::{BatchContext, Outcome, process_batch};
use runtime::incoming::Incoming;
use shared::events::catalog::ProductListed;
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use shared::retry::RetryPolicy;
use shared::testing::TestDatabase;
use uuid::Uuid;

use crate::hostile::order_with_data_member;
use crate::processing::order_placed;

/// Any JSON value, keys and strings of any characters (NUL included).
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |number| number.is_finite())
            .prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        json().prop_map(|value| value.to_string().into_bytes()),
        (any::<String>(), json()).prop_map(|(key, value)| {
            order_with_data_member(&format!("{}:{value}", serde_json::Value::from(key)))
        }),
        (1_usize..2_000).prop_map(|depth| format!(
            "{{\"a\":{}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        )
        .into_bytes()),
        "[0-9]{1,400}".prop_map(|digits| format!("{{\"n\":{digits}e99999}}").into_bytes()),
        Just(br#"{"specversion":"1.0","id":"\ud800"}"#.to_vec()),
        Just(br#"{"k\u0000":"v\u0000"}"#.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|mut bytes| {
            bytes.extend_from_slice(&[0xff, 0xfe, 0x80]);
            bytes
        }),
    ]
}

fn short_string() -> impl Strategy<Value = ShortString> {
    proptest::collection::vec(any::<char>(), 0..40)
        .prop_map(|chars| ShortString::from(chars.into_iter().collect::<String>()))
}

/// A header value of any AMQP field type.
fn field() -> impl Strategy<Value = AMQPValue> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(AMQPValue::Boolean),
        any::<i8>().prop_map(AMQPValue::ShortShortInt),
        any::<u8>().prop_map(AMQPValue::ShortShortUInt),
        any::<i16>().prop_map(AMQPValue::ShortInt),
        any::<u16>().prop_map(AMQPValue::ShortUInt),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<u32>().prop_map(AMQPValue::LongUInt),
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        any::<f32>().prop_map(AMQPValue::Float),
        any::<f64>().prop_map(AMQPValue::Double),
        (any::<u8>(), any::<u32>())
            .prop_map(|(scale, value)| AMQPValue::DecimalValue(DecimalValue { scale, value })),
        short_string().prop_map(AMQPValue::ShortString),
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|bytes| AMQPValue::LongString(LongString::from(bytes))),
        any::<u64>().prop_map(AMQPValue::Timestamp),
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|bytes| AMQPValue::ByteArray(ByteArray::from(bytes))),
        Just(AMQPValue::Void),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|values| AMQPValue::FieldArray(FieldArray::from(values))),
            proptest::collection::vec((short_string(), inner), 0..4)
                .prop_map(|fields| AMQPValue::FieldTable(table(fields))),
        ]
    })
}

fn table(fields: Vec<(ShortString, AMQPValue)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in fields {
        table.insert(key, value);
    }
    table
}

fn headers() -> impl Strategy<Value = FieldTable> {
    let attribute = prop_oneof![
        Just("ce-type"),
        Just("ce-id"),
        Just("ce-specversion"),
        Just("cloudEvents:type"),
        Just("x-switchyard-attempts"),
        Just("traceparent"),
    ]
    .prop_map(ShortString::from);
    proptest::collection::vec((prop_oneof![attribute, short_string()], field()), 0..6)
        .prop_map(table)
}

/// A delivery as lapin hands it over, made of what a hostile client sent.
#[derive(Debug, Clone)]
struct Hostile {
    group: ConsumerGroup,
    routing_key: String,
    via_exchange: bool,
    body: Vec<u8>,
    headers: FieldTable,
    content_type: Option<String>,
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let routing_key = prop_oneof![
        Just("order.placed".to_owned()),
        Just("payment.failed".to_owned()),
        Just("inventory.restocked".to_owned()),
        "[a-z.]{0,20}",
    ];
    let content_type = proptest::option::of(prop_oneof![
        Just("application/cloudevents+json".to_owned()),
        Just("application/json".to_owned()),
        Just("text/plain".to_owned()),
        ".{0,30}",
    ]);
    (
        prop_oneof![
            Just(ConsumerGroup::Orders),
            Just(ConsumerGroup::Inventory),
            Just(ConsumerGroup::Sales)
        ],
        routing_key,
        any::<bool>(),
        body(),
        headers(),
        content_type,
    )
        .prop_map(
            |(group, routing_key, via_exchange, body, headers, content_type)| Hostile {
                group,
                routing_key,
                via_exchange,
                body,
                headers,
                content_type,
            },
        )
}

impl Hostile {
    /// Through the real decoding of a delivery, as a worker takes it.
    fn incoming(&self, key: &runtime::AttemptKey) -> Incoming {
        let exchange = if self.via_exchange { "events" } else { "" };
        let mut delivery = Delivery::mock(
            1,
            exchange.into(),
            self.routing_key.as_str().into(),
            false,
            self.body.clone(),
        );
        let mut properties = BasicProperties::default().with_headers(self.headers.clone());
        if let Some(content_type) = &self.content_type {
            properties = properties.with_content_type(content_type.as_str().into());
        }
        delivery.properties = properties;
        let mut incoming = Incoming::take_from(&mut delivery, 1 << 20, key);
        incoming.check_route(self.group, self.via_exchange);
        incoming
    }
}

/// A valid event `group` applies without any earlier one.
fn valid_for(group: ConsumerGroup) -> Event {
    match group {
        ConsumerGroup::Inventory => Event::new(
            "/properties",
            EventPayload::ProductListed(ProductListed {
                sku: format!("SKU-{}", Uuid::now_v7().simple()),
                name: "Pan".into(),
                category: "kitchen".into(),
                price_cents: 100,
                currency: "EUR".into(),
            }),
        ),
        ConsumerGroup::Orders | ConsumerGroup::Sales => order_placed(Uuid::now_v7()),
    }
}

async fn dead_letters(database: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&database.pool)
        .await
        .unwrap()
}

#[test]
fn any_delivery_is_dead_lettered_once_and_the_valid_event_beside_it_applied() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let database = runtime.block_on(TestDatabase::create());
    let key = runtime::AttemptKey::from_bytes([3; 32]);
    let config = ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    };
    proptest!(config, |(hostile in hostile())| {
        let context = BatchContext {
            group: hostile.group,
            handlers: consumers::handlers::Store::shared(),
            worker: "properties".into(),
            policy: RetryPolicy::default(),
            attempt_key: key.clone(),
        };
        let first = hostile.incoming(&key);
        // Bytes that happen to be an event this group applies are not
        // hostile; they are left out.
        prop_assume!(first.event.is_err());
        let outcome = runtime.block_on(async {
            // Cases may repeat a message: each starts with no dead letter.
            sqlx::query("DELETE FROM dead_letters").execute(&database.pool).await.unwrap();
            let mut connection = database.pool.acquire().await.unwrap();
            let mut outcomes = Vec::new();
            for _ in 0..2 {
                // The same delivery again, as after a redelivery.
                let batch = vec![hostile.incoming(&key), crate::support::incoming(&valid_for(hostile.group))];
                let applied = process_batch(&mut connection, &context, &batch).await;
                outcomes.push(applied.map(|applied| applied.outcomes).map_err(|error| error.to_string()));
            }
            (outcomes, dead_letters(&database).await)
        });
        let (outcomes, stored) = outcome;
        for outcomes in outcomes {
            prop_assert_eq!(outcomes, Ok(vec![Outcome::DeadLettered, Outcome::Applied]), "{:?}", hostile);
        }
        prop_assert!(stored == 1, "stored once, found {}: {:?}", stored, hostile);
    });
}
