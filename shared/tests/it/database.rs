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
