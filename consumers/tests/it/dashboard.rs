//! The dashboard at `/ui`, served by the real `consumers operations-api`:
//! its sessions and CSRF checks over HTTP, then an operator's and a
//! viewer's work in headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs).

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::operations_api::{Api, token};
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
    assert!(secure.ends_with("; Secure"), "{secure}");
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
    let (status, _) = with_cookie(
        &api,
        reqwest::Method::GET,
        "/api/v1/whoami",
        &viewer_cookie,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

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
