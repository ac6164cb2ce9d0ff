//! The README's copy-paste examples, run as written (only the exchange, the
//! broker's and the gateway's address are this test's own), against a running gateway
//! and workers of every group: each ends in the database with exactly the
//! values it sent — currency included — and no dead letter.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use producers::cli::{Cli, Command as ProducersCommand, KeysCommand};
use producers::gateway::api_keys::{self, NewApiKey};
use producers::gateway::grants::Grants;
use producers::gateway::{GatewayConfig, GatewayState, serve};
use runtime::{WorkerOptions, spawn_workers};
use shared::publish::Publisher;
use shared::testing::{IsolatedTopology, TestDatabase, database_url, eventually};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The shell block that follows `marker` in the README.
fn example_after(marker: &str) -> String {
    let readme = readme();
    let after_marker = readme.split(marker).nth(1).expect("README has the marker");
    let block = after_marker.split("```sh\n").nth(1).unwrap();
    block.split("```").next().unwrap().to_owned()
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap()
}

/// Gateway and workers of every group over a fresh namespace and database.
struct Running {
    isolated: IsolatedTopology,
    database: TestDatabase,
    gateway: String,
    stop: CancellationToken,
}

impl Running {
    async fn start() -> Self {
        let isolated = IsolatedTopology::declare().await;
        let database = TestDatabase::create_with(isolated.settings.clone()).await;
        let settings = database.settings.clone();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(&database_url(&settings))
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let publisher =
            Publisher::connect(&settings, isolated.topology.events_exchange(), "readme")
                .await
                .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = GatewayState::new(
            settings.clone(),
            GatewayConfig {
                listen: address,
                ..GatewayConfig::default()
            },
            pool.clone(),
            publisher,
        );
        tokio::spawn(serve(listener, state, stop.clone()));
        spawn_workers(
            settings,
            isolated.topology.clone(),
            pool,
            WorkerOptions::defaults(1, consumers::handlers::Store::shared()),
            stop.clone(),
            "readme-workers",
        );
        Self {
            isolated,
            database,
            gateway: format!("http://{address}"),
            stop,
        }
    }

    /// Runs `script` with `sh`, off the runtime (it blocks).
    async fn run(&self, script: String, key: Option<String>) -> String {
        let output = tokio::task::spawn_blocking(move || {
            let mut command = Command::new("sh");
            command.arg("-c").arg(&script);
            if let Some(key) = key {
                command.env("KEY", key);
            }
            command.output().expect("run sh")
        })
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "the example failed (amqp-tools and curl installed?): {} {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Waits until the order, its reservation and its sale are all stored;
    /// returns (currency, total, on hand, reserved, sale currency).
    async fn stored(&self, order_id: &str, sku: &str) -> (String, i64, i64, i64, String) {
        let order_id = Uuid::parse_str(order_id).unwrap();
        let row = eventually(Duration::from_secs(60), || async {
            sqlx::query_as(
                "SELECT o.currency, o.total_cents, s.on_hand, s.reserved, so.currency
                 FROM orders o, stock s, sales_orders so
                 WHERE o.order_id = $1 AND so.order_id = $1 AND s.sku = $2 AND s.reserved > 0",
            )
            .bind(order_id)
            .bind(sku)
            .fetch_optional(&self.database.pool)
            .await
            .unwrap()
        })
        .await;
        row.expect("the example's order, stock and sale were all applied")
    }

    async fn dead_letters(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&self.database.pool)
            .await
            .unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_amqp_example_stores_exactly_what_it_sends() {
    let running = Running::start().await;
    let example = example_after("<!-- amqp-example -->");
    assert_eq!(example.matches("--exchange events ").count(), 2);
    let script = example
        .replace(
            "--exchange events ",
            &format!(
                "--exchange {} ",
                running.isolated.topology.events_exchange()
            ),
        )
        // The broker the tests use (the private one when none runs on the
        // stock port).
        .replace(
            "--url amqp://guest:guest@127.0.0.1:5672 ",
            &format!(
                "--url {} ",
                running
                    .isolated
                    .settings
                    .expose_amqp_url()
                    .trim_end_matches("/%2f")
            ),
        );

    running.run(script, None).await;

    let stored = running
        .stored("0193a2b0-7c3e-7a11-9f00-5d5e1c9d0a02", "SKU-00001")
        .await;
    assert_eq!(stored, ("EUR".into(), 3_000, 10, 2, "EUR".into()));
    assert_eq!(running.dead_letters().await, 0);
}

/// The key the README's `keys create` command would issue: its flags,
/// parsed by the real command line.
fn readme_key_request() -> NewApiKey {
    let readme = readme();
    let start = readme.find("-- keys create").expect("README creates a key") + 3;
    let command: String = readme[start..]
        .lines()
        .take_while(|line| !line.starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
        .replace('\\', " ");
    let arguments = std::iter::once("producers").chain(command.split_whitespace());
    let Cli {
        command:
            ProducersCommand::Keys(KeysCommand::Create {
                producer,
                types,
                sources,
                rate,
                burst,
            }),
    } = Cli::try_parse_from(arguments).unwrap()
    else {
        panic!("not a keys create command")
    };
    NewApiKey {
        producer,
        grants: Grants::new(types, sources).unwrap(),
        rate_per_second: rate,
        burst: burst.unwrap_or(rate * 2),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_example_stores_exactly_what_it_sends() {
    let running = Running::start().await;
    let (_, key) = api_keys::create(&running.database.pool, readme_key_request())
        .await
        .unwrap();
    let example = example_after("<!-- curl-example -->");
    assert!(example.contains("http://127.0.0.1:8080/events"));
    let script = example.replace("http://127.0.0.1:8080", &running.gateway);

    let output = running.run(script, Some(key)).await;

    let answers: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&output)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(answers.len(), 2, "{output}");
    for answer in &answers {
        assert_eq!(answer["published"], 1, "{answer}");
    }
    let stored = running
        .stored("0193a2b0-7c3e-7a11-9f00-5d5e1c9d0b02", "SKU-00002")
        .await;
    assert_eq!(stored, ("EUR".into(), 3_000, 5, 2, "EUR".into()));
    assert_eq!(running.dead_letters().await, 0);
}
