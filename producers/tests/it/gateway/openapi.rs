//! The checked-in OpenAPI document matches the routes the gateway serves.

use std::collections::BTreeSet;

use producers::gateway::{OPENAPI_DOCUMENT, ROUTES};
use reqwest::StatusCode;

use super::support::Gateway;

fn documented_routes(document: &serde_json::Value) -> BTreeSet<(String, String)> {
    document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, operations)| {
            operations
                .as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

#[test]
fn the_document_lists_exactly_the_routes_served() {
    let document: serde_json::Value = serde_json::from_str(OPENAPI_DOCUMENT).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|route| (route.method.to_string(), route.path.to_owned()))
        .collect();
    assert_eq!(documented_routes(&document), served);
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
        .chain([202, 404])
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
    for route in ROUTES {
        let response = gateway
            .client
            .request(
                route.method.clone(),
                format!("{}{}", gateway.base, route.path),
            )
            .send()
            .await
            .unwrap();
        assert!(
            ![StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&response.status()),
            "{} {} answered {}",
            route.method,
            route.path,
            response.status()
        );
    }
}
