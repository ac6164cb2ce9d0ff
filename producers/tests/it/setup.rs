//! The real `producers migrate` and `producers declare` binaries: the
//! set-up steps an operator runs before anything publishes.

use std::process::Command;

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use shared::groups::ConsumerGroup;
use shared::testing::{IsolatedTopology, TestDatabase, database_url, isolated_settings};
use shared::topology::Topology;

/// `producers <command>` with `environment`, its output.
async fn producers(command: &str, environment: &[(&str, &str)]) -> std::process::Output {
    let mut process = Command::new(env!("CARGO_BIN_EXE_producers"));
    process
        .arg(command)
        .env("RUST_LOG", "warn")
        .envs(environment.iter().copied());
    tokio::task::spawn_blocking(move || process.output().expect("run producers"))
        .await
        .unwrap()
}

/// Migrating creates a missing database and applies every migration;
/// migrating again changes nothing; an unreachable server is an error
/// that names the database, not a hang or a panic.
#[tokio::test]
async fn migrate_creates_the_database_and_applies_every_migration_once() {
    let database = TestDatabase::create().await;
    let url = database_url(&database.settings);
    let name = database.name().to_owned();
    database.pool.close().await;
    let admin = shared::testing::TestDatabase::create().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{name}\" WITH (FORCE)"
    )))
    .execute(&admin.pool)
    .await
    .unwrap();

    let migrations = shared::database::MIGRATOR.iter().count();
    for run in ["first", "second"] {
        let output = producers("migrate", &[("DATABASE_URL", &url)]).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{run} run: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            stdout.trim(),
            format!("database ready: {migrations} migrations applied"),
            "{run} run"
        );
    }
    let pool = shared::database::connect(&database.settings, 1, false)
        .await
        .expect("the database exists");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, migrations, "each applied once");
    pool.close().await;

    let unreachable = producers(
        "migrate",
        &[(
            "DATABASE_URL",
            "postgres://postgres:hunter2@127.0.0.1:1/switchyard",
        )],
    )
    .await;
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(!unreachable.status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The address tried and what to do, never the password.
    assert!(
        stderr.contains("cannot reach PostgreSQL at 127.0.0.1:1")
            && stderr.contains("set DATABASE_URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// Declaring creates the namespace's exchanges and queues as the topology
/// describes them (declaring them again with the library's arguments is
/// accepted), and declaring twice is a no-op.
#[tokio::test]
async fn declare_creates_the_namespaced_topology_and_is_idempotent() {
    let settings = isolated_settings();
    let namespace = settings.namespace.clone();
    let topology = Topology::new(&settings);
    for run in ["first", "second"] {
        let output = producers("declare", &[("SWITCHYARD_NAMESPACE", &namespace)]).await;
        assert!(
            output.status.success(),
            "{run} run: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!(
                "topology declared: {} exchanges, {} queues, {} bindings (namespace {namespace:?})",
                topology.exchanges.len(),
                topology.queues.len(),
                topology.bindings.len()
            ),
            "{run} run"
        );
    }
    let connection = shared::testing::connect(&settings).await;
    let channel = connection.create_channel().await.unwrap();
    let passive_exchange = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            topology.events_exchange().into(),
            lapin::ExchangeKind::Topic,
            passive_exchange,
            FieldTable::default(),
        )
        .await
        .expect("the events exchange exists");
    let passive_queue = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    for group in ConsumerGroup::ALL {
        let work = &topology.group(group).work;
        assert!(
            work.starts_with(&format!("{namespace}.")),
            "{work} is namespaced"
        );
        channel
            .queue_declare(work.as_str().into(), passive_queue, FieldTable::default())
            .await
            .unwrap_or_else(|error| panic!("{work} exists: {error}"));
    }
    let _ = connection.close(200, "OK".into()).await;
    // Declared again by the library with its own arguments (a mismatch
    // would fail), then torn down.
    drop(IsolatedTopology::declare_with(settings).await);
}
