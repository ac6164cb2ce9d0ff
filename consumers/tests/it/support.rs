//! A namespace, a database and workers to run against them.

use std::time::Duration;

use lapin::BasicProperties;
use runtime::{RuntimeError, WorkerOptions, spawn_workers};
use shared::events::Event;
use shared::groups::ConsumerGroup;
use shared::publish::{OutgoingMessage, Publisher};
use shared::settings::Settings;
use shared::testing::{IsolatedTopology, TestDatabase, Watchdog, eventually, isolated_settings};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An isolated namespace and database, with settings pointing at both.
pub struct Stack {
    pub isolated: IsolatedTopology,
    pub database: TestDatabase,
    pub settings: Settings,
    /// Ends the test process if the test outlives [`TEST_LIMIT`]: a hang
    /// (a wait that never ends, a worker that never stops) names its test
    /// instead of holding CI until its overall timeout.
    _watchdog: Watchdog,
}

/// The longest a test may run, teardown included, before its
/// [`Watchdog`] ends the test process.
pub const TEST_LIMIT: Duration = Duration::from_secs(300);

/// Fast retries for tests: 200 ms doubling, four attempts.
pub const QUICK_RETRY_ENVIRONMENT: [(&str, &str); 3] = [
    ("SWITCHYARD_RETRY_INITIAL_DELAY_MS", "200"),
    ("SWITCHYARD_RETRY_MAX_DELAY_MS", "5000"),
    ("SWITCHYARD_RETRY_MAX_ATTEMPTS", "4"),
];

/// Settings with [`QUICK_RETRY_ENVIRONMENT`] in a fresh namespace.
pub fn quick_retry_settings() -> Settings {
    settings_with(&QUICK_RETRY_ENVIRONMENT)
}

/// Settings with `environment` (over the process's) in a fresh namespace.
pub fn settings_with(environment: &[(&str, &str)]) -> Settings {
    let namespace = isolated_settings().namespace;
    shared::testing::settings_from(|name| {
        environment
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
            .or_else(|| std::env::var(name).ok())
    })
    .with_namespace(namespace)
}

impl Stack {
    pub async fn new() -> Self {
        Self::with_settings(quick_retry_settings()).await
    }

    pub async fn with_settings(settings: Settings) -> Self {
        let watchdog = Watchdog::for_current_test(TEST_LIMIT);
        let isolated = IsolatedTopology::declare_with(settings.clone()).await;
        let database = TestDatabase::create_with(settings).await;
        let settings = database.settings.clone();
        Self {
            isolated,
            database,
            settings,
            _watchdog: watchdog,
        }
    }

    pub fn options(&self, groups: &[ConsumerGroup], workers: usize) -> WorkerOptions {
        // Smaller than the defaults, so batches split and interleave.
        WorkerOptions {
            groups: groups.to_vec(),
            prefetch: 64,
            batch_size: 32,
            ..WorkerOptions::defaults(workers, consumers::handlers::Store::shared())
        }
    }

    /// Starts workers in this process.
    pub fn start(&self, groups: &[ConsumerGroup], workers: usize) -> RunningWorkers {
        self.start_with(self.settings.clone(), self.options(groups, workers))
    }

    pub fn start_with(&self, settings: Settings, options: WorkerOptions) -> RunningWorkers {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let topology = self.isolated.topology.clone();
        // A lazy pool: this constructor is synchronous; the pool connects on first use.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect_lazy(&shared::testing::database_url(&settings))
            .expect("valid database URL");
        let handle = spawn_workers(settings, topology, pool, options, token, "test-workers");
        RunningWorkers { shutdown, handle }
    }

    pub async fn publisher(&self) -> Publisher {
        self.isolated.publisher().await
    }

    pub async fn publish(&self, events: &[Event]) {
        let publisher = self.publisher().await;
        for result in publisher.publish_all(events).await {
            result.unwrap();
        }
        publisher.close().await;
    }

