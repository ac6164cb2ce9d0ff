//! The checked-in OpenAPI document matches the routes the gateway serves.

use std::collections::BTreeSet;

use producers::gateway::{OPENAPI_DOCUMENT, ROUTES};
use reqwest::StatusCode;

use super::support::Gateway;

#[test]
fn the_document_lists_exactly_the_routes_served() {
    let document: serde_json::Value = serde_json::from_str(OPENAPI_DOCUMENT).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|route| (route.method.to_string(), route.path.to_owned()))
        .collect();
    assert_eq!(shared::testing::documented_routes(&document), served);
}

#[test]
fn every_status_the_gateway_answers_is_documented() {
    let document: serde_json::Value = serde_json::from_str(OPENAPI_DOCUMENT).unwrap();
    let documented: BTreeSet<u16> = document["paths"]["/events"]["post"]["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(|status| status.parse().unwrap())
        .collect();
    let answered: BTreeSet<u16> = producers::gateway::error::GatewayError::examples()
        .iter()
        .map(|error| error.status().as_u16())
        .chain([202, 404, 500])
        .collect();
    assert_eq!(documented, answered);
}

#[tokio::test]
async fn the_served_document_is_the_checked_in_one_and_every_route_exists() {
    let gateway = Gateway::start().await;
    let served = gateway
        .client
        .get(format!("{}/openapi.json", gateway.base))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.text().await.unwrap(), OPENAPI_DOCUMENT);
    let routes: Vec<_> = ROUTES
        .iter()
        .map(|route| (route.method.clone(), route.path))
        .collect();
    let unserved = shared::testing::unserved_routes(&gateway.base, routes).await;
    assert!(unserved.is_empty(), "{unserved:?}");
}

#[test]
fn the_checked_in_document_is_the_generated_one() {
    assert!(
        producers::gateway::openapi::document_text() == OPENAPI_DOCUMENT,
        "producers/openapi.json is stale: cargo run -p producers --bin write-openapi"
    );
}

/// The document's `CloudEvent` schema, compiled with format assertions on
/// (`uuid`, `date-time` are rules here, as they are for the gateway).
fn cloud_event_schema() -> (boon::Schemas, boon::SchemaIndex) {
    let document: serde_json::Value = serde_json::from_str(OPENAPI_DOCUMENT).unwrap();
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    compiler
        .add_resource("urn:switchyard:openapi", document)
        .unwrap();
    let index = compiler
        .compile(
            "urn:switchyard:openapi#/components/schemas/CloudEvent",
            &mut schemas,
        )
        .unwrap();
    (schemas, index)
}

/// Every (JSON pointer, value) leaf of `value`.
fn leaves(value: &serde_json::Value, pointer: String, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(object) => {
            for (key, child) in object {
                leaves(child, format!("{pointer}/{key}"), into);
            }
        }
        serde_json::Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                leaves(child, format!("{pointer}/{index}"), into);
            }
        }
        _ => into.push(pointer),
    }
}

/// Store events, each changed in one place: a leaf replaced by an edge
/// value, a field added or removed, `dataschema` dropped or wrong.
fn candidates() -> Vec<serde_json::Value> {
    use rand::{Rng, SeedableRng};
    let replacements = [
        serde_json::json!(""),
        serde_json::json!(" "),
        serde_json::json!("a"),
        serde_json::json!("/café"),
        serde_json::json!("a\u{0}b"),
        serde_json::json!("x".repeat(256)),
        serde_json::json!("y".repeat(1025)),
        serde_json::json!(" z "),
        serde_json::json!("\u{85}"),
        serde_json::json!("\u{2003}x"),
        serde_json::json!("a b"),
        serde_json::json!("EUR"),
        serde_json::json!("SKU-1"),
        serde_json::json!("someone@example.com"),
        serde_json::json!("0193a2b0-7c3e-7a11-9f00-5d5e1c9d0a02"),
        serde_json::json!("0193a2b07c3e7a119f005d5e1c9d0a02"),
        serde_json::json!("2026-11-23T10:00:00Z"),
        serde_json::json!("2026-11-23 10:00:00"),
        serde_json::json!("urn:switchyard:schema:order.placed:v1"),
        serde_json::json!(-1),
        serde_json::json!(0),
        serde_json::json!(1),
        serde_json::json!(1_000_001),
        serde_json::json!(10_000_000_001i64),
        serde_json::json!(i64::MAX),
        serde_json::json!(1.5),
        serde_json::json!(null),
        serde_json::json!([]),
    ];
    let mut random = rand::rngs::StdRng::seed_from_u64(9);
    let mut store = shared::simulation::StoreTraffic::new(9);
    let mut candidates = Vec::new();
    for round in 0..1_500 {
        let mut event = serde_json::to_value(store.next_event().to_envelope()).unwrap();
        if round % 3 == 0 {
            event.as_object_mut().unwrap().remove("dataschema");
        }
        let mut paths = Vec::new();
        leaves(&event, String::new(), &mut paths);
        match round % 5 {
            0 => {}
            1 => {
                let path = &paths[random.random_range(0..paths.len())];
                let (parent, key) = path.rsplit_once('/').unwrap();
                let parent = if parent.is_empty() {
                    &mut event
                } else {
                    event.pointer_mut(parent).unwrap()
                };
                if let Some(object) = parent.as_object_mut() {
                    object.remove(key);
                }
            }
            2 => {
                let target = if random.random_bool(0.5) {
                    &mut event
                } else {
                    &mut event["data"]
                };
                target["extra"] = serde_json::json!("x");
            }
            _ => {
                let path = &paths[random.random_range(0..paths.len())];
                let replacement = replacements[random.random_range(0..replacements.len())].clone();
                *event.pointer_mut(path).unwrap() = replacement;
            }
        }
        candidates.push(event);
    }
    candidates
}

#[tokio::test]
async fn the_document_allows_exactly_what_the_gateway_accepts() {
    let (schemas, index) = cloud_event_schema();
    let gateway = Gateway::start().await;
    let key = gateway.key(&["*"], &["*"], 1_000_000, 1_000_000).await;
    let mut disagreements = Vec::new();
    let (mut allowed, mut refused) = (0, 0);
    for (number, candidate) in candidates().into_iter().enumerate() {
        let documented = schemas.validate(&candidate, index).is_ok();
        let decoded = shared::events::Event::from_json_value(candidate.clone()).is_ok();
        if documented {
            allowed += 1;
        } else {
            refused += 1;
        }
        if documented != decoded {
            disagreements.push(format!(
                "document {documented}, decoder {decoded}: {candidate}"
            ));
        }
        // Every tenth through the running gateway too (same decoder, real path).
        if number % 10 == 0 {
            let status = gateway
                .post(&key)
                .header("content-type", "application/cloudevents+json")
                .body(candidate.to_string())
                .send()
                .await
                .unwrap()
                .status();
            let accepted = status == StatusCode::ACCEPTED;
            if documented != accepted {
                disagreements.push(format!(
                    "document {documented}, gateway {status}: {candidate}"
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements, e.g.:\n{}",
        disagreements.len(),
        disagreements[..disagreements.len().min(5)].join("\n")
    );
    // Both kinds were tried in numbers.
    assert!(
        allowed > 300 && refused > 300,
        "{allowed} allowed, {refused} refused"
    );
}
