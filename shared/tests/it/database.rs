use shared::testing::TestDatabase;

#[tokio::test]
async fn migrations_create_the_processing_ledgers() {
    let database = TestDatabase::create().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name IN ('processed_events', 'dead_letters') \
         ORDER BY table_name",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap();
    assert_eq!(tables, ["dead_letters", "processed_events"]);
}

#[tokio::test]
async fn an_event_is_recorded_once_per_group() {
    let database = TestDatabase::create().await;
    let id = uuid::Uuid::now_v7();
    for _ in 0..3 {
        sqlx::query(
            "INSERT INTO processed_events (consumer_group, event_id, event_type) \
             VALUES ('orders', $1, 'order.placed') ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .execute(&database.pool)
        .await
        .unwrap();
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

/// The start-up path: a database that does not exist yet is created, then
/// migrated; running it again changes nothing.
#[tokio::test]
async fn a_missing_database_is_created_migrated_and_migrating_again_is_a_no_op() {
    let database = TestDatabase::create().await;

    let again = shared::database::connect_and_migrate(&database.settings, 2)
        .await
        .unwrap();

    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&again)
        .await
        .unwrap();
    again.close().await;
    assert_eq!(applied as usize, shared::database::MIGRATOR.iter().count());
}

#[tokio::test]
async fn a_dropped_test_database_is_gone() {
    let database = TestDatabase::create().await;
    let name = database.name().to_owned();
    let settings = database.settings.clone();
    drop(database);
    let admin = shared::database::connect(&settings.clone(), 1, false).await;
    assert!(admin.is_err(), "database {name} still exists");
}

/// A connection dropped mid-statement on a database that went silent
/// without a reset (its statement given up on, as a request timeout or a
/// batch deadline does) gives its place in the pool back within seconds:
/// sqlx pinged it on the way back with no bound, holding the pool's only
/// permit for good, so every later acquire timed out (transact-rs/sqlx#4349,
/// patched in third_party/sqlx-core).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_given_up_on_a_silent_database_frees_its_place_in_the_pool() {
    use std::time::Duration;

    let _watchdog = shared::testing::Watchdog::new(
        "a_connection_given_up_on_a_silent_database_frees_its_place_in_the_pool",
        Duration::from_secs(120),
    );
    let database = TestDatabase::create().await;
    let (proxy, through_proxy) =
        shared::testing::TcpProxy::in_front_of(&shared::testing::database_url(&database.settings))
            .await;
    let settings = shared::settings::Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some(through_proxy.clone()),
        _ => None,
    })
    .unwrap();
    let pool = shared::database::connect(&settings, 1, false)
        .await
        .unwrap();
    let mut connection = pool.acquire().await.unwrap();
    sqlx::query("SELECT 1")
        .execute(&mut *connection)
        .await
        .unwrap();

    proxy.black_hole();
    let given_up = shared::database::within(
        Duration::from_secs(1),
        sqlx::query("SELECT 1").execute(&mut *connection),
    )
    .await;
    assert!(given_up.is_err(), "the statement got no answer");
    drop(connection);

    // The pool's one place: taken again once the return gives up (5 s),
    // on a fresh connection the proxy lets through.
    let mut answered = None;
    for _ in 0..4 {
        if let Ok(mut connection) = pool.acquire().await {
            answered = Some(
                sqlx::query_scalar::<_, i32>("SELECT 2")
                    .fetch_one(&mut *connection)
                    .await
                    .unwrap(),
            );
            break;
        }
    }
    assert_eq!(answered, Some(2), "the pool opened a fresh connection");
    shared::database::close(&pool).await;
}
