//! TLS through the one rustls provider (ring): a real encrypted database
//! connection, and TLS against a plain port failing with an error, not a panic.

use std::time::Duration;

use shared::settings::Settings;
use shared::testing::TestDatabase;

#[tokio::test]
async fn a_database_url_with_sslmode_require_connects_over_tls() {
    let database = TestDatabase::create().await;
    let server_tls: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    if server_tls != "on" {
        // CI turns TLS on (`.ci/run`) and sets this, so there it fails.
        assert!(
            std::env::var_os("SWITCHYARD_TEST_REQUIRE_DATABASE_TLS").is_none(),
            "this PostgreSQL server has ssl = {server_tls}, and TLS is required"
        );
        eprintln!("skipped: this PostgreSQL server has ssl = {server_tls}");
        return;
    }
    let url = format!(
        "{}?sslmode=require",
        shared::testing::database_url(&database.settings)
    );
    let settings =
        Settings::from_lookup(|name| (name == "DATABASE_URL").then(|| url.clone())).unwrap();

    let pool = shared::database::connect(&settings, 1, false)
        .await
        .unwrap();

    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert!(encrypted);
}

#[tokio::test]
async fn amqps_to_a_plain_amqp_port_is_an_error_not_a_panic() {
    // The test broker's plain AMQP port, asked for TLS.
    let plain = shared::testing::environment_settings();
    let url = plain.expose_amqp_url().replacen("amqp://", "amqps://", 1);
    let settings = Settings::from_lookup(|name| (name == "AMQP_URL").then(|| url.clone())).unwrap();

    let outcome = tokio::time::timeout(
        Duration::from_secs(90),
        shared::broker::connect(&settings, "tls-test"),
    )
    .await;

    let result = outcome.expect("connect gives up in bounded time");
    assert!(
        result.is_err(),
        "a TLS handshake with a plain AMQP listener cannot succeed"
    );
}
