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

/// The groups' functions come from `db/functions/*.sql`: a fresh database
/// runs each file's text, applying again changes nothing, a source the
/// database ran that differs from the file (an older build's) is replaced,
/// and one recorded by a build with newer migrations is left alone.
#[tokio::test]
async fn the_functions_are_their_files_applied_once_and_never_put_back_by_an_older_build() {
    use shared::database::{FUNCTION_SOURCES, MIGRATOR, apply_function_sources};

    let database = TestDatabase::create().await;
    let pool = &database.pool;
    // What PostgreSQL runs is each file's function body.
    let bodies: Vec<(String, String)> = sqlx::query_as(
        "SELECT proname::text, prosrc FROM pg_proc WHERE proname IN \
         ('switchyard_apply_orders', 'switchyard_apply_inventory', 'switchyard_apply_sales', \
          'switchyard_apply_reported') ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(bodies.len(), 4);
    for (function, body) in &bodies {
        let group = function.trim_start_matches("switchyard_apply_");
        let (_, source) = FUNCTION_SOURCES
            .iter()
            .find(|(name, _)| *name == group)
            .unwrap();
        assert!(
            source.contains(body.as_str()),
            "{function} is not db/functions/{group}.sql"
        );
    }
    assert_eq!(
        apply_function_sources(pool).await.unwrap(),
        Vec::<&str>::new()
    );

    // An older build's source of `sales` (a body that raises) is replaced.
    let newest = MIGRATOR.iter().map(|m| m.version).max().unwrap();
    let older = "CREATE OR REPLACE FUNCTION switchyard_apply_sales(lock_ids BIGINT[], batch JSONB) \
                 RETURNS TABLE (failed_index INTEGER, failure TEXT, failed_sku TEXT, failed_quantity BIGINT) \
                 LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'older'; END $$";
    sqlx::raw_sql(older).execute(pool).await.unwrap();
    sqlx::query(
        "UPDATE switchyard_function_sources SET source = $1, applied_by = $2 WHERE name = 'sales'",
    )
    .bind(older)
    .bind(newest - 1)
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(apply_function_sources(pool).await.unwrap(), ["sales"]);
    let body: String =
        sqlx::query_scalar("SELECT prosrc FROM pg_proc WHERE proname = 'switchyard_apply_sales'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(!body.contains("older"));

    // A newer build's source stays, whatever this build's file says.
    sqlx::raw_sql(older).execute(pool).await.unwrap();
    sqlx::query(
        "UPDATE switchyard_function_sources SET source = $1, applied_by = $2 WHERE name = 'sales'",
    )
    .bind(older)
    .bind(newest + 1)
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(
        apply_function_sources(pool).await.unwrap(),
        Vec::<&str>::new()
    );
    let body: String =
        sqlx::query_scalar("SELECT prosrc FROM pg_proc WHERE proname = 'switchyard_apply_sales'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(body.contains("older"));
}
