//! Scaling under load, both ways, with real `consumers run` processes: a
//! process joining takes work; a process told to stop (SIGTERM) finishes,
//! commits and acknowledges what it received and leaves, so nothing it
//! applied comes back; the accounting is exact.

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use shared::groups::ConsumerGroup;
use shared::testing::{Watchdog, eventually};
use shared::topology::management::Management;
use uuid::Uuid;

use crate::http::{free_address, get};
use crate::processing::{captured, order_placed};
use crate::support::{
    Stack, TEST_LIMIT, assert_orders_and_payments_once, consumers_binary, settings_with,
    sigterm_and_wait,
};

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
        Self::spawn_with(stack, &[])
    }

    /// `consumers run --group orders` with `arguments` added.
    fn spawn_with(stack: &Stack, arguments: &[&str]) -> Self {
        let http = free_address();
        let child = consumers_binary(stack)
            .args([
                "run",
                "--group",
                "orders",
                "--http-address",
                &http.to_string(),
            ])
            .args(arguments)
            .envs(RETRY_ENVIRONMENT)
            .env("RUST_LOG", "error")
            .spawn()
            .expect("spawn consumers");
        Self { child, http }
    }

    /// Events this process applied, from its own `/metrics`.
    async fn applied(&self) -> f64 {
        self.events("applied").await
    }

    /// Events with `outcome` this process counted, from its own `/metrics`.
    async fn events(&self, outcome: &str) -> f64 {
        let outcome = format!("outcome=\"{outcome}\"");
        let Some((_, metrics)) = get(self.http, "/metrics").await else {
            return 0.0;
        };
        metrics
            .lines()
            .filter(|line| line.starts_with("switchyard_events_total{") && line.contains(&outcome))
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
    let status = sigterm_and_wait(&mut first.child, Duration::from_secs(60))
        .await
        .expect("the stopped process leaves in time");
    assert!(status.success(), "it exits cleanly after committing");
    drop(first);

    // The rest lands on the second process, exactly once.
    let total = stack
        .wait_for("SELECT count(*) FROM processed_events", expected, 180)
        .await;
    assert_eq!(total, expected, "every order and payment applied");
    assert!(crate::support::eventually_drained(&stack, ConsumerGroup::Orders).await);
    assert_orders_and_payments_once(&stack, ORDERS).await;
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);

    // What the stopped process received it committed and acknowledged: had
    // it committed without acknowledging, the broker would have handed the
    // events to the second process, which would have counted duplicates.
    // (The broker may still return messages it had not yet sent to the
    // stopped process; those were never applied, so they are no duplicates.)
    assert_eq!(
        second.events("duplicate").await,
        0.0,
        "nothing the stopped process applied came back"
    );
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
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_stopped_under_a_backlog_stops_taking_work_at_once() {
    let _watchdog = Watchdog::new(
        "a_process_stopped_under_a_backlog_stops_taking_work_at_once",
        TEST_LIMIT,
    );
    let stack = Stack::with_settings(settings_with(&RETRY_ENVIRONMENT)).await;
    let placed: Vec<_> = (0..ORDERS).map(|_| order_placed(Uuid::now_v7())).collect();
    stack.publish(&placed).await;
    let expected = ORDERS as i64;
    let applied = || stack.number("SELECT count(*) FROM processed_events");

    // A small window, so what it may still finish after the stop is small
    // beside the backlog.
    let mut first = Process::spawn_with(&stack, &["--prefetch", "64", "--batch-size", "32"]);
    let started = eventually(Duration::from_secs(120), || async {
        (applied().await > 100).then_some(())
    })
    .await;
    assert!(started.is_some(), "the process works");
    let before_stop = applied().await;
    let status = sigterm_and_wait(&mut first.child, Duration::from_secs(60))
        .await
        .expect("the stopped process leaves in time");
    assert!(status.success(), "it exits cleanly after committing");
    drop(first);

    // Under a backlog a batch is always waiting ahead of the one being
    // applied (the pipeline); the stop must still end the taking at once.
    // After it the process finishes what the broker had sent, at most its
    // prefetch window (64), besides the odd batch committed between the
    // count above and the signal: far less than the backlog.
    let after_stop = applied().await - before_stop;
    assert!(
        after_stop <= 200,
        "the stopped process kept taking work: {after_stop} applied after the stop"
    );
    assert!(
        applied().await < expected,
        "work was left for the next process"
    );

    // Nothing it applied comes back; the rest is applied once.
    let second = Process::spawn(&stack);
    let total = stack
        .wait_for("SELECT count(*) FROM processed_events", expected, 180)
        .await;
    assert_eq!(total, expected, "every order applied");
    assert_eq!(second.events("duplicate").await, 0.0);
    drop(second);
}
