//! A three-node RabbitMQ cluster (`deploy/rabbitmq-cluster/cluster.sh`,
//! started here when it does not run): a real `consumers run` process and a
//! publisher, both given the three nodes in `AMQP_URL`, while orders and
//! their payments flow; the node leading the work queue is stopped, started
//! again, and then the new leader is stopped. Every event confirmed is
//! applied once, none twice.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use shared::groups::ConsumerGroup;
use shared::publish::Publisher;
use shared::testing::{Watchdog, database_url, eventually};
use uuid::Uuid;

use crate::processing::{captured, order_placed};
use crate::support::Stack;

const ORDERS: usize = 1_500;
/// Orders and their payments.
const EXPECTED: i64 = 2 * ORDERS as i64;
const RETRY_ENVIRONMENT: [(&str, &str); 3] = [
    ("SWITCHYARD_RETRY_INITIAL_DELAY_MS", "200"),
    ("SWITCHYARD_RETRY_MAX_DELAY_MS", "2000"),
    ("SWITCHYARD_RETRY_MAX_ATTEMPTS", "20"),
];

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/rabbitmq-cluster/cluster.sh")
}

/// Runs the cluster script with `args`; its standard output.
async fn cluster(args: &[&str]) -> String {
    let mut command = Command::new("bash");
    command.arg(script()).args(args);
    let output = crate::support::output_of(command).await;
    assert!(
        output.status.success(),
        "cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The node (1–3) that leads `queue`, asked of any running node.
async fn leader_of(queue: &str) -> Option<u8> {
    for node in 1..=3u8 {
        let mut command = Command::new("bash");
        command.arg(script()).args([
            "ctl",
            &node.to_string(),
            "list_queues",
            "--quiet",
            "--no-table-headers",
            "name",
            "leader",
        ]);
        let output = crate::support::output_of(command).await;
        if !output.status.success() {
            continue;
        }
        let listing = String::from_utf8_lossy(&output.stdout).into_owned();
        for line in listing.lines() {
            let mut fields = line.split_whitespace();
            if fields.next() == Some(queue) {
                let leader = fields.next()?;
                return (1..=3u8).find(|n| leader.starts_with(&format!("rabbit-cluster-{n}@")));
            }
        }
    }
    None
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn count(stack: &Stack, sql: &'static str) -> i64 {
    stack.number(sql).await
}

/// Stops the node leading `queue`, waits for `more` further events to be
/// applied while it is down, and starts it again.
async fn stop_the_leader(stack: &Stack, queue: &str, more: i64) -> u8 {
    let leader = eventually(Duration::from_secs(60), || leader_of(queue))
        .await
        .expect("the queue has a leader");
    let before = count(stack, "SELECT count(*) FROM processed_events").await;
    eprintln!("cluster: stopping node {leader}, the leader ({before} applied)");
    cluster(&["stop-node", &leader.to_string()]).await;
    let progressed = eventually(Duration::from_secs(120), || async {
        let applied = count(stack, "SELECT count(*) FROM processed_events").await;
        (applied >= (before + more).min(EXPECTED)).then_some(())
    })
    .await;
    assert!(
        progressed.is_some(),
        "events are applied while node {leader} (the leader) is down"
    );
    eprintln!("cluster: starting node {leader} again");
    cluster(&["start-node", &leader.to_string()]).await;
    leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_node_that_leads_the_queues_loses_nothing_and_applies_nothing_twice() {
    let _watchdog = Watchdog::new(
        "stopping_the_node_that_leads_the_queues_loses_nothing_and_applies_nothing_twice",
        // Starting three nodes takes about a minute of it on a busy host.
        2 * crate::support::TEST_LIMIT,
    );
    cluster(&["start"]).await;
    let url = cluster(&["url"]).await;
    let mut environment = RETRY_ENVIRONMENT.to_vec();
    environment.push(("AMQP_URL", &url));
    environment.push(("SWITCHYARD_MANAGEMENT_URL", "off"));
    let stack = Stack::with_settings(crate::support::settings_with(&environment)).await;
    let work = stack
        .isolated
        .topology
        .group(ConsumerGroup::Orders)
        .work
        .clone();

    let _worker = Worker(
        Command::new(env!("CARGO_BIN_EXE_consumers"))
            .args(["run", "--group", "orders", "--http-address", "127.0.0.1:0"])
            .env("SWITCHYARD_NAMESPACE", &stack.settings.namespace)
            .envs(RETRY_ENVIRONMENT)
            .env("AMQP_URL", &url)
            .env("SWITCHYARD_MANAGEMENT_URL", "off")
            .env("DATABASE_URL", database_url(&stack.settings))
            .env("RUST_LOG", "error")
            .spawn()
            .expect("spawn consumers"),
    );

    // Orders, then their payments, each published until confirmed (a
    // publish the fail-over interrupts is sent again: the repeat is
    // skipped by its id).
    let publisher = Publisher::connect(
        &stack.settings,
        stack.isolated.topology.events_exchange(),
        "test",
    )
    .await
    .expect("publisher connects");
    let ids: Vec<Uuid> = (0..ORDERS).map(|_| Uuid::now_v7()).collect();
    let events: Vec<_> = ids
        .iter()
        .map(|id| order_placed(*id))
        .chain(ids.iter().map(|id| captured(*id)))
        .collect();
    let publishing = tokio::spawn(async move {
        for chunk in events.chunks(50) {
            for event in chunk {
                let confirmed = eventually(Duration::from_secs(120), || async {
                    publisher.publish(event).await.ok()
                })
                .await;
                assert!(confirmed.is_some(), "every event is confirmed in the end");
            }
            // About 30 s of traffic: the stops come while it flows.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        publisher.close().await;
    });

    let started = eventually(Duration::from_secs(120), || async {
        (count(&stack, "SELECT count(*) FROM processed_events").await > 200).then_some(())
    })
    .await;
    assert!(
        started.is_some(),
        "the worker applies events through the cluster"
    );
    let first = stop_the_leader(&stack, &work, 300).await;
    let second = stop_the_leader(&stack, &work, 300).await;
    publishing.await.expect("the publisher finished");

    let expected = (2 * ORDERS) as i64;
    let applied = stack
        .wait_for("SELECT count(*) FROM processed_events", expected, 180)
        .await;
    assert_eq!(
        applied, expected,
        "every order and payment applied (leaders stopped: {first}, then {second})"
    );
    crate::support::assert_orders_and_payments_once(&stack, ORDERS).await;
}
