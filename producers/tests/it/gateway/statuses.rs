//! Every row of the README's status table, against the running gateway:
//! each documented `error` code is produced by a real request and answered
//! with its row's status, and the table names every code the gateway has.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use producers::gateway::GatewayConfig;
use producers::gateway::error::GatewayError;

use super::support::{Gateway, json, order_placed};

/// `(status, error codes)` per row of the table under the README's
/// "| status | when | body `error` |" header.
fn readme_rows() -> Vec<(u16, Vec<String>)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let table = readme
        .split("| status | when | body `error` |")
        .nth(1)
        .expect("the README has the status table");
    table
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let status = cells[1].parse().unwrap();
            let codes = cells[3]
                .split(',')
                .filter_map(|code| code.trim().strip_prefix('`')?.strip_suffix('`'))
                .map(str::to_owned)
                .collect();
            (status, codes)
        })
        .collect()
}

/// Status and `error` of a response (`accepted` for a 202).
async fn answer(response: reqwest::Response) -> (String, u16) {
    let status = response.status().as_u16();
    let body = json(response).await;
    let code = body["error"].as_str().unwrap_or("accepted").to_owned();
    (code, status)
}

#[tokio::test]
async fn every_row_of_the_readme_status_table_is_what_the_gateway_answers() {
    let mut seen: BTreeMap<String, u16> = BTreeMap::new();
    let mut record = |(code, status): (String, u16)| {
        let previous = seen.insert(code.clone(), status);
        assert!(
            previous.is_none_or(|previous| previous == status),
            "{code} answered with two statuses"
        );
    };

    let gateway = Gateway::with_config(GatewayConfig {
        max_batch_events: 2,
        ..GatewayConfig::default()
    })
    .await;
    let key = gateway.checkout_key().await;
    let event = order_placed("/checkout");
    record(answer(gateway.post_structured(&key, &event).await).await);
    let mut invalid = event.to_envelope();
    invalid.data["lines"][0]["quantity"] = serde_json::json!(0);
    let post = |body: Vec<u8>, content_type: &'static str| {
        gateway
            .post(&key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let structured = "application/cloudevents+json";
    record(
        answer(
            post(serde_json::to_vec(&invalid).unwrap(), structured)
                .await
                .unwrap(),
        )
        .await,
    );
    record(answer(post(b"{not json".to_vec(), structured).await.unwrap()).await);
    let without_key = gateway
        .client
        .post(format!("{}/events", gateway.base))
        .header("content-type", structured)
        .body(event.to_json_bytes())
        .send()
        .await
        .unwrap();
    record(answer(without_key).await);
    record(answer(gateway.post_structured("sy_nope", &event).await).await);
    record(
        answer(
            gateway
                .post_structured(&key, &order_placed("/billing"))
                .await,
        )
        .await,
    );
    let three: Vec<_> = (0..3).map(|_| order_placed("/checkout")).collect();
    record(answer(gateway.post_batch(&key, &three).await).await);
    let over_event_limit = vec![b' '; shared::events::DEFAULT_MAX_EVENT_BYTES + 1];
    record(answer(post(over_event_limit, structured).await.unwrap()).await);
    record(answer(post(b"hello".to_vec(), "text/plain").await.unwrap()).await);
    let slow = gateway.key(&["order.placed"], &["/checkout"], 1, 1).await;
    gateway
        .post_structured(&slow, &order_placed("/checkout"))
        .await;
    record(
        answer(
            gateway
                .post_structured(&slow, &order_placed("/checkout"))
                .await,
        )
        .await,
    );

    let hung = Gateway::behind_proxy_with(GatewayConfig {
        request_timeout: Duration::from_secs(1),
        ..GatewayConfig::default()
    })
    .await;
    let hung_key = hung.checkout_key().await;
    hung.proxy.as_ref().unwrap().stall();
    record(
        answer(
            hung.post_structured(&hung_key, &order_placed("/checkout"))
                .await,
        )
        .await,
    );

    let broker = Gateway::behind_proxy().await;
    let broker_key = broker.checkout_key().await;
    broker.proxy.as_ref().unwrap().cut();
    record(
        answer(
            broker
                .post_structured(&broker_key, &order_placed("/checkout"))
                .await,
        )
        .await,
    );

    let database = Gateway::with_database_behind_proxy().await;
    let database_key = database.checkout_key().await;
    database.proxy.as_ref().unwrap().cut();
    record(
        answer(
            database
                .post_structured(&database_key, &order_placed("/checkout"))
                .await,
        )
        .await,
    );

    let rows = readme_rows();
    for (status, codes) in &rows {
        let codes = if codes.is_empty() {
            vec!["accepted".to_owned()]
        } else {
            codes.clone()
        };
        for code in codes {
            assert_eq!(
                seen.get(&code),
                Some(status),
                "README says {code} is {status}; the gateway answered {:?}",
                seen.get(&code)
            );
        }
    }
    let documented: BTreeSet<String> = rows.into_iter().flat_map(|(_, codes)| codes).collect();
    let answered: BTreeSet<String> = GatewayError::examples()
        .iter()
        .map(|error| error.code().to_owned())
        .collect();
    assert_eq!(documented, answered, "the table names every error code");
}
