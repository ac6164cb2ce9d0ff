//! The dashboard at `/ui`, served by the real `consumers operations-api`:
//! its sessions and CSRF checks over HTTP, then an operator's and a
//! viewer's work in headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs).

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use shared::groups::ConsumerGroup;
use shared::testing::eventually;
use uuid::Uuid;

use crate::browser::{Browser, ENTER, PAGE_PATIENCE};
use crate::dead_letters::{DEAD, prepared};
use crate::operations_api::{Api, token};
use crate::processing::order_placed;
use crate::stats::broker_counts;
use crate::support::{Stack, consumers_binary, output_of};

/// A client that keeps no cookies and follows no redirects: every cookie
/// is sent by hand, as a browser would.
fn bare_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in with `token`; the session cookie's `name=value` and its
/// `Set-Cookie` line.
async fn login(api: &Api, token: &str, headers: HeaderMap) -> (StatusCode, String, String) {
    let response = bare_client()
        .post(format!("{}/ui/login", api.base))
        .headers(headers)
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let set_cookie = response
        .headers()
        .get(SET_COOKIE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let pair = set_cookie.split(';').next().unwrap_or_default().to_owned();
    (status, pair, set_cookie)
}

/// The CSRF token the dashboard page carries for the session `cookie`.
async fn csrf_of(api: &Api, cookie: &str) -> String {
    let page = bare_client()
        .get(format!("{}/ui", api.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let text = page.text().await.unwrap();
    let start = text.find("name=\"csrf-token\" content=\"").unwrap() + 27;
    text[start..start + 64].to_owned()
}

async fn with_cookie(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = bare_client()
        .request(method, format!("{}{path}", api.base))
        .header("cookie", cookie);
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_needs_a_session_and_every_change_its_csrf_token() {
    let stack = Stack::new().await;
    let operator = token(&stack, "olga", "operator").await;
    let viewer = token(&stack, "vic", "viewer").await;
    let api = Api::start(&stack).await;
    let client = bare_client();

    // Without a session the dashboard sends to the login page; the login
    // page and the assets are served to anyone, with a strict policy.
    let page = client.get(format!("{}/ui", api.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(page.headers()[LOCATION], "/ui/login");
    let login_page = client
        .get(format!("{}/ui/login", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(login_page.status(), StatusCode::OK);
    let policy = login_page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    assert!(login_page.text().await.unwrap().contains("Operator token"));
    for (asset, kind) in [
        ("app.js", "text/javascript"),
        ("login.js", "text/javascript"),
        ("style.css", "text/css"),
    ] {
        let served = client
            .get(format!("{}/ui/assets/{asset}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), StatusCode::OK, "{asset}");
        assert!(
            served.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }
    let missing = client
        .get(format!("{}/ui/assets/secrets.txt", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // A wrong token opens nothing; a form post (not JSON) is refused.
    let (status, pair, _) = login(&api, &format!("{operator}0"), HeaderMap::new()).await;
    assert_eq!((status, pair.as_str()), (StatusCode::UNAUTHORIZED, ""));
    let form = client
        .post(format!("{}/ui/login", api.base))
        .form(&[("token", operator.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::BAD_REQUEST);
    assert!(form.headers().get(SET_COOKIE).is_none());

    // A login sets an HttpOnly, SameSite=Strict cookie (Secure behind TLS).
    let (status, cookie, set_cookie) = login(&api, &operator, HeaderMap::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    assert!(
        !set_cookie.contains(&operator),
        "the token is not the cookie"
    );
    let mut proxied = HeaderMap::new();
    proxied.insert("x-forwarded-proto", "https".parse().unwrap());
    let (_, _, secure) = login(&api, &operator, proxied).await;
    assert!(
        secure.split("; ").any(|attribute| attribute == "Secure"),
        "{secure}"
    );
    let stored: i64 = stack
        .number("SELECT count(*) FROM operator_sessions WHERE octet_length(session_sha256) = 32")
        .await;
    assert_eq!(stored, 2);

    // The cookie reads; a change needs the page's CSRF token as well.
    let csrf = csrf_of(&api, &cookie).await;
    let (status, who) = with_cookie(
        &api,
        reqwest::Method::GET,
        "/api/v1/whoami",
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, who["name"].clone()),
        (StatusCode::OK, json!("olga"))
    );
    let resolve = json!({ "filter": { "ids": [1] } });
    let (status, refused) = with_cookie(
        &api,
        reqwest::Method::POST,
        "/api/v1/dead-letters/resolve",
        &cookie,
        None,
        Some(resolve.clone()),
    )
    .await;
    assert_eq!(
        (status, refused["error"].clone()),
        (StatusCode::FORBIDDEN, json!("csrf"))
    );
    let wrong = "0".repeat(64);
    let (status, _) = with_cookie(
        &api,
        reqwest::Method::POST,
        "/api/v1/dead-letters/resolve",
        &cookie,
        Some(&wrong),
        Some(resolve.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, resolved) = with_cookie(
        &api,
        reqwest::Method::POST,
        "/api/v1/dead-letters/resolve",
        &cookie,
        Some(&csrf),
        Some(resolve.clone()),
    )
    .await;
    assert_eq!(
        (status, resolved["affected"].clone()),
        (StatusCode::OK, json!(0))
    );
    let (_, operations) = with_cookie(
        &api,
        reqwest::Method::GET,
        "/api/v1/operations",
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(
        operations[0]["actor"], "api:olga",
        "audited as the session's operator"
    );

    // A viewer's session reads but may not change anything.
    let (_, viewer_cookie, _) = login(&api, &viewer, HeaderMap::new()).await;
    let viewer_csrf = csrf_of(&api, &viewer_cookie).await;
    let (status, refused) = with_cookie(
        &api,
        reqwest::Method::POST,
        "/api/v1/dead-letters/resolve",
        &viewer_cookie,
        Some(&viewer_csrf),
        Some(resolve.clone()),
    )
    .await;
    assert_eq!(
        (status, refused["error"].clone()),
        (StatusCode::FORBIDDEN, json!("forbidden"))
    );

    // Signing out (a change: CSRF) ends the session; so does revoking the token.
    let (status, _) = with_cookie(
        &api,
        reqwest::Method::POST,
        "/ui/logout",
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = with_cookie(
        &api,
        reqwest::Method::POST,
        "/ui/logout",
        &cookie,
        Some(&csrf),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = with_cookie(
        &api,
        reqwest::Method::GET,
        "/api/v1/whoami",
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let page = client
        .get(format!("{}/ui", api.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    let (status, _) = with_cookie(
        &api,
        reqwest::Method::GET,
        "/api/v1/whoami",
        &viewer_cookie,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, who) = api
        .call(reqwest::Method::GET, "/api/v1/whoami", Some(&viewer), None)
        .await;
    let mut revoke = consumers_binary(&stack);
    revoke.args([
        "operator-tokens",
        "revoke",
        who["token_id"].as_str().unwrap(),
    ]);
    assert!(output_of(revoke).await.status.success());
    // Within a second or so: tokens are held in memory, checked each second.
    let refused = shared::testing::eventually(std::time::Duration::from_secs(10), || async {
        let (status, _) = with_cookie(
            &api,
            reqwest::Method::GET,
            "/api/v1/whoami",
            &viewer_cookie,
            None,
            None,
        )
        .await;
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(refused.is_some(), "the session of a revoked token ends");

    // Guessing session cookies counts as failed checks, like tokens.
    let mut limited = false;
    for attempt in 0..40 {
        let guess = format!("switchyard_session={attempt:064x}");
        let (status, _) = with_cookie(
            &api,
            reqwest::Method::GET,
            "/api/v1/whoami",
            &guess,
            None,
            None,
        )
        .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(limited, "guessed session cookies are rate limited");
}

/// Waits until the overview shows `figure` of `group` as `expected`.
async fn overview_shows(browser: &Browser, group: &str, figure: &str, expected: String) {
    eprintln!("waiting for the overview's {group} {figure} to read {expected}");
    browser
        .text_when(&format!("#{group}-{figure}"), |shown| shown == expected)
        .await;
}

/// Waits until `sql` (a count with `$1`) with `value` reads `expected`.
async fn wait_for_value(stack: &Stack, sql: &'static str, value: Uuid, expected: i64) {
    let reached = eventually(PAGE_PATIENCE, || async {
        let count: i64 = sqlx::query_scalar(sql)
            .bind(value)
            .fetch_one(&stack.database.pool)
            .await
            .unwrap();
        (count == expected).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "{sql} with {value} never read {expected}"
    );
}

async fn open_dead_letters(stack: &Stack, group: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE status = 'open' AND consumer_group = $1",
    )
    .bind(group)
    .fetch_one(&stack.database.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_repairs_and_replays_dead_letters_in_a_browser() {
    let (_watchdog, stack, fixture) =
        prepared("an_operator_finds_repairs_and_replays_dead_letters_in_a_browser").await;
    let operator = token(&stack, "otto", "operator").await;
    let api = Api::start(&stack).await;
    let mut browser = Browser::start("operator").await;

    // Unauthenticated, the dashboard sends to the login page.
    browser
        .client
        .goto(&format!("{}/ui", api.base))
        .await
        .unwrap();
    browser.find("#login-form").await;
    assert!(
        browser
            .client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ui/login")
    );
    browser.shot("login").await;
    browser.set_value("#token", "syop_not_a_token").await;
    browser.click("#login-button").await;
    browser
        .text_when("#login-error", |text| text.contains("unknown"))
        .await;
    browser.set_value("#token", "").await;
    browser.login(&api.base, &operator).await;
    browser
        .text_when("#who", |text| text == "otto (operator)")
        .await;

    // The overview's counts are the broker's and the store's.
    for group in [
        ConsumerGroup::Orders,
        ConsumerGroup::Sales,
        ConsumerGroup::Inventory,
    ] {
        let name = group.as_str();
        let queue = stack.isolated.topology.group(group).work.clone();
        let matched = eventually(PAGE_PATIENCE, || async {
            let broker = broker_counts(&stack.settings, queue.clone()).await?;
            let shown = (
                browser.text_of(&format!("#{name}-ready")).await,
                browser.text_of(&format!("#{name}-unacked")).await,
                browser.text_of(&format!("#{name}-consumers")).await,
            );
            let expected = (
                broker.0.to_string(),
                broker.1.to_string(),
                broker.2.to_string(),
            );
            (shown == expected).then_some(())
        })
        .await;
        assert!(
            matched.is_some(),
            "the overview of {name} never matched the broker's counts"
        );
        overview_shows(
            &browser,
            name,
            "open",
            open_dead_letters(&stack, name).await.to_string(),
        )
        .await;
    }
    // The fixture's events were applied within the lag window: the
    // percentiles are shown, and so is the throughput sparkline.
    browser
        .text_when("#orders-lag-p50", |text| {
            text.ends_with(" s") || text.ends_with(" ms")
        })
        .await;
    browser.find("#group-orders svg.spark").await;
    browser.shot("overview").await;

    // The dead letters, grouped by failure.
    browser.click("#nav-dead-letters").await;
    browser.find("#summary tbody tr").await;
    let summary_rows = browser
        .client
        .find_all(fantoccini::Locator::Css("#summary tbody tr"))
        .await
        .unwrap();
    let fingerprints: i64 = stack
        .number("SELECT count(DISTINCT (consumer_group, event_type, fingerprint)) FROM dead_letters WHERE status = 'open'")
        .await;
    assert_eq!(summary_rows.len() as i64, fingerprints);
    browser.shot("dead-letters").await;

    // One dead letter: a payment for an order the orders group never saw.
    let payment = &fixture.payments[0];
    let id: i64 = sqlx::query_scalar(
        "SELECT id FROM dead_letters WHERE consumer_group = 'orders' AND event_id = $1",
    )
    .bind(payment.id)
    .fetch_one(&stack.database.pool)
    .await
    .unwrap();
    browser.click(&format!("a[href='#dead-letter/{id}']")).await;
    browser
        .text_when("#dead-letter-title", |text| {
            text == format!("Dead letter {id}")
        })
        .await;
    let shown: Value = serde_json::from_str(
        &browser
            .on("#event-body", |element| async move {
                element.prop("value").await
            })
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(shown["id"], json!(payment.id.to_string()));
    browser
        .text_when("#attempts tbody", |text| !text.is_empty())
        .await;
    browser.shot("dead-letter").await;

    // An edit that breaks the schema is refused, naming the field.
    let mut broken = shown.clone();
    broken["data"]["amount_cents"] = json!("lots");
    browser.set_value("#event-body", &broken.to_string()).await;
    browser.click("#save-event").await;
    browser
        .text_when("#edit-error", |text| text.starts_with("data.amount_cents"))
        .await;
    browser.shot("edit-refused").await;

    // The repair: the payment belongs to an order that now exists.
    let order = Uuid::now_v7();
    stack.publish(&[order_placed(order)]).await;
    wait_for_value(
        &stack,
        "SELECT count(*) FROM orders WHERE order_id = $1",
        order,
        1,
    )
    .await;
    let mut repaired = shown.clone();
    repaired["data"]["order_id"] = json!(order.to_string());
    browser
        .set_value(
            "#event-body",
            &serde_json::to_string_pretty(&repaired).unwrap(),
        )
        .await;
    browser.click("#save-event").await;
    browser
        .text_when("#edit-done", |text| text.starts_with("Saved"))
        .await;
    let edited_by: Option<String> =
        sqlx::query_scalar("SELECT edited_by FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_one(&stack.database.pool)
            .await
            .unwrap();
    assert_eq!(edited_by.as_deref(), Some("api:otto"));

    // Replayed: the open count falls, the order is paid.
    let open_before = open_dead_letters(&stack, "orders").await;
    browser.click("#replay-one").await;
    browser
        .text_when("#replay-preview", |text| {
            text.starts_with("Dry run: 1 will be replayed")
        })
        .await;
    browser.click("#replay-start").await;
    browser
        .text_when("#replay-status", |text| {
            text.starts_with("completed: 1 replayed")
        })
        .await;
    browser.shot("replayed-one").await;
    browser.click("#replay-close").await;
    wait_for_value(
        &stack,
        "SELECT count(*) FROM orders WHERE order_id = $1 AND status = 'paid'",
        order,
        1,
    )
    .await;
    browser.click("#nav-overview").await;
    overview_shows(&browser, "orders", "open", (open_before - 1).to_string()).await;

    // A filtered replay at a rate limit: the sales group's payments, once
    // their orders exist, run to the end.
    let orders: Vec<_> = fixture
        .payment_orders
        .iter()
        .map(|order| order_placed(*order))
        .collect();
    stack.publish(&orders).await;
    stack
        .wait_for(
            "SELECT count(*) FROM sales_orders WHERE paid_on IS NULL",
            fixture.payment_orders.len() as i64,
            60,
        )
        .await;
    browser.click("#nav-dead-letters").await;
    browser.find("#filter").await;
    browser
        .client
        .execute(
            "document.querySelector('#filter [name=group]').value = 'sales';",
            vec![],
        )
        .await
        .unwrap();
    browser
        .set_value("#filter [name=type]", "payment.captured")
        .await;
    browser.click("#filter button[type=submit]").await;
    let payments = fixture.payment_orders.len();
    browser
        .text_when("#summary tbody", |text| {
            text.contains("sales") && !text.contains("orders")
        })
        .await;
    browser.click("#replay-filter").await;
    browser
        .text_when("#replay-preview", |text| {
            text.starts_with(&format!("Dry run: {payments} will be replayed"))
        })
        .await;
    browser.set_value("#replay-rate", "5").await;
    browser.click("#replay-start").await;
    browser
        .text_when("#replay-status", |text| text.starts_with("running"))
        .await;
    browser.shot("filtered-replay-running").await;
    browser
        .text_when("#replay-status", |text| {
            text.starts_with(&format!("completed: {payments} replayed"))
        })
        .await;
    let bar = browser
        .client
        .execute(
            "const bar = document.getElementById('replay-bar'); return [bar.value, bar.max];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(bar, json!([payments, payments]), "the progress bar is full");
    browser.shot("filtered-replay-done").await;
    browser.click("#replay-close").await;
    stack
        .wait_for(
            "SELECT count(*) FROM sales_orders WHERE paid_on IS NOT NULL",
            payments as i64,
            60,
        )
        .await;

    // Every action is in the history, with who ran it.
    browser.click("#nav-history").await;
    let history = browser
        .text_when("#operations tbody", |text| text.lines().count() >= 3)
        .await;
    let actions: Vec<&str> = history.lines().collect();
    assert!(
        actions[0].contains("api:otto")
            && actions[0].contains("replay")
            && actions[0].contains("sales"),
        "{history}"
    );
    assert!(
        actions[1].contains("replay") && actions[1].contains(&id.to_string()),
        "{history}"
    );
    assert!(actions[2].contains("edit"), "{history}");
    browser.shot("history").await;

    // Readable on a phone-width screen.
    browser.client.set_window_size(390, 844).await.unwrap();
    browser.click("#nav-overview").await;
    browser.find("#groups .card").await;
    browser.shot("overview-phone").await;
    fixture.workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_control_that_changes_anything_and_is_refused_if_it_tries() {
    let (_watchdog, stack, fixture) =
        prepared("a_viewer_sees_no_control_that_changes_anything_and_is_refused_if_it_tries").await;
    let viewer = token(&stack, "vera", "viewer").await;
    let api = Api::start(&stack).await;
    let mut browser = Browser::start("viewer").await;
    browser.login(&api.base, &viewer).await;
    browser
        .text_when("#who", |text| text == "vera (viewer)")
        .await;
    browser.click("#nav-dead-letters").await;
    browser.find("#list tbody tr").await;
    for control in [
        "#replay-filter",
        "#replay-selected",
        "#resolve-selected",
        "#purge-selected",
        "#select-all",
    ] {
        assert!(
            browser.absent(control).await,
            "{control} is shown to a viewer"
        );
    }
    browser.shot("dead-letters").await;
    let id: i64 = stack.number("SELECT min(id) FROM dead_letters").await;
    // As a worker stores a body over the event limit: its first bytes, its
    // size and its hash (the worker's side: hostile.rs).
    sqlx::query(
        "UPDATE dead_letters SET body_size = 3000000, body_sha256 = '\\x00ff'::bytea WHERE id = $1",
    )
    .bind(id)
    .execute(&stack.database.pool)
    .await
    .unwrap();
    browser.click(&format!("a[href='#dead-letter/{id}']")).await;
    browser
        .text_when("#dead-letter-title", |text| {
            text == format!("Dead letter {id}")
        })
        .await;
    browser
        .text_when("#dead-letter-facts", |text| {
            text.contains("3000000 bytes, over the event limit") && text.contains("SHA-256 00ff")
        })
        .await;
    for control in ["#replay-one", "#resolve-one", "#purge-one", "#save-event"] {
        assert!(
            browser.absent(control).await,
            "{control} is shown to a viewer"
        );
    }
    assert_eq!(
        browser
            .on("#event-body", |element| async move {
                element.prop("readOnly").await
            })
            .await
            .as_deref(),
        Some("true")
    );
    browser.shot("dead-letter").await;
    // Called anyway, from the page with its session and CSRF token: 403.
    let status = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch('/api/v1/dead-letters/resolve', { method: 'POST', credentials: 'same-origin', \
               headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': \
                 document.querySelector('meta[name=csrf-token]').content }, \
               body: JSON.stringify({ filter: { ids: [arguments[0]] } }) }).then((r) => done(r.status));",
            vec![json!(id)],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    assert_eq!(
        open_dead_letters(&stack, "orders").await + open_dead_letters(&stack, "sales").await,
        DEAD
    );
    fixture.workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cancels_a_replay_and_resolves_and_purges_only_after_confirming() {
    let (_watchdog, stack, fixture) =
        prepared("an_operator_cancels_a_replay_and_resolves_and_purges_only_after_confirming")
            .await;
    let operator = token(&stack, "otto", "operator").await;
    let api = Api::start(&stack).await;
    let mut browser = Browser::start("operator-actions").await;

    // Signed in with the keyboard alone: the token, then Enter.
    browser
        .client
        .goto(&format!("{}/ui/login", api.base))
        .await
        .unwrap();
    browser
        .send_keys("#token", &format!("{operator}{ENTER}"))
        .await;
    browser
        .text_when("#who", |text| text == "otto (operator)")
        .await;

    // The shipments of cancelled orders, filtered with Enter in a field.
    browser.click("#nav-dead-letters").await;
    browser
        .send_keys(
            "#filter [name=error_kind]",
            &format!("ship_cancelled_order{ENTER}"),
        )
        .await;
    let shipments = fixture.shipments.len();
    browser
        .text_when("#summary tbody", |text| {
            text.contains("ship_cancelled_order") && !text.contains("payment")
        })
        .await;

    // An answer that comes back late (the page's first, unfiltered load on a
    // busy server) never replaces the answer to the filter typed after it:
    // the unfiltered load is held back 1.5 s here, the filtered one is not.
    browser
        .client
        .execute(
            r##"
            const original = window.fetch;
            window.lateAnswered = false;
            window.fetch = (url, options) => String(url).includes("error_kind=")
              ? original(url, options)
              : new Promise((resolve) => setTimeout(resolve, 1500))
                  .then(() => original(url, options))
                  .finally(() => { window.lateAnswered = true; });
            const form = document.getElementById("filter").elements;
            const kind = form.error_kind.value;
            form.error_kind.value = "";
            loadDeadLetters();
            form.error_kind.value = kind;
            loadDeadLetters();
            setTimeout(() => { window.fetch = original; }, 100);"##,
            vec![],
        )
        .await
        .unwrap();
    eventually(PAGE_PATIENCE, || async {
        let answered = browser.client.execute("return window.lateAnswered", vec![]);
        (answered.await.ok()? == json!(true)).then_some(())
    })
    .await
    .expect("the held-back load was answered");
    let summary = browser
        .text_when("#summary tbody", |text| {
            text.contains("ship_cancelled_order")
        })
        .await;
    assert!(!summary.contains("payment"), "{summary}");

    // The page reads well: a typed time is UTC as every time shown, cells
    // wrap between words, each cell knows its column (the phone layout
    // shows it), each row's buttons say which row, the editor has a name,
    // and the page has an icon.
    let page = browser
        .client
        .execute(
            r##"
            const form = document.getElementById("filter").elements;
            form.since.value = "2026-01-02T03:04";
            const since = filterObject().since;
            form.since.value = "";
            const cell = document.querySelector("#summary tbody td");
            return {
              since,
              wrap: getComputedStyle(cell).overflowWrap,
              label: cell.getAttribute("data-label"),
              show: document.querySelector("#summary tbody button").getAttribute("aria-label"),
              icon: document.querySelector('link[rel="icon"]') !== null,
              editor: document.getElementById("event-body").labels[0].textContent,
            };"##,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(page["since"], "2026-01-02T03:04:00.000Z", "{page}");
    assert_eq!(page["wrap"], "break-word", "{page}");
    assert_eq!(page["label"], "Group", "{page}");
    assert!(
        page["show"]
            .as_str()
            .unwrap()
            .starts_with("Show the dead letters of orders order.shipped ship_cancelled_order"),
        "{page}"
    );
    assert_eq!(
        (page["icon"].clone(), page["editor"].clone()),
        (json!(true), json!("Event (JSON)"))
    );
    browser.client.set_window_size(400, 800).await.unwrap();
    let phone = browser
        .client
        .execute(
            r##"
            const cell = document.querySelector("#summary tbody td");
            return {
              head: getComputedStyle(document.querySelector("#summary thead")).display,
              before: getComputedStyle(cell, "::before").content,
            };"##,
            vec![],
        )
        .await
        .unwrap();
    browser.shot("phone-layout").await;
    browser.client.set_window_size(1280, 800).await.unwrap();
    assert_eq!(
        (phone["head"].clone(), phone["before"].clone()),
        (json!("none"), json!("\"Group: \"")),
        "{phone}"
    );

    // A replay at 1 event/s, cancelled while it runs.
    browser.click("#replay-filter").await;
    browser
        .text_when("#replay-preview", |text| {
            text.starts_with(&format!("Dry run: {shipments} will be replayed"))
        })
        .await;
    browser.set_value("#replay-rate", "1").await;
    browser.click("#replay-start").await;
    browser
        .text_when("#replay-status", |text| {
            text.strip_prefix("running: ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|count| count.parse::<usize>().ok())
                .is_some_and(|replayed| replayed >= 1)
        })
        .await;
    browser.click("#replay-cancel").await;
    let cancelled = browser
        .text_when("#replay-status", |text| text.starts_with("cancelled"))
        .await;
    browser.shot("replay-cancelled").await;
    assert!(
        !browser
            .on("#replay-cancel", |element| async move {
                element.is_displayed().await
            })
            .await,
        "nothing left to cancel"
    );
    let (outcome, affected): (String, i64) = sqlx::query_as(
        "SELECT outcome, affected FROM dead_letter_operations WHERE action = 'replay' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&stack.database.pool)
    .await
    .unwrap();
    assert_eq!(outcome, "cancelled");
    assert!(
        affected >= 1 && (affected as usize) < shipments,
        "{affected}: {cancelled}"
    );
    browser.click("#replay-close").await;

    // Resolving asks first: "No" changes nothing, "Yes" resolves.
    let id: i64 = stack
        .number(
            "SELECT min(id) FROM dead_letters WHERE status = 'open' AND error_kind = 'ship_cancelled_order'",
        )
        .await;
    browser
        .client
        .goto(&format!("{}/ui#dead-letter/{id}", api.base))
        .await
        .unwrap();
    browser
        .text_when("#dead-letter-title", |text| {
            text == format!("Dead letter {id}")
        })
        .await;
    browser.click("#resolve-one").await;
    browser
        .text_when("#confirm-text", |text| {
            text.starts_with(&format!("Resolve dead letter {id}"))
        })
        .await;
    browser.shot("resolve-confirmation").await;
    browser.click("#confirm-no").await;
    let status = |id: i64| {
        let pool = stack.database.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM dead_letters WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(status(id).await, "open");
    browser.click("#resolve-one").await;
    browser.click("#confirm-yes").await;
    browser
        .text_when("#dead-letter-facts", |text| text.contains("resolved"))
        .await;
    assert_eq!(status(id).await, "resolved");

    // A resolved one can be reopened (asked first, audited), and resolved
    // again.
    browser.click("#reopen-one").await;
    browser
        .text_when("#confirm-text", |text| {
            text.starts_with(&format!("Reopen dead letter {id}"))
        })
        .await;
    browser.click("#confirm-yes").await;
    let reopened = eventually(PAGE_PATIENCE, || async {
        (status(id).await == "open").then_some(())
    })
    .await;
    assert!(reopened.is_some(), "dead letter {id} is open again");
    browser
        .text_when("#edit-done", |text| text.starts_with("1 reopened"))
        .await;
    browser.click("#resolve-one").await;
    browser.click("#confirm-yes").await;
    let resolved = eventually(PAGE_PATIENCE, || async {
        (status(id).await == "resolved").then_some(())
    })
    .await;
    assert!(resolved.is_some(), "dead letter {id} is resolved again");

    // Purging the two selected ones, after confirming.
    browser.click("#nav-dead-letters").await;
    browser
        .set_value("#filter [name=error_kind]", "ship_cancelled_order")
        .await;
    browser.click("#filter button[type=submit]").await;
    browser
        .text_when("#list tbody", |text| !text.contains("payment"))
        .await;
    let mut purged = Vec::new();
    for row in 1..=2 {
        let link = browser
            .on(
                &format!("#list tbody tr:nth-child({row}) a"),
                |element| async move { element.text().await },
            )
            .await;
        purged.push(link.parse::<i64>().unwrap());
        browser
            .click(&format!(
                "#list tbody tr:nth-child({row}) input[type=checkbox]"
            ))
            .await;
    }
    browser
        .text_when("#purge-selected", |text| text == "Purge selected (2)")
        .await;
    browser.click("#purge-selected").await;
    browser
        .text_when("#confirm-text", |text| {
            text.contains("deletes the payloads")
        })
        .await;
    browser.shot("purge-confirmation").await;
    browser.click("#confirm-yes").await;
    browser
        .text_when("#list-done", |text| {
            text.starts_with("2 purged (operation ")
        })
        .await;
    let purged_now = eventually(PAGE_PATIENCE, || async {
        let statuses = [status(purged[0]).await, status(purged[1]).await];
        (statuses == ["purged", "purged"]).then_some(())
    })
    .await;
    assert!(purged_now.is_some(), "{purged:?} were purged");

    browser.click("#nav-history").await;
    let history = browser
        .text_when("#operations tbody", |text| text.lines().count() >= 5)
        .await;
    let actions: Vec<&str> = history.lines().collect();
    assert!(
        actions[0].contains("purge") && actions[0].contains("api:otto"),
        "{history}"
    );
    assert!(actions[1].contains("resolve"), "{history}");
    assert!(
        actions[2].contains("reopen") && actions[2].contains("api:otto"),
        "{history}"
    );
    assert!(actions[3].contains("resolve"), "{history}");
    assert!(
        actions[4].contains("replay") && actions[4].contains("cancelled"),
        "{history}"
    );
    browser.shot("history").await;
    fixture.workers.stop().await;
}
