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

/// The routes (METHOD, path) a server at `base` answers with 404 or 405:
/// routes a document lists but nothing serves. `{…}` path parameters are
/// filled with `1`.
pub async fn unserved_routes(
    base: &str,
    routes: impl IntoIterator<Item = (reqwest::Method, &'static str)>,
) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut unserved = Vec::new();
    for (method, path) in routes {
        let filled: String = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "1"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let status = client
            .request(method.clone(), format!("{base}{filled}"))
            .send()
            .await
            .map(|response| response.status().as_u16());
        if !matches!(status, Ok(status) if status != 404 && status != 405) {
            unserved.push(format!("{method} {path} answered {status:?}"));
        }
    }
    unserved
}
