//! The real `consumers operations-api` binary: operator tokens and roles,
//! the dead-letter operations over HTTP, a background replay's progress
//! and cancellation, and the OpenAPI document against the routes.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::process::Child;
use std::time::Duration;

use consumers::operations_api::{OPENAPI_DOCUMENT, ROUTES};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::testing::{client_from, closed_by_server, connect_from, eventually};

use crate::dead_letters::{SHIPPED_CANCELLED, UNKNOWN_PAYMENTS, prepared};
use crate::http::free_address;
use crate::support::{Stack, consumers_binary, output_of};

pub struct Api {
    pub child: Child,
    pub address: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token made with the real `operator-tokens create`.
pub async fn token(stack: &Stack, name: &str, role: &str) -> String {
    let mut command = consumers_binary(stack);
    command.args(["operator-tokens", "create", "--name", name, "--role", role]);
    let output = output_of(command).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("syop_"), "{token}");
    token
}

impl Api {
    pub async fn start(stack: &Stack) -> Self {
        Self::start_with(stack, &[], &[]).await
    }

    /// Started with `flags` and `environment`.
    pub async fn start_with(stack: &Stack, flags: &[&str], environment: &[(&str, &str)]) -> Self {
        let address: SocketAddr = free_address();
        let child = consumers_binary(stack)
            .args(["operations-api", "--http-address", &address.to_string()])
            .args(flags)
            .envs(environment.iter().copied())
            .spawn()
            .unwrap();
        let api = Self {
            child,
            address,
            base: format!("http://{address}"),
            client: reqwest::Client::new(),
        };
        let up = eventually(Duration::from_secs(60), || async {
            api.client
                .get(format!("{}/healthz", api.base))
                .send()
                .await
                .ok()
                .filter(|response| response.status() == StatusCode::OK)
        })
        .await;
        assert!(up.is_some(), "the operations API answers");
        api
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    /// Cancels replay `id`.
    pub async fn cancel(&self, id: i64, token: &str) -> (StatusCode, Value) {
        let path = format!("/api/v1/replays/{id}/cancel");
        self.call(reqwest::Method::POST, &path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_authenticate_roles_are_enforced_and_replays_run_in_the_background() {
    let (_watchdog, stack, fixture) =
        prepared("operators_authenticate_roles_are_enforced_and_replays_run_in_the_background")
            .await;
    let viewer = token(&stack, "vera", "viewer").await;
    let operator = token(&stack, "otto", "operator").await;
    let api = Api::start(&stack).await;

    // Authentication.
    let (status, body) = api
        .call(reqwest::Method::GET, "/api/v1/dead-letters", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthenticated");
    // The last hex digit changed (to one it is not: a fixed digit matched
    // one token in 16, and the test passed a forged secret as real).
    let last = if viewer.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &viewer[..viewer.len() - 1]);
    let (status, _) = api.get("/api/v1/dead-letters", &forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a wrong secret");
    let (status, who) = api.get("/api/v1/whoami", &viewer).await;
    assert_eq!(
        (status, who["name"].clone(), who["role"].clone()),
        (StatusCode::OK, json!("vera"), json!("viewer"))
    );

    // Reading, with the CLI's filter names.
    let (status, page) = api
        .get("/api/v1/dead-letters?group=sales&limit=10", &viewer)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    let next = page["next_after"].as_i64().unwrap();
    let (_, rest) = api
        .get(
            &format!("/api/v1/dead-letters?group=sales&after={next}"),
            &viewer,
        )
        .await;
    assert_eq!(
        rest["items"].as_array().unwrap().len(),
        UNKNOWN_PAYMENTS - 10
    );
    let (status, bad) = api.get("/api/v1/dead-letters?group=nope", &viewer).await;
    assert_eq!(
        (status, bad["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("group"))
    );
    let (status, bad) = api.get("/api/v1/dead-letters?colour=red", &viewer).await;
    assert_eq!(
        (status, bad["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("colour"))
    );
    let (status, stats) = api.get("/api/v1/stats", &viewer).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let sales = stats["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|group| group["group"] == "sales")
        .unwrap()
        .clone();
    assert_eq!(sales["open_dead_letters"], UNKNOWN_PAYMENTS as i64);
    assert_eq!(sales["consumers"], 1, "the test's sales worker");
    let (status, summary) = api.get("/api/v1/dead-letters/summary", &viewer).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary.as_array().unwrap().len(), 4);
    let export = api
        .client
        .get(format!(
            "{}/api/v1/dead-letters/export?error_kind=poison",
            api.base
        ))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    let lines: Vec<Value> = export
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), crate::dead_letters::POISON);
    assert!(
        lines
            .iter()
            .all(|line| line["error_kind"] == "poison" && line["raw"]["text"].is_string())
    );
    let first = page["items"][0]["id"].as_i64().unwrap();
    let (status, shown) = api
        .get(&format!("/api/v1/dead-letters/{first}"), &viewer)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["group"], "sales");
    let (status, _) = api.get("/api/v1/dead-letters/999999999", &viewer).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, bad) = api.get("/api/v1/dead-letters/abc", &viewer).await;
    assert_eq!(
        (status, bad["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("id"))
    );
    let (status, bad) = api.get("/api/v1/dead-letters?limit=5000", &viewer).await;
    assert_eq!(
        (status, bad["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("limit"))
    );

    // The viewer may not change anything.
    let replay_sales = json!({ "filter": { "group": "sales" } });
    let (status, body) = api
        .post("/api/v1/replays", &viewer, replay_sales.clone())
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::FORBIDDEN, json!("forbidden"))
    );
    let (status, _) = api
        .post(
            "/api/v1/dead-letters/resolve",
            &viewer,
            json!({ "filter": {} }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, preview) = api
        .post("/api/v1/replays/preview", &viewer, replay_sales)
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["report"]["replayed"], UNKNOWN_PAYMENTS as i64);

    // A slow replay, cancelled: what it marked is exactly what it replayed.
    let (status, started) = api
        .post(
            "/api/v1/replays",
            &operator,
            json!({ "filter": { "group": "orders", "error_kind": "ship_cancelled_order" }, "rate": 2.0, "batch": 1,
                    "breaker": { "share": 1.0 } }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["operation_id"].as_i64().unwrap();
    let progressed = eventually(Duration::from_secs(60), || async {
        let (_, status) = api.get(&format!("/api/v1/replays/{id}"), &viewer).await;
        (status["replayed"].as_i64().unwrap_or(0) >= 2).then_some(status)
    })
    .await;
    assert!(progressed.is_some_and(|status| status["live"] == true));
    let (status, cancelled) = api
        .post(
            &format!("/api/v1/replays/{id}/cancel"),
            &operator,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["outcome"], "cancelled");
    let replayed = cancelled["replayed"].as_i64().unwrap();
    assert!(
        replayed < SHIPPED_CANCELLED as i64,
        "it stopped early: {replayed}"
    );
    let marked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE operation_id = $1 AND status = 'replayed'",
    )
    .bind(id)
    .fetch_one(&stack.database.pool)
    .await
    .unwrap();
    assert_eq!(marked, replayed);
    let (_, record) = api.get(&format!("/api/v1/replays/{id}"), &viewer).await;
    assert_eq!(record["outcome"], "cancelled");

    // Resolve and purge, recorded with the token's name.
    let (status, bad) = api
        .post(
            "/api/v1/dead-letters/purge",
            &operator,
            json!({ "filter": { "group": "sales" } }),
        )
        .await;
    assert_eq!(
        (status, bad["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("confirm"))
    );
    let (status, purged) = api
        .post(
            "/api/v1/dead-letters/purge",
            &operator,
            json!({ "filter": { "group": "sales" }, "confirm": true }),
        )
        .await;
    assert_eq!(
        (status, purged["affected"].clone()),
        (StatusCode::OK, json!(UNKNOWN_PAYMENTS))
    );
    let (status, resolved) = api
        .post(
            "/api/v1/dead-letters/resolve",
            &operator,
            json!({ "filter": { "error_kind": "poison" } }),
        )
        .await;
    assert_eq!(
        (status, resolved["affected"].clone()),
        (StatusCode::OK, json!(crate::dead_letters::POISON))
    );
    let (status, history) = api.get("/api/v1/operations?limit=3", &viewer).await;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|operation| {
            (
                operation["action"].as_str().unwrap(),
                operation["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("resolve", "api:otto"),
            ("purge", "api:otto"),
            ("replay", "api:otto")
        ]
    );

    // An edit that breaks the schema is refused naming the field.
    let open_shipment: i64 = sqlx::query_scalar(
        "SELECT id FROM dead_letters WHERE status = 'open' AND error_kind = 'ship_cancelled_order' ORDER BY id LIMIT 1",
    )
    .fetch_one(&stack.database.pool)
    .await
    .unwrap();
    let (_, shown) = api
        .get(&format!("/api/v1/dead-letters/{open_shipment}"), &viewer)
        .await;
    let mut event = shown["body"]["json"].clone();
    event["data"]["carrier"] = json!(12);
    let (status, refused) = api
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/dead-letters/{open_shipment}/event"),
            Some(&operator),
            Some(event),
        )
        .await;
    assert_eq!(
        (status, refused["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("data.carrier")),
        "{refused}"
    );

    // A revoked token is refused.
    let mut revoke = consumers_binary(&stack);
    let viewer_id = who_id(&api, &viewer).await;
    revoke.args(["operator-tokens", "revoke", &viewer_id]);
    let output = output_of(revoke).await;
    assert!(output.status.success());
    // Within a second or so: tokens are held in memory, checked each second.
    let refused = eventually(Duration::from_secs(10), || async {
        let (status, _) = api.get("/api/v1/whoami", &viewer).await;
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(refused.is_some(), "the revoked token is refused");
    fixture.workers.stop().await;
}

async fn who_id(api: &Api, token: &str) -> String {
    let (_, who) = api.get("/api/v1/whoami", token).await;
    who["token_id"].as_str().unwrap().to_owned()
}

#[test]
fn the_document_lists_exactly_the_routes_served_and_every_error_answer() {
    let document: Value = serde_json::from_str(OPENAPI_DOCUMENT).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|route| (route.method.to_string(), route.path.to_owned()))
        .chain(
            consumers::operations_api::ui::UI_ROUTES
                .iter()
                .map(|(method, path)| ((*method).to_owned(), (*path).to_owned())),
        )
        .collect();
    assert_eq!(shared::testing::documented_routes(&document), served);
    let documented: BTreeSet<u16> = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|operations| operations.as_object().unwrap().values())
        .flat_map(|operation| operation["responses"].as_object().unwrap().keys())
        .map(|status| status.parse().unwrap())
        .collect();
    for error in consumers::operations_api::error::ApiError::examples() {
        assert!(
            documented.contains(&error.status.as_u16()),
            "{} undocumented",
            error.status
        );
        let codes = &document["components"]["schemas"]["Error"]["properties"]["error"]["enum"];
        assert!(
            codes.as_array().unwrap().contains(&json!(error.error)),
            "{}",
            error.error
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_checked_in_one_and_every_route_exists() {
    let stack = Stack::new().await;
    let api = Api::start(&stack).await;
    let served = api
        .client
        .get(format!("{}/openapi.json", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.text().await.unwrap(), OPENAPI_DOCUMENT);
    let routes: Vec<_> = ROUTES
        .iter()
        .map(|route| (route.method.clone(), route.path))
        .chain(
            consumers::operations_api::ui::UI_ROUTES
                .iter()
                // An asset's route answers 404 for a name it does not have.
                .map(|(method, path)| {
                    let path = if *path == "/ui/assets/{name}" {
                        "/ui/assets/app.js"
                    } else {
                        path
                    };
                    (method.parse().unwrap(), path)
                }),
        )
        .collect();
    let unserved = shared::testing::unserved_routes(&api.base, routes).await;
    assert!(unserved.is_empty(), "{unserved:?}");
    let (status, body) = api.call(reqwest::Method::GET, "/nowhere", None, None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_bounds_connections_header_time_and_token_checks() {
    for (args, named) in [
        (
            &["--header-timeout-ms", "3600001"][..],
            "--header-timeout-ms",
        ),
        (&["--header-timeout-ms", "0"][..], "--header-timeout-ms"),
        (&["--max-connections", "0"][..], "--max-connections"),
    ] {
        let output = crate::support::output_of({
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_consumers"));
            command.arg("operations-api").args(args);
            command
        })
        .await;
        shared::testing::assert_refused(&output, named, &args);
    }
    let stack = Stack::new().await;
    let api = Api::start_with(
        &stack,
        &[
            "--max-connections-per-address",
            "2",
            "--header-timeout-ms",
            "1000",
            "--token-failures-per-address",
            "1",
        ],
        &[("SWITCHYARD_OPERATIONS_MAX_CONNECTIONS", "4")],
    )
    .await;
    let healthz = format!("{}/healthz", api.base);

    // Two silent connections from one address; a third is closed at once.
    let slow = IpAddr::from([127, 0, 0, 3]);
    let mut silent = vec![
        connect_from(slow, api.address).await,
        connect_from(slow, api.address).await,
    ];
    let mut third = connect_from(slow, api.address).await;
    assert!(closed_by_server(&mut third, Duration::from_secs(10)).await);
    // Two more from elsewhere fill the server (4); a fifth client is served
    // only once the header deadline has closed one of them.
    silent.push(connect_from(IpAddr::from([127, 0, 0, 4]), api.address).await);
    silent.push(connect_from(IpAddr::from([127, 0, 0, 5]), api.address).await);
    let served = client_from(IpAddr::from([127, 0, 0, 6]))
        .get(&healthz)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    let mut closed_before = 0;
    for stream in &mut silent {
        if closed_by_server(stream, Duration::from_millis(1)).await {
            closed_before += 1;
        }
    }
    assert!(
        closed_before >= 1,
        "served while every connection slot was held"
    );
    let mut closed = 0;
    for stream in &mut silent {
        if closed_by_server(stream, Duration::from_secs(10)).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 4,
        "every silent connection is cut off at the deadline"
    );

    // One failed check per second (burst 2) from one address: a flood of
    // well-formed random tokens is soon answered 429 — but a live token
    // from the same address (every client behind one proxy) is never
    // refused because of them.
    let viewer = token(&stack, "limits-viewer", "viewer").await;
    let whoami = |client: &reqwest::Client, token: String| {
        client
            .get(format!("{}/api/v1/whoami", api.base))
            .bearer_auth(token)
            .send()
    };
    let client = client_from(IpAddr::from([127, 0, 0, 7]));
    let mut answers = Vec::new();
    for _ in 0..6 {
        let random = format!("syop_{}_{}", uuid::Uuid::now_v7().simple(), "ab".repeat(32));
        let response = whoami(&client, random).await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        answers.push((
            status,
            body["error"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    assert_eq!(
        answers[0],
        (StatusCode::UNAUTHORIZED, "unauthenticated".to_owned())
    );
    assert_eq!(
        answers[5],
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited".to_owned()),
        "{answers:?}"
    );
    let live = whoami(&client, viewer.clone()).await.unwrap();
    assert_eq!(live.status(), StatusCode::OK, "a live token is not slowed");

    // A revoked token stops working within a second or so (the tokens are
    // held in memory and checked against the database each second).
    let revoked = token(&stack, "to-revoke", "viewer").await;
    let other = client_from(IpAddr::from([127, 0, 0, 8]));
    assert_eq!(
        whoami(&other, revoked.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    // syop_<id: 32 hex>_<secret>
    let token_id = uuid::Uuid::try_parse(&revoked[5..37]).expect("the token names its id");
    let mut command = crate::support::consumers_binary(&stack);
    command.args(["operator-tokens", "revoke", &token_id.to_string()]);
    let output = crate::support::output_of(command).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let refused = eventually(Duration::from_secs(10), || async {
        let status = whoami(&other, revoked.clone()).await.ok()?.status();
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(refused.is_some(), "the revoked token is refused");
}

/// Over the API too, each dead-letter read and write gives up on a database
/// that does not answer within `SWITCHYARD_DEAD_LETTER_DATABASE_TIMEOUT_MS`
/// (here a lock held elsewhere): 503 "the database failed", not the
/// request timeout's 504 half a minute later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_requests_give_up_on_a_database_that_does_not_answer() {
    let stack = Stack::new().await;
    let operator = token(&stack, "olga", "operator").await;
    let api = Api::start_with(
        &stack,
        &[],
        &[("SWITCHYARD_DEAD_LETTER_DATABASE_TIMEOUT_MS", "1000")],
    )
    .await;
    let holder = stack
        .database
        .lock_exclusively(&["dead_letters", "dead_letter_operations"])
        .await;

    let orders = json!({ "filter": { "group": "orders" } });
    let purge = json!({ "filter": { "group": "orders" }, "confirm": true });
    let requests = [
        (reqwest::Method::GET, "/api/v1/dead-letters", None),
        (reqwest::Method::GET, "/api/v1/dead-letters/summary", None),
        (reqwest::Method::GET, "/api/v1/dead-letters/1", None),
        (reqwest::Method::GET, "/api/v1/dead-letters/export", None),
        (reqwest::Method::GET, "/api/v1/operations", None),
        (
            reqwest::Method::POST,
            "/api/v1/replays/preview",
            Some(orders.clone()),
        ),
        (
            reqwest::Method::POST,
            "/api/v1/dead-letters/resolve",
            Some(orders),
        ),
        (
            reqwest::Method::POST,
            "/api/v1/dead-letters/purge",
            Some(purge),
        ),
    ];
    for (method, path, body) in requests {
        let (status, answer) = api.call(method, path, Some(&operator), body).await;
        assert_eq!(
            (status, answer["error"].clone()),
            (StatusCode::SERVICE_UNAVAILABLE, json!("unavailable")),
            "{path}: {answer}"
        );
    }
    holder.rollback().await.unwrap();
    let (status, _) = api
        .call(
            reqwest::Method::GET,
            "/api/v1/dead-letters",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "once the lock is gone, it answers");
}

/// Schemathesis (a client that is not ours) fuzzes every operation of the
/// served document against the real binary, over a store with dead letters
/// of every kind: no answer outside the document, no request the document
/// allows refused, none it forbids accepted, no server error. Seeded, so a
/// failure replays; `SWITCHYARD_SCHEMATHESIS_EXAMPLES` raises the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_matches_what_the_server_enforces_under_schemathesis() {
    let (_watchdog, stack, fixture) =
        prepared("the_document_matches_what_the_server_enforces_under_schemathesis").await;
    let operator = token(&stack, "schemathesis", "operator").await;
    let api = Api::start(&stack).await;
    let program =
        std::env::var("SWITCHYARD_TEST_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned());
    let examples =
        std::env::var("SWITCHYARD_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "40".to_owned());
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let mut command = std::process::Command::new(&program);
    command
        .args(["--config-file", config])
        .args(["run", &format!("{}/openapi.json", api.base)])
        .args(["--header", &format!("Authorization: Bearer {operator}")])
        .args([
            "--max-examples",
            &examples,
            "--seed",
            "20261207",
            "--no-color",
        ])
        .args(["--request-timeout", "40"])
        .current_dir(env!("CARGO_TARGET_TMPDIR"));
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|error| {
            panic!(
                "{program} did not run ({error}): install it with \
                 `pip install schemathesis==4.32.5` (.ci/run does)"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let shown: String = stdout
        .lines()
        .map(|line| line.chars().take(400).collect::<String>() + "\n")
        .collect();
    assert!(
        output.status.success(),
        "schemathesis found the document and the server disagree:\n{shown}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Tested:"), "{shown}");
    fixture.workers.stop().await;
}
