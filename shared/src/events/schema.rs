//! JSON Schema for the envelope and for every version of every event type,
//! generated from the Rust types. `cargo run -p shared --bin write-schemas`
//! writes them to `shared/schemas/`; a test fails when those files are stale.

use std::path::Path;

use schemars::{Schema, schema_for};

use super::catalog::*;
use super::envelope::CloudEventEnvelope;
use super::event_type::EventType;
use super::validation::MAX_JSON_INTEGER;

/// File name of the envelope's schema.
pub const ENVELOPE_SCHEMA_FILE: &str = "cloudevent.json";

/// The JSON Schema of `data` for one version of a type, or `None` when that
/// version does not exist.
pub fn data_schema(event_type: EventType, version: u32) -> Option<Schema> {
    let mut schema = match (event_type, version) {
        (EventType::CustomerRegistered, 1) => schema_for!(CustomerRegistered),
        (EventType::ProductListed, 1) => schema_for!(ProductListed),
        (EventType::ProductPriceChanged, 1) => schema_for!(ProductPriceChanged),
        (EventType::InventoryRestocked, 1) => schema_for!(InventoryRestocked),
        (EventType::OrderPlaced, 1) => schema_for!(OrderPlacedV1),
        (EventType::OrderPlaced, 2) => schema_for!(OrderPlaced),
        (EventType::PaymentCaptured, 1) => schema_for!(PaymentCaptured),
        (EventType::PaymentFailed, 1) => schema_for!(PaymentFailed),
        (EventType::OrderShipped, 1) => schema_for!(OrderShipped),
        (EventType::OrderCancelled, 1) => schema_for!(OrderCancelled),
        _ => return None,
    };
    schema.ensure_object().values_mut().for_each(bound_integers);
    schema.insert("$id".to_owned(), event_type.schema_uri(version).into());
    schema.insert(
        "title".to_owned(),
        format!("{event_type} v{version}").into(),
    );
    Some(schema)
}

/// The JSON Schema of the structured-mode envelope.
pub fn envelope_schema() -> Schema {
    schema_for!(CloudEventEnvelope)
}

/// Gives every integer the decoder's bounds (±(2^53 − 1), see
/// [`MAX_JSON_INTEGER`]): JSON Schema's `int64` format is only an annotation.
fn bound_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(object) => {
            if object.get("format").and_then(|format| format.as_str()) == Some("int64") {
                object
                    .entry("minimum")
                    .or_insert((-MAX_JSON_INTEGER).into());
                object.entry("maximum").or_insert(MAX_JSON_INTEGER.into());
            }
            object.values_mut().for_each(bound_integers);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// Every schema file this contract has, as (file name, pretty JSON text).
pub fn all_schema_files() -> Vec<(String, String)> {
    let mut files = vec![(ENVELOPE_SCHEMA_FILE.to_owned(), pretty(&envelope_schema()))];
    for event_type in EventType::ALL {
        for version in event_type.supported_versions() {
            if let Some(schema) = data_schema(event_type, version) {
                files.push((format!("{event_type}.v{version}.json"), pretty(&schema)));
            }
        }
    }
    files
}

/// Writes every schema file into `directory`, replacing older copies.
pub fn write_schema_files(directory: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(directory)?;
    let mut written = Vec::new();
    for (name, text) in all_schema_files() {
        std::fs::write(directory.join(&name), text)?;
        written.push(name);
    }
    Ok(written)
}

/// Names of the files in `directory` that are missing or differ from what
/// the Rust types generate now.
pub fn stale_schema_files(directory: &Path) -> Vec<String> {
    all_schema_files()
        .into_iter()
        .filter(|(name, text)| {
            std::fs::read_to_string(directory.join(name))
                .ok()
                .as_deref()
                != Some(text.as_str())
        })
        .map(|(name, _)| name)
        .collect()
}

fn pretty(schema: &Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}
