//! Property: whatever bytes and headers a key holder sends, the gateway
//! answers — a status and a JSON body — and never drops the connection or
//! panics.

use proptest::prelude::*;
use reqwest::header::HeaderValue;

use super::support::{Gateway, order_placed};

/// What a request may claim to be.
fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("application/cloudevents+json".to_owned()),
        Just("application/cloudevents-batch+json".to_owned()),
        Just("application/json".to_owned()),
        Just("text/plain".to_owned()),
        "[ -~]{0,40}",
    ]
}

/// Bytes near a valid event (some flipped, some cut) or none like it.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let valid = order_placed("/checkout").to_json_bytes();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        (
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            any::<prop::sample::Index>(),
        )
            .prop_map(move |(flips, cut)| {
                let mut bytes = valid.clone();
                for (index, value) in flips {
                    let at = index.index(bytes.len());
                    bytes[at] = value;
                }
                bytes.truncate(cut.index(bytes.len() + 1));
                bytes
            }),
    ]
}

/// Binary-mode headers with arbitrary (header-legal) values.
fn ce_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        Just("ce-specversion"),
        Just("ce-id"),
        Just("ce-source"),
        Just("ce-type"),
        Just("ce-time"),
        Just("ce-data"),
        Just("ce-x"),
        Just("authorization"),
    ];
    proptest::collection::vec((name, proptest::collection::vec(any::<u8>(), 0..300)), 0..6)
        .prop_map(|headers| {
            headers
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect()
        })
}

#[test]
fn any_request_gets_an_answer_with_a_json_body() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (gateway, key) = runtime.block_on(async {
        let gateway = Gateway::start().await;
        let key = gateway.key(&["*"], &["*"], 1_000_000, 1_000_000).await;
        (gateway, key)
    });
    let config = ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(content_type in content_type(), body in body(), headers in ce_headers())| {
        let (status, answer) = runtime.block_on(async {
            let mut request = gateway.post(&key).body(body);
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                request = request.header("content-type", value);
            }
            for (name, value) in headers {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    request = request.header(name, value);
                }
            }
            let response = request.send().await.expect("an answer, not a dropped connection");
            let status = response.status().as_u16();
            (status, response.bytes().await.expect("a whole body"))
        });
        let answer: serde_json::Value = serde_json::from_slice(&answer)
            .unwrap_or_else(|_| panic!("{status}: not JSON: {}", String::from_utf8_lossy(&answer)));
        prop_assert!(
            [202, 400, 401, 403, 413, 415, 429].contains(&status),
            "{status}: {answer}"
        );
        if status != 202 {
            prop_assert!(answer["error"].is_string(), "{answer}");
        }
    });
    drop(gateway);
}
