//! The gateway's OpenAPI 3.1 document: the hand-written routes and answers
//! of `openapi.base.json`, with the request schemas generated from the same
//! Rust types as `shared/schemas/` — the envelope, and `data` for every
//! version of every event type — so the document allows what the gateway
//! accepts. `cargo run -p producers --bin write-openapi` writes it to
//! `producers/openapi.json`; a test fails when that file is stale.

use serde_json::{Map, Value, json};
use shared::events::EventType;
use shared::events::schema::{data_schema, envelope_schema};

/// Routes, answers and the other components, written by hand.
const BASE: &str = include_str!("openapi.base.json");

/// The whole document.
pub fn document() -> Value {
    // The base is checked in and parsed by a test: it is valid JSON.
    let mut document: Value = serde_json::from_str(BASE).unwrap_or_default();
    let mut data_refs = Vec::new();
    let mut variants = Vec::new();
    let schemas = &mut document["components"]["schemas"];
    for event_type in EventType::ALL {
        for version in event_type.supported_versions() {
            let Some(schema) = data_schema(event_type, version) else {
                continue;
            };
            let name = format!("{event_type}.v{version}");
            schemas[&name] = embeddable(schema.to_value());
            let reference = json!({ "$ref": format!("#/components/schemas/{name}") });
            variants.push(envelope_variant(event_type, version, reference.clone()));
            data_refs.push(reference);
        }
    }
    schemas["CloudEvent"] = json!({
        "description": "A CloudEvent in structured mode: the envelope, with data of one version of one event type. Without dataschema, data is read as the one version whose fields it matches exactly.",
        "anyOf": variants,
    });
    schemas["EventData"] = json!({
        "description": "Binary mode's body (see POST /events): the data of one version of the event type named by the ce-type header.",
        "anyOf": data_refs,
    });
    document
}

/// The document as written to `producers/openapi.json`.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

/// The envelope for `version` of `event_type`: its `type`, its
/// `dataschema` (optional) and its `data`.
fn envelope_variant(event_type: EventType, version: u32, data: Value) -> Value {
    let mut envelope = embeddable(envelope_schema().to_value());
    envelope["title"] = format!("{event_type} v{version}").into();
    let properties = &mut envelope["properties"];
    properties["type"] = json!({ "const": event_type.as_str() });
    // Absent and null both mean "read the data as the version it fits".
    properties["dataschema"] = json!({ "enum": [event_type.schema_uri(version), null] });
    properties["data"] = data;
    envelope
}

/// A generated schema made to live under `components/schemas`: no
/// `$schema` or `$id`, and its `$defs` written in place of their `$ref`s
/// (which would otherwise resolve against the OpenAPI document's root).
fn embeddable(schema: Value) -> Value {
    let Value::Object(mut object) = schema else {
        return schema;
    };
    object.remove("$schema");
    object.remove("$id");
    let definitions = match object.remove("$defs") {
        Some(Value::Object(definitions)) => definitions,
        _ => Map::new(),
    };
    inline(Value::Object(object), &definitions)
}

fn inline(value: Value, definitions: &Map<String, Value>) -> Value {
    match value {
        Value::Object(object) => {
            let target = object
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|reference| reference.strip_prefix("#/$defs/"))
                .and_then(|name| definitions.get(name));
            match target {
                Some(definition) => inline(definition.clone(), definitions),
                None => Value::Object(
                    object
                        .into_iter()
                        .map(|(key, value)| (key, inline(value, definitions)))
                        .collect(),
                ),
            }
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| inline(item, definitions))
                .collect(),
        ),
        other => other,
    }
}