    /// Publishes arbitrary bytes with `routing_key` to the events exchange.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        let publisher = self.publisher().await;
        publisher
            .publish_message(OutgoingMessage {
                routing_key: routing_key.to_owned(),
                exchange: None,
                body: body.to_vec(),
                properties: BasicProperties::default().with_delivery_mode(2),
            })
            .await
            .unwrap();
        publisher.close().await;
    }

    /// A single number from `sql`.
    pub async fn number(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.database.pool)
            .await
            .unwrap()
    }

    /// Makes every new session of the stack's database read-only (as on a
    /// replica after a failover), or writable again; existing sessions keep
    /// what they started with.
    pub async fn set_read_only(&self, on: bool) {
        let database: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&self.database.pool)
            .await
            .unwrap();
        let statement = if on {
            format!("ALTER DATABASE \"{database}\" SET default_transaction_read_only = on")
        } else {
            format!("ALTER DATABASE \"{database}\" RESET default_transaction_read_only")
        };
        let mut connection = self.database.pool.acquire().await.unwrap();
        sqlx::query("SET default_transaction_read_only = off")
            .execute(&mut *connection)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *connection)
            .await
            .unwrap();
    }

    /// Waits (at most `seconds`) until `sql` returns `expected`; returns the last value.
    pub async fn wait_for(&self, sql: &'static str, expected: i64, seconds: u64) -> i64 {
        let reached = eventually(Duration::from_secs(seconds), || async {
            (self.number(sql).await == expected).then_some(())
        })
        .await;
        if reached.is_some() {
            expected
        } else {
            self.number(sql).await
        }
    }

    /// Messages ready in `group`'s work queue, retry queues and dead-letter queue.
    pub async fn queued(&self, group: ConsumerGroup) -> (u32, u32, u32) {
        let depth = self.depth(group).await;
        (depth.work, depth.retrying, depth.dead_letter)
    }

    /// `group`'s queue depths and consumers, as the broker reports them now.
    pub async fn depth(&self, group: ConsumerGroup) -> shared::topology::stats::GroupDepth {
        let connection = shared::testing::connect(&self.settings).await;
        let depths = self.isolated.topology.depths(&connection).await.unwrap();
        let _ = connection.close(200, "OK".into()).await;
        depths
            .into_iter()
            .find(|depth| depth.group == group)
            .unwrap()
    }
}

/// Workers running in a task of this test.
pub struct RunningWorkers {
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), RuntimeError>>,
}

impl RunningWorkers {
    /// Graceful stop: finish in-flight batches, ack, close.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("workers stop in time")
            .unwrap()
            .unwrap();
    }

    /// Waits (up to `within`) for the workers to stop on their own.
    pub async fn stopped_by_themselves(self, within: Duration) -> Result<(), RuntimeError> {
        let result = tokio::time::timeout(within, self.handle)
            .await
            .expect("workers stopped by themselves")
            .unwrap();
        self.shutdown.cancel();
        result
    }
}

/// Waits until `group`'s work and retry queues are empty (all acked).
pub async fn eventually_drained(stack: &Stack, group: ConsumerGroup) -> bool {
    eventually(Duration::from_secs(30), || async {
        let (work, retrying, _) = stack.queued(group).await;
        (work == 0 && retrying == 0).then_some(())
    })
    .await
    .is_some()
}

/// `event` as a worker receives it when published the ordinary way: first
/// attempt, no headers.
pub fn incoming(event: &Event) -> runtime::incoming::Incoming {
    runtime::incoming::Incoming {
        body: event.to_json_bytes(),
        routing_key: event.event_type().as_str().to_owned(),
        properties: lapin::BasicProperties::default()
            .with_message_id(event.id.to_string().into())
            .with_type(event.event_type().as_str().into())
            .with_content_type("application/cloudevents+json".into()),
        event: Ok(event.clone()),
        history: runtime::attempts::AttemptHistory::default(),
        oversize: None,
    }
}

/// The real `consumers` binary, pointed at the stack's namespace, database
/// and broker, logging errors and warnings only.
pub fn consumers_binary(stack: &Stack) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_consumers"));
    command
        .env("SWITCHYARD_NAMESPACE", &stack.settings.namespace)
        .env(
            "DATABASE_URL",
            shared::testing::database_url(&stack.settings),
        )
        .env("AMQP_URL", stack.settings.expose_amqp_url())
        .env("RUST_LOG", "warn");
    command
}

/// Runs `command` to completion off the async runtime's threads.
pub async fn output_of(mut command: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().expect("run the command"))
        .await
        .unwrap()
}

pub use shared::testing::{exit_within, sigterm_and_wait};

/// Every one of `orders` orders and their payments applied exactly once.
pub async fn assert_orders_and_payments_once(stack: &Stack, orders: usize) {
    assert_eq!(
        stack.number("SELECT count(*) FROM order_lines").await,
        orders as i64,
        "no order applied twice"
    );
    assert_eq!(
        stack.number("SELECT count(*) FROM payments").await,
        orders as i64,
        "no payment applied twice"
    );
    assert_eq!(
        stack
            .number("SELECT count(*) FROM orders WHERE status = 'paid'")
            .await,
        orders as i64
    );
}
