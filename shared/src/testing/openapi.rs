//! Checking an OpenAPI document against the routes a server lists.

use std::collections::BTreeSet;

/// Every (METHOD, path) an OpenAPI document describes.
pub fn documented_routes(document: &serde_json::Value) -> BTreeSet<(String, String)> {
    document["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, operations)| {
            operations
                .as_object()
                .into_iter()
                .flatten()
                .map(move |(method, _)| (method.to_uppercase(), path.clone()))
        })
        .collect()
}
