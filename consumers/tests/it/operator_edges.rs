//! The operations API's edges, through the real binary: inputs that would
//! turn it against its operators (a filter read by position, a rate that
//! is not a number of seconds, bodies over the limit or never sent), the
//! running-replays limit under requests at once, and a paced replay that
//! must not hold the rows it has not reached.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::testing::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dead_letters::{DEAD, SHIPPED_CANCELLED, prepared};
use crate::operations_api::{Api, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_are_objects_and_a_change_over_everything_must_say_all() {
    let (_watchdog, stack, fixture) =
        prepared("filters_are_objects_and_a_change_over_everything_must_say_all").await;
    let operator = token(&stack, "edges-operator", "operator").await;
    let api = Api::start(&stack).await;
    let post = |path: &'static str, body: Value| {
        let api = &api;
        let operator = &operator;
        async move {
            api.call(reqwest::Method::POST, path, Some(operator), Some(body))
                .await
        }
    };

    // A filter given as an array, or a body that is one, is refused naming
    // it: serde would read them by position, as the empty filter.
    for (path, body, field) in [
        ("/api/v1/replays/preview", json!({ "filter": [] }), "filter"),
        ("/api/v1/replays/preview", json!([]), "$"),
        (
            "/api/v1/replays/preview",
            json!({ "filter": [null, null] }),
            "filter",
        ),
        ("/api/v1/replays/preview", json!([{ "ids": [1] }]), "$"),
        ("/api/v1/replays", json!({ "filter": ["orders"] }), "filter"),
        (
            "/api/v1/dead-letters/resolve",
            json!({ "filter": [] }),
            "filter",
        ),
        (
            "/api/v1/dead-letters/purge",
            json!({ "filter": [], "confirm": true }),
            "filter",
        ),
        ("/api/v1/dead-letters/purge", json!([[], true]), "$"),
        (
            "/api/v1/dead-letters/resolve",
            json!({ "filter": { "grup": "orders" } }),
            "grup",
        ),
        (
            "/api/v1/dead-letters/resolve",
            json!({ "filter": { "group": "orders" }, "colour": 1 }),
            "colour",
        ),
        (
            "/api/v1/replays",
            json!({ "filter": { "group": "orders" }, "speed": 1 }),
            "speed",
        ),
        // Nothing narrows: a change over every open dead letter must say so.
        (
            "/api/v1/dead-letters/resolve",
            json!({ "filter": {} }),
            "all",
        ),
        (
            "/api/v1/dead-letters/purge",
            json!({ "filter": { "status": "open" }, "confirm": true }),
            "all",
        ),
        ("/api/v1/replays", json!({ "filter": {} }), "all"),
        ("/api/v1/replays", json!({}), "all"),
    ] {
        let (status, answer) = post(path, body.clone()).await;
        assert_eq!(
            (status, answer["field"].clone()),
            (StatusCode::BAD_REQUEST, json!(field)),
            "{path} {body}: {answer}"
        );
    }
    assert_eq!(
        stack
            .number("SELECT count(*) FROM dead_letters WHERE status = 'open'")
            .await,
        DEAD,
        "nothing was changed"
    );
    // A bad edit names its field once: `data.amount_cents: must be …`,
    // not `data.amount_cents: data.amount_cents: …`.
    let payment = &fixture.payments[0];
    let dead_letter: i64 = sqlx::query_scalar(
        "SELECT id FROM dead_letters WHERE event_id = $1 AND consumer_group = 'orders'",
    )
    .bind(payment.id)
    .fetch_one(&stack.database.pool)
    .await
    .unwrap();
    let mut broken: Value = serde_json::from_slice(&payment.to_json_bytes()).unwrap();
    broken["data"]["amount_cents"] = json!(0);
    let (status, refused) = api
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/dead-letters/{dead_letter}/event"),
            Some(&operator),
            Some(broken),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["field"], "data.amount_cents", "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        !message.contains("data.amount_cents"),
        "the message repeats the field: {message}"
    );

    // A preview over everything is a read: allowed.
    let (status, preview) = post("/api/v1/replays/preview", json!({ "filter": {} })).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["report"]["matched"], DEAD);

    // The CLI says the same, and `--all` is the explicit form.
    let refused = crate::dead_letters::cli(&stack, &["resolve"]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--all"), "{stderr}");

    // Said, it acts on them all.
    let (status, closed) = post(
        "/api/v1/dead-letters/resolve",
        json!({ "filter": { "all": true } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(closed["affected"], DEAD);

    // A purge after the resolve matches no open one: it says where they are.
    let purged =
        crate::dead_letters::cli(&stack, &["purge", "--yes", "--error-kind", "poison"]).await;
    assert!(purged.status.success());
    let stdout = String::from_utf8_lossy(&purged.stdout);
    let stderr = String::from_utf8_lossy(&purged.stderr);
    assert!(stdout.starts_with("0 dead letters purged"), "{stdout}");
    assert!(
        stderr.contains("resolved") && stderr.contains("--status"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_are_bounded_the_replay_slots_hold_under_races_and_bodies_are_413() {
    let (_watchdog, stack, _fixture) =
        prepared("numbers_are_bounded_the_replay_slots_hold_under_races_and_bodies_are_413").await;
    let operator = token(&stack, "slots-operator", "operator").await;
    let api = Api::start(&stack).await;

    // A rate that is not a number of seconds apart is refused at the door.
    for rate in [json!(5e-324), json!(0.001), json!(-1), json!(1e300)] {
        let (status, answer) = api
            .post(
                "/api/v1/replays",
                &operator,
                json!({ "filter": { "group": "sales" }, "rate": rate }),
            )
            .await;
        assert_eq!(
            (status, answer["field"].clone()),
            (StatusCode::BAD_REQUEST, json!("rate")),
            "{rate}: {answer}"
        );
    }

    // Eight slow replays asked at once: exactly four run, the rest are
    // told the API is busy.
    let starts = (0..8).map(|_| {
        api.post(
            "/api/v1/replays",
            &operator,
            json!({ "filter": { "group": "sales" }, "rate": 0.01, "batch": 1 }),
        )
    });
    let answers = futures_util::future::join_all(starts).await;
    let accepted: Vec<i64> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::ACCEPTED)
        .map(|(_, body)| body["operation_id"].as_i64().unwrap())
        .collect();
    let busy = answers
        .iter()
        .filter(|(status, body)| {
            *status == StatusCode::TOO_MANY_REQUESTS && body["error"] == "busy"
        })
        .count();
    assert_eq!((accepted.len(), busy), (4, 4), "{answers:?}");
    for id in &accepted {
        let (status, ended) = api.cancel(*id, &operator).await;
        assert_eq!(status, StatusCode::OK, "{ended}");
        assert_eq!(ended["outcome"], "cancelled", "{ended}");
    }
    // Their slots are free again.
    let (status, again) = api
        .post(
            "/api/v1/replays",
            &operator,
            json!({ "filter": { "group": "sales" }, "rate": 0.01, "batch": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    let id = again["operation_id"].as_i64().unwrap();
    api.cancel(id, &operator).await;

    // Bodies over the limit: 413 with a JSON body, on every route that
    // takes one.
    let huge = "x".repeat(2 * 1024 * 1024);
    for (method, path) in [
        (reqwest::Method::POST, "/api/v1/dead-letters/resolve"),
        (reqwest::Method::POST, "/api/v1/replays/preview"),
        (reqwest::Method::POST, "/api/v1/replays"),
        (reqwest::Method::POST, "/ui/login"),
        (reqwest::Method::PUT, "/api/v1/dead-letters/1/event"),
    ] {
        // Sent as a stream: no Content-Length, counted as it is read.
        let chunks = futures_util::stream::iter(
            huge.as_bytes()
                .chunks(64 * 1024)
                .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
                .collect::<Vec<_>>(),
        );
        // A connection of its own: one cut short by a 413 is not reused.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let response = client
            .request(method.clone(), format!("{}{path}", api.base))
            .bearer_auth(&operator)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "payload_too_large", "{path}: {body}");
    }
    // A length of 10^12 and no body: answered at once, not held.
    let mut stream = tokio::net::TcpStream::connect(api.address).await.unwrap();
    let request = format!(
        "POST /api/v1/dead-letters/resolve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {operator}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("answered and closed without waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

/// A paced replay waits between batches, holding no row while it waits:
/// the dead letters it has not reached can be resolved at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_replay_holds_no_row_it_has_not_reached() {
    let (_watchdog, stack, _fixture) =
        prepared("a_paced_replay_holds_no_row_it_has_not_reached").await;
    let operator = token(&stack, "pace-operator", "operator").await;
    let api = Api::start(&stack).await;
    let (status, started) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/replays",
            Some(&operator),
            Some(json!({
                "filter": { "group": "orders", "error_kind": "ship_cancelled_order" },
                "rate": 1, "batch": 100, "breaker": { "share": 1.0 }
            })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["operation_id"].as_i64().unwrap();
    let last = stack
        .number(
            "SELECT max(id) FROM dead_letters WHERE consumer_group = 'orders' \
             AND error_kind = 'ship_cancelled_order'",
        )
        .await;
    // Asked of the CLI with a one-second database limit: before, the
    // replay's transaction held every row of its batch of 100 for 100 s.
    let mut command = crate::support::consumers_binary(&stack);
    command
        .args([
            "dead-letters",
            "resolve",
            "--id",
            &last.to_string(),
            "--json",
        ])
        .env("SWITCHYARD_DEAD_LETTER_DATABASE_TIMEOUT_MS", "1000")
        .env("USER", "tester");
    let resolved = crate::support::output_of(command).await;
    assert!(
        resolved.status.success(),
        "{}",
        String::from_utf8_lossy(&resolved.stderr)
    );
    let closed: Value = serde_json::from_slice(&resolved.stdout).unwrap();
    assert_eq!(closed["affected"], 1, "{closed}");
    // The replay goes on, one a second, and ends without the resolved one.
    let progressed = eventually(Duration::from_secs(60), || async {
        let (_, status) = api.get(&format!("/api/v1/replays/{id}"), &operator).await;
        (status["replayed"].as_i64() >= Some(2)).then_some(status)
    })
    .await;
    assert!(progressed.is_some(), "the replay moves at its pace");
    let (status, ended) = api.cancel(id, &operator).await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    let replayed = ended["replayed"].as_i64().unwrap();
    assert!((2..SHIPPED_CANCELLED as i64).contains(&replayed), "{ended}");

    // A replay killed outright reads `interrupted` within half a minute
    // (its heartbeat stops), not `running` for minutes.
    let mut command = crate::support::consumers_binary(&stack);
    command
        .args([
            "dead-letters",
            "replay",
            "--group",
            "sales",
            "--rate",
            "1/s",
            "--batch",
            "1",
        ])
        .env("USER", "tester")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut killed = command.spawn().unwrap();
    let started = stack
        .wait_for(
            "SELECT count(*) FROM dead_letter_operations WHERE actor = 'cli:tester' \
             AND action = 'replay' AND affected >= 1",
            1,
            60,
        )
        .await;
    assert_eq!(started, 1, "the CLI replay made progress");
    killed.kill().unwrap();
    killed.wait().unwrap();
    let interrupted = eventually(Duration::from_secs(60), || async {
        let history = crate::dead_letters::cli(&stack, &["history", "--json"]).await;
        let history: Value = serde_json::from_slice(&history.stdout).ok()?;
        history
            .as_array()?
            .iter()
            .any(|operation| {
                operation["actor"] == "cli:tester" && operation["outcome"] == "interrupted"
            })
            .then_some(())
    })
    .await;
    assert!(interrupted.is_some(), "the killed replay reads interrupted");
}

/// Behind a proxy every client shares one address: guesses from eight
/// keep-alive connections at once are held to the allowance, and a live
/// token used beside them from the same address is always answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_in_parallel_are_held_to_the_allowance_and_never_slow_a_live_token() {
    let stack = crate::support::Stack::new().await;
    let api = Api::start_with(&stack, &["--token-failures-per-address", "1"], &[]).await;
    let viewer = token(&stack, "parallel-viewer", "viewer").await;
    let whoami = |client: &reqwest::Client, token: String| {
        client
            .get(format!("{}/api/v1/whoami", api.base))
            .bearer_auth(token)
            .send()
    };
    // Guesses from eight keep-alive connections at once, with a live token
    // used beside them from the same address: the guesses checked (401)
    // stay within the allowance, and the live token is always answered.
    let started = std::time::Instant::now();
    let guessers = (0..8).map(|_| {
        let client = shared::testing::client_from(std::net::IpAddr::from([127, 0, 0, 9]));
        let whoami = &whoami;
        async move {
            let mut checked = 0;
            for _ in 0..25 {
                let random = format!("syop_{}_{}", uuid::Uuid::now_v7().simple(), "cd".repeat(32));
                let status = whoami(&client, random).await.unwrap().status();
                assert!(
                    status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS,
                    "{status}"
                );
                if status == StatusCode::UNAUTHORIZED {
                    checked += 1;
                }
            }
            checked
        }
    });
    let valid = async {
        let client = shared::testing::client_from(std::net::IpAddr::from([127, 0, 0, 9]));
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(whoami(&client, viewer.clone()).await.unwrap().status());
        }
        statuses
    };
    let (checked, statuses) = tokio::join!(futures_util::future::join_all(guessers), valid);
    let checked: u64 = checked.into_iter().sum();
    let elapsed = started.elapsed().as_secs();
    assert!(
        checked <= 2 + elapsed + 1,
        "{checked} guesses answered 401 in {elapsed} s with an allowance of 1/s"
    );
    assert!(
        statuses.iter().all(|status| *status == StatusCode::OK),
        "{statuses:?}"
    );
}

/// A dead letter whose type and reason hold terminal escapes (ESC, BEL, a
/// CSI, a bidi override) is printed by every CLI table with them escaped:
/// nothing reaches the operator's terminal as a control character.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tables_never_send_control_characters_to_the_terminal() {
    let stack = crate::support::Stack::new().await;
    let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\u{202e}";
    sqlx::query(
        "INSERT INTO dead_letters (consumer_group, routing_key, body, reason, error_kind, attempts, \
           event_type, first_failed_at, last_failed_at) \
         VALUES ('orders', 'order.placed', '\\x00', $1, $1, 1, $1, now(), now())",
    )
    .bind(hostile)
    .execute(&stack.database.pool)
    .await
    .unwrap();
    for args in [&["list"][..], &["summary"], &["history"]] {
        let output = crate::dead_letters::cli(&stack, args).await;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed = String::from_utf8(output.stdout).unwrap();
        let control = printed.chars().find(|character| {
            *character != '\n' && (character.is_control() || *character == '\u{202e}')
        });
        assert_eq!(control, None, "{args:?} printed {printed:?}");
        if args != ["history"] {
            assert!(printed.contains("\\u{1b}]0;pwned\\u{7}"), "{printed}");
        }
    }
}

/// Behind a trusted proxy, the failed-check allowance is each real
/// client's (`X-Forwarded-For` from the proxy); a client that is not the
/// proxy cannot escape its allowance by naming other addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_has_its_own_allowance() {
    let refused = crate::support::output_of({
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_consumers"));
        command
            .arg("operations-api")
            .env("SWITCHYARD_TRUSTED_PROXIES", "10.0.0.0/33");
        command
    })
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--trusted-proxies"), "{stderr}");

    let stack = crate::support::Stack::new().await;
    let api = Api::start_with(
        &stack,
        &["--token-failures-per-address", "1"],
        &[("SWITCHYARD_TRUSTED_PROXIES", "127.0.0.10")],
    )
    .await;
    let guess = |client: &reqwest::Client, forwarded: &str| {
        let random = format!("syop_{}_{}", uuid::Uuid::now_v7().simple(), "ef".repeat(32));
        client
            .get(format!("{}/api/v1/whoami", api.base))
            .bearer_auth(random)
            .header("x-forwarded-for", forwarded.to_owned())
            .send()
    };
    let proxy = shared::testing::client_from(std::net::IpAddr::from([127, 0, 0, 10]));
    // One client behind the proxy uses up its allowance...
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(guess(&proxy, "198.51.100.1").await.unwrap().status());
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // ...another behind the same proxy still has its own.
    let other = guess(&proxy, "198.51.100.2").await.unwrap().status();
    assert_eq!(other, StatusCode::UNAUTHORIZED);
    // Not the proxy: the header is ignored, whatever it names.
    let stranger = shared::testing::client_from(std::net::IpAddr::from([127, 0, 0, 11]));
    let mut statuses = Vec::new();
    for hop in 0..6 {
        statuses.push(
            guess(&stranger, &format!("198.51.100.{}", 10 + hop))
                .await
                .unwrap()
                .status(),
        );
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

/// A replayed event fails again only once its retries are used up, after
/// a quick replay has ended: the report says so, and the history and the
/// replay's status keep counting those failures after its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_after_a_replay_ended_are_still_counted() {
    let (_watchdog, stack, _fixture) =
        prepared("failures_after_a_replay_ended_are_still_counted").await;
    let viewer = token(&stack, "late-viewer", "viewer").await;
    let api = Api::start(&stack).await;
    // The sales group's payments of unknown orders fail again, every one.
    let replayed = crate::dead_letters::cli(&stack, &["replay", "--group", "sales"]).await;
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let stdout = String::from_utf8_lossy(&replayed.stdout);
    assert!(stdout.contains("keeps counting"), "{stdout}");
    let id: i64 =
        sqlx::query_scalar("SELECT max(id) FROM dead_letter_operations WHERE action = 'replay'")
            .fetch_one(&stack.database.pool)
            .await
            .unwrap();
    let counted = eventually(Duration::from_secs(90), || async {
        let history = crate::dead_letters::cli(&stack, &["history", "--json"]).await;
        let history: Value = serde_json::from_slice(&history.stdout).ok()?;
        let replay = history
            .as_array()?
            .iter()
            .find(|operation| operation["id"] == id)?
            .clone();
        (replay["failed_again"] == crate::dead_letters::UNKNOWN_PAYMENTS as i64).then_some(replay)
    })
    .await;
    assert!(counted.is_some(), "the history counts the later failures");
    let (status, shown) = api.get(&format!("/api/v1/replays/{id}"), &viewer).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(
        (shown["live"].clone(), shown["failed_again"].clone()),
        (json!(false), json!(crate::dead_letters::UNKNOWN_PAYMENTS)),
        "{shown}"
    );
}

/// Two replays of one filter at once: the one that finds the rest held by
/// the other says so, naming it, instead of "completed" alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_says_what_another_replay_holds() {
    let (_watchdog, stack, _fixture) = prepared("a_replay_says_what_another_replay_holds").await;
    let operator = token(&stack, "holder", "operator").await;
    let api = Api::start(&stack).await;
    let filter = json!({ "group": "orders", "error_kind": "ship_cancelled_order" });
    let (status, first) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/replays",
            Some(&operator),
            Some(
                json!({ "filter": filter, "rate": 0.01, "batch": 1, "breaker": { "share": 1.0 } }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let first_id = first["operation_id"].as_i64().unwrap();
    // Its batch in flight, as the other sees it: three rows locked.
    let mut holding = stack.database.pool.begin().await.unwrap();
    let held: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM dead_letters WHERE consumer_group = 'orders' \
         AND error_kind = 'ship_cancelled_order' AND status = 'open' \
         ORDER BY id DESC LIMIT 3 FOR NO KEY UPDATE",
    )
    .fetch_all(&mut *holding)
    .await
    .unwrap();
    assert_eq!(held.len(), 3);
    let second = crate::dead_letters::cli(
        &stack,
        &[
            "replay",
            "--group",
            "orders",
            "--error-kind",
            "ship_cancelled_order",
            "--breaker-share",
            "1",
        ],
    )
    .await;
    holding.rollback().await.unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        stdout.contains("3 matching dead letters are still open and were not taken")
            && stdout.contains(&format!("operation {first_id} by api:holder")),
        "{stdout}"
    );
    api.cancel(first_id, &operator).await;
}

/// What the commands say around the work: no migration notice at INFO,
/// the actor a cron job names, and a teardown of a namespace that is not
/// there says so without an ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_say_what_happened_and_nothing_alarming() {
    let stack = crate::support::Stack::new().await;
    sqlx::query(
        "INSERT INTO dead_letters (consumer_group, routing_key, body, reason, error_kind, attempts, \
           first_failed_at, last_failed_at) \
         VALUES ('orders', 'order.placed', '\\x00', 'r', 'poison', 1, now(), now())",
    )
    .execute(&stack.database.pool)
    .await
    .unwrap();
    // A cron job: no USER, an actor named in the environment.
    let mut command = crate::support::consumers_binary(&stack);
    command
        .args(["dead-letters", "resolve", "--all"])
        .env_remove("RUST_LOG")
        .env_remove("USER")
        .env_remove("LOGNAME")
        .env_remove("USERNAME")
        .env("SWITCHYARD_ACTOR", "cron-nightly");
    let resolved = crate::support::output_of(command).await;
    let stderr = String::from_utf8_lossy(&resolved.stderr);
    assert!(resolved.status.success(), "{stderr}");
    assert!(!stderr.contains("_sqlx_migrations"), "{stderr}");
    let actor: String =
        sqlx::query_scalar("SELECT actor FROM dead_letter_operations ORDER BY id DESC LIMIT 1")
            .fetch_one(&stack.database.pool)
            .await
            .unwrap();
    assert_eq!(actor, "cli:cron-nightly");

    // Failures over different identifiers read as one fingerprint.
    for account in ["ACC-f62af5d1-CONC", "ACC-0b7c19e2-CONC"] {
        sqlx::query(
            "INSERT INTO dead_letters (consumer_group, routing_key, body, reason, error_kind, \
               attempts, first_failed_at, last_failed_at) \
             VALUES ('sales', 'payment.captured', '\\x00', $1, 'declined', 1, now(), now())",
        )
        .bind(format!(
            "declined: account {account} is closed after 3 tries"
        ))
        .execute(&stack.database.pool)
        .await
        .unwrap();
    }
    let fingerprints: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT fingerprint FROM dead_letters WHERE error_kind = 'declined'",
    )
    .fetch_all(&stack.database.pool)
    .await
    .unwrap();
    assert_eq!(
        fingerprints,
        ["declined: account <id> is closed after # tries"]
    );

    // A namespace that was never declared (or was removed already).
    let absent = format!("absent-{}", uuid::Uuid::now_v7().simple());
    let mut command = crate::support::consumers_binary(&stack);
    command
        .args(["teardown", "--confirm", &absent])
        .env("SWITCHYARD_NAMESPACE", &absent)
        .env_remove("RUST_LOG");
    let torn = crate::support::output_of(command).await;
    let stdout = String::from_utf8_lossy(&torn.stdout);
    let stderr = String::from_utf8_lossy(&torn.stderr);
    assert!(torn.status.success(), "{stderr}");
    assert!(stdout.contains("had no queues"), "{stdout}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

/// A resolved dead letter can be opened again, over the API and the CLI,
/// audited; one whose event already has an open dead letter stays
/// resolved, and the answer says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolved_dead_letters_can_be_reopened_once() {
    let (_watchdog, stack, _fixture) = prepared("resolved_dead_letters_can_be_reopened_once").await;
    let operator = token(&stack, "reopener", "operator").await;
    let api = Api::start(&stack).await;
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM dead_letters WHERE consumer_group = 'orders' \
         AND error_kind = 'ship_cancelled_order' ORDER BY id LIMIT 2",
    )
    .fetch_all(&stack.database.pool)
    .await
    .unwrap();
    let resolved = crate::dead_letters::cli(
        &stack,
        &["resolve", "--id", &format!("{},{}", ids[0], ids[1])],
    )
    .await;
    assert!(resolved.status.success());
    // The second one's event gets an open dead letter again meanwhile.
    sqlx::query(
        "INSERT INTO dead_letters (consumer_group, event_id, event_type, routing_key, body, reason, \
           error_kind, attempts, first_failed_at, last_failed_at) \
         SELECT consumer_group, event_id, event_type, routing_key, body, reason, error_kind, 1, now(), now() \
         FROM dead_letters WHERE id = $1",
    )
    .bind(ids[1])
    .execute(&stack.database.pool)
    .await
    .unwrap();
    let (status, reopened) = api
        .post(
            "/api/v1/dead-letters/reopen",
            &operator,
            json!({ "filter": { "ids": ids } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reopened}");
    assert_eq!(reopened["affected"], 1, "{reopened}");
    assert!(
        reopened["note"]
            .as_str()
            .is_some_and(|note| note.starts_with("1 stay resolved")),
        "{reopened}"
    );
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM dead_letters WHERE id = ANY($1) ORDER BY id")
            .bind(&ids)
            .fetch_all(&stack.database.pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["open", "resolved"]);
    // Only resolved ones: a purged or replayed filter is refused.
    let (status, refused) = api
        .post(
            "/api/v1/dead-letters/reopen",
            &operator,
            json!({ "filter": { "ids": ids, "status": "purged" } }),
        )
        .await;
    assert_eq!(
        (status, refused["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("status")),
        "{refused}"
    );
    // The CLI too, audited with its actor.
    let again = crate::dead_letters::cli(&stack, &["resolve", "--id", &ids[0].to_string()]).await;
    assert!(again.status.success());
    let cli = crate::dead_letters::cli(&stack, &["reopen", "--id", &ids[0].to_string()]).await;
    assert!(
        String::from_utf8_lossy(&cli.stdout).starts_with("1 dead letters reopened"),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT actor FROM dead_letter_operations WHERE action = 'reopen' ORDER BY id",
    )
    .fetch_all(&stack.database.pool)
    .await
    .unwrap();
    assert_eq!(actors, ["api:reopener", "cli:tester"]);
}

/// With the default database limit (30 s, the request's own limit too), a
/// change held up by a lock elsewhere (a replay's batch, an operator's
/// transaction) still answers the promised 503 before the request
/// timeout's 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_held_by_a_lock_answers_503_before_the_request_timeout() {
    let (_watchdog, stack, fixture) =
        prepared("a_change_held_by_a_lock_answers_503_before_the_request_timeout").await;
    let operator = token(&stack, "locked-out", "operator").await;
    let api = Api::start(&stack).await;
    let payment = &fixture.payments[0];
    let id: i64 = sqlx::query_scalar(
        "SELECT id FROM dead_letters WHERE event_id = $1 AND consumer_group = 'orders'",
    )
    .bind(payment.id)
    .fetch_one(&stack.database.pool)
    .await
    .unwrap();
    let mut holding = stack.database.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM dead_letters WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *holding)
        .await
        .unwrap();
    let (status, answer) = api
        .post(
            "/api/v1/dead-letters/resolve",
            &operator,
            json!({ "filter": { "ids": [id] } }),
        )
        .await;
    holding.rollback().await.unwrap();
    assert_eq!(
        (status, answer["error"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("unavailable")),
        "{answer}"
    );
}
