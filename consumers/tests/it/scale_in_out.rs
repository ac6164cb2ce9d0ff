//! Scaling under load, both ways, with real `consumers run` processes: a
//! process joining takes work; a process told to stop (SIGTERM) finishes
//! and commits what it holds and leaves, so the broker redelivers nothing;
//! the accounting is exact.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use shared::groups::ConsumerGroup;
use shared::testing::{Watchdog, database_url, eventually};
use shared::topology::management::Management;
use uuid::Uuid;

use crate::http::{free_address, get};
use crate::processing::{captured, order_placed};
use crate::support::{Stack, TEST_LIMIT, settings_with};

const ORDERS: usize = 3_000;
/// A payment that overtakes its order (the other process has it) waits.
const RETRY_ENVIRONMENT: [(&str, &str); 3] = [
    ("SWITCHYARD_RETRY_INITIAL_DELAY_MS", "200"),
    ("SWITCHYARD_RETRY_MAX_DELAY_MS", "2000"),
    ("SWITCHYARD_RETRY_MAX_ATTEMPTS", "20"),
];

struct Process {
    child: Child,
    http: SocketAddr,
}

impl Process {
    fn spawn(stack: &Stack) -> Self {
        let http = free_address();
        let child = Command::new(env!("CARGO_BIN_EXE_consumers"))
            .args([
                "run",
                "--group",
                "orders",
                "--http-address",
                &http.to_string(),
            ])
            .env("SWITCHYARD_NAMESPACE", &stack.settings.namespace)
            .envs(RETRY_ENVIRONMENT)
            .env("AMQP_URL", stack.settings.expose_amqp_url())
            .env("DATABASE_URL", database_url(&stack.settings))
            .env("RUST_LOG", "error")
            .spawn()
            .expect("spawn consumers");
        Self { child, http }
    }

    /// Events this process applied, from its own `/metrics`.
    async fn applied(&self) -> f64 {
        let Some((_, metrics)) = get(self.http, "/metrics").await else {
            return 0.0;
        };
        metrics
            .lines()
            .filter(|line| {
                line.starts_with("switchyard_events_total{") && line.contains("outcome=\"applied\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_process_takes_work_and_a_stopped_one_commits_what_it_holds() {
    let _watchdog = Watchdog::new(
        "a_joining_process_takes_work_and_a_stopped_one_commits_what_it_holds",
        TEST_LIMIT,
    );
    let stack = Stack::with_settings(settings_with(&RETRY_ENVIRONMENT)).await;
    let ids: Vec<Uuid> = (0..ORDERS).map(|_| Uuid::now_v7()).collect();
    let placed: Vec<_> = ids.iter().map(|id| order_placed(*id)).collect();
    let payments: Vec<_> = ids.iter().map(|id| captured(*id)).collect();
    stack.publish(&placed).await;
    stack.publish(&payments).await;
    let expected = (2 * ORDERS) as i64;
    let applied = || stack.number("SELECT count(*) FROM processed_events");

    let mut first = Process::spawn(&stack);
    let started = eventually(Duration::from_secs(120), || async {
        (applied().await > 300).then_some(())
    })
    .await;
    assert!(started.is_some(), "the first process works");

    // Scale out: the second process takes a share of the work.
    let second = Process::spawn(&stack);
    let took = eventually(Duration::from_secs(120), || async {
        (second.applied().await > 0.0).then_some(())
    })
    .await;
    assert!(took.is_some(), "the joining process applied events");

    // Scale in: SIGTERM the first while work remains.
    let before_stop = applied().await;
    assert!(
        before_stop < expected,
        "work remained at the stop ({before_stop})"
    );
    let pid = first.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exited = tokio::task::spawn_blocking(move || {
        let status = first.child.wait();
        (first, status)
    });
    let (first, status) = tokio::time::timeout(Duration::from_secs(60), exited)
        .await
        .expect("the stopped process leaves in time")
        .unwrap();
    assert!(
        status.unwrap().success(),
        "it exits cleanly after committing"
    );
    drop(first);

    // The rest lands on the second process, exactly once.
    let total = stack
        .wait_for("SELECT count(*) FROM processed_events", expected, 180)
        .await;
    assert_eq!(total, expected, "every order and payment applied");
    assert!(crate::support::eventually_drained(&stack, ConsumerGroup::Orders).await);
    assert_eq!(
        stack.number("SELECT count(*) FROM order_lines").await,
        ORDERS as i64,
        "no order applied twice"
    );
    assert_eq!(
        stack.number("SELECT count(*) FROM payments").await,
        ORDERS as i64,
        "no payment applied twice"
    );
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);

    // What the stopped process held was committed and acknowledged, not
    // handed back: the broker redelivered nothing.
    let management = Management::new(&stack.settings).expect("management API configured");
    let queue = stack
        .isolated
        .topology
        .group(ConsumerGroup::Orders)
        .work
        .clone();
    let settled = eventually(Duration::from_secs(60), || async {
        let info = management.queue(&queue).await.ok()?;
        (info.messages_unacknowledged == 0 && info.messages_ready == 0 && info.consumers == 1)
            .then_some(info)
    })
    .await;
    assert!(
        settled.is_some(),
        "the second process alone remains, nothing in flight"
    );
    let redelivered = management
        .queue(&queue)
        .await
        .unwrap()
        .message_stats
        .redeliver;
    assert_eq!(redelivered, 0, "nothing the stopped process held came back");
    drop(second);
}
