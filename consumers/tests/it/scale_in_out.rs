//! Scaling under load, both ways, with real `consumers run` processes: a
//! group is consumed by the process holding its lease; a process joining
//! stands by for a group already held and takes a share of the groups; a
//! process told to stop (SIGTERM) finishes, commits and acknowledges what
//! it received and hands its groups over, so nothing it applied comes
//! back; a killed one's groups are taken over; the accounting is exact.

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
        Self::spawn_groups(stack, "orders", arguments)
    }

    /// `consumers run --group <groups>` with `arguments` added.
    fn spawn_groups(stack: &Stack, groups: &str, arguments: &[&str]) -> Self {
        let http = free_address();
        let child = consumers_binary(stack)
            .args([
                "run",
                "--group",
                groups,
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
        match get(self.http, "/metrics").await {
            Some((_, metrics)) => shared::testing::prometheus_text::sum(
                &metrics,
                runtime::metrics::EVENTS_TOTAL,
                &[("outcome", outcome)],
            ),
            None => 0.0,
        }
    }

    /// The groups whose lease this process holds, from its `/metrics`
    /// (`None` before it serves them).
    async fn leases(&self) -> Option<Vec<String>> {
        let (_, metrics) = get(self.http, "/metrics").await?;
        let leases: Vec<_> =
            shared::testing::prometheus_text::samples(&metrics, runtime::metrics::GROUP_LEASE)
                .collect();
        let held = leases
            .iter()
            .filter(|sample| sample.value == 1.0)
            .filter_map(|sample| Some(sample.label("group")?.to_owned()))
            .collect();
        (!leases.is_empty()).then_some(held)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_process_takes_over_from_a_stopped_one_and_nothing_is_applied_twice() {
    let _watchdog = Watchdog::new(
        "a_standby_process_takes_over_from_a_stopped_one_and_nothing_is_applied_twice",
        TEST_LIMIT,
    );
    let stack = Stack::with_settings(settings_with(&RETRY_ENVIRONMENT)).await;
    let ids: Vec<Uuid> = (0..ORDERS).map(|_| Uuid::now_v7()).collect();
    let placed: Vec<_> = ids.iter().map(|id| order_placed(*id)).collect();
    let payments: Vec<_> = ids.iter().map(|id| captured(*id)).collect();
    stack.publish(&placed).await;
    stack.publish(&payments).await;
    let applied = || stack.number("SELECT count(*) FROM processed_events");

    let mut first = Process::spawn(&stack);
    let started = eventually(Duration::from_secs(120), || async {
        (applied().await > 300).then_some(())
    })
    .await;
    assert!(started.is_some(), "the first process works");
    assert_eq!(first.leases().await, Some(vec!["orders".to_owned()]));

    // Scale out on one group: the joining process stands by, its lease
    // held elsewhere, and applies nothing (two processes on one group's
    // hot aggregates were slower than one).
    let second = Process::spawn(&stack);
    let standing_by = eventually(Duration::from_secs(60), || async {
        second.leases().await.filter(Vec::is_empty)
    })
    .await;
    assert!(
        standing_by.is_some(),
        "the joining process serves, holding no lease"
    );
    let management = Management::new(&stack.settings).expect("management API configured");
    let queue = stack
        .isolated
        .topology
        .group(ConsumerGroup::Orders)
        .work
        .clone();
    let info = management.queue(&queue).await.expect("queue figures");
    assert!(
        info.consumers <= 1,
        "one process consumes the group: {info:?}"
    );
    assert_eq!(second.applied().await, 0.0, "the standby applied nothing");

    // Scale in while work certainly remains (the first process could
    // otherwise finish the backlog before it is told to stop): the holder
    // is held still (SIGSTOP) while a second tranche is published, told to
    // stop (SIGTERM, pending while it is stopped) and let go (SIGCONT).
    shared::testing::signal(&first.child, "STOP");
    let more: Vec<Uuid> = (0..ORDERS).map(|_| Uuid::now_v7()).collect();
    let more_placed: Vec<_> = more.iter().map(|id| order_placed(*id)).collect();
    let more_payments: Vec<_> = more.iter().map(|id| captured(*id)).collect();
    stack.publish(&more_placed).await;
    stack.publish(&more_payments).await;
    let expected = (4 * ORDERS) as i64;
    let before_stop = applied().await;
    assert!(
        before_stop < expected,
        "work remained at the stop ({before_stop})"
    );
    shared::testing::signal(&first.child, "TERM");
    shared::testing::signal(&first.child, "CONT");
    let status = shared::testing::exit_within(&mut first.child, Duration::from_secs(60))
        .await
        .expect("the stopped process leaves in time");
    assert!(status.success(), "it exits cleanly after committing");
    drop(first);

    // The rest lands on the second process, exactly once.
    let total = stack
        .wait_for("SELECT count(*) FROM processed_events", expected, 180)
        .await;
    assert_eq!(total, expected, "every order and payment applied");
    assert!(second.applied().await > 0.0, "the standby took over");
    assert_eq!(second.leases().await, Some(vec!["orders".to_owned()]));
    assert!(crate::support::eventually_drained(&stack, ConsumerGroup::Orders).await);
    assert_orders_and_payments_once(&stack, 2 * ORDERS).await;
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);

    // What the stopped process received it committed and acknowledged: had
    // it committed without acknowledging, the broker would have handed the
    // events to the second process, which would have counted duplicates.
    assert_eq!(
        second.events("duplicate").await,
        0.0,
        "nothing the stopped process applied came back"
    );
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

/// Processes started together split the free leases by a rule each
/// computes alike (every lease has one designated taker among the live
/// members); one that is alive but never takes its share — a hung process
/// holding its member lock — keeps no group unconsumed: its leases are
/// taken by another once they stayed free a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_takes_its_share_keeps_no_group_unconsumed() {
    let _watchdog = Watchdog::new(
        "a_member_that_never_takes_its_share_keeps_no_group_unconsumed",
        TEST_LIMIT,
    );
    let stack = Stack::with_settings(settings_with(&RETRY_ENVIRONMENT)).await;
    // Two members running every group: each is designated at least one of
    // the three leases (the first and third go to the lower pid).
    let (class, member) =
        runtime::leases::member_lock(&stack.settings.namespace, &ConsumerGroup::ALL);
    let mut hung = stack
        .database
        .pool
        .acquire()
        .await
        .expect("a connection")
        .detach();
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(class)
        .bind(member)
        .execute(&mut hung)
        .await
        .expect("member lock taken");
    let process = Process::spawn_groups(&stack, "orders,inventory,sales", &[]);
    let all = eventually(Duration::from_secs(60), || async {
        process.leases().await.filter(|held| held.len() == 3)
    })
    .await;
    assert!(
        all.is_some(),
        "the live process took every group: {:?}",
        process.leases().await
    );
    drop(hung);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_share_out_the_groups_and_a_killed_ones_are_taken_over() {
    let _watchdog = Watchdog::new(
        "processes_share_out_the_groups_and_a_killed_ones_are_taken_over",
        TEST_LIMIT,
    );
    let stack = Stack::with_settings(settings_with(&RETRY_ENVIRONMENT)).await;
    // Two groups whose events need no stock (inventory would refuse the
    // orders of an unstocked SKU).
    let groups = [ConsumerGroup::Orders, ConsumerGroup::Sales];
    let all = "orders,sales";
    let first = Process::spawn_groups(&stack, all, &[]);
    let held = eventually(Duration::from_secs(60), || async {
        first.leases().await.filter(|held| held.len() == 2)
    })
    .await;
    assert!(held.is_some(), "a lone process holds both groups");

    // A second process joins: the first hands it a group (it holds two
    // more than the newcomer).
    let mut second = Process::spawn_groups(&stack, all, &[]);
    let shared = eventually(Duration::from_secs(60), || async {
        let (a, b) = (first.leases().await?, second.leases().await?);
        (a.len() == 1 && b.len() == 1 && a != b).then_some(())
    })
    .await;
    assert!(
        shared.is_some(),
        "one each: {:?} {:?}",
        first.leases().await,
        second.leases().await
    );
    let management = Management::new(&stack.settings).expect("management API configured");
    for group in groups {
        let queue = stack.isolated.topology.group(group).work.clone();
        let one = eventually(Duration::from_secs(30), || async {
            (management.queue(&queue).await.ok()?.consumers == 1).then_some(())
        })
        .await;
        assert!(one.is_some(), "{group} has exactly one consumer");
    }

    // Work published now is applied wherever its group is held.
    let ids: Vec<Uuid> = (0..ORDERS / 3).map(|_| Uuid::now_v7()).collect();
    let placed: Vec<_> = ids.iter().map(|id| order_placed(*id)).collect();
    let payments: Vec<_> = ids.iter().map(|id| captured(*id)).collect();
    stack.publish(&placed).await;
    stack.publish(&payments).await;
    let applied = eventually(Duration::from_secs(60), || async {
        (first.applied().await > 0.0 && second.applied().await > 0.0).then_some(())
    })
    .await;
    assert!(applied.is_some(), "both processes apply their groups");

    // Killed (no stop, no hand-over): its session ends, its lease with it,
    // and the survivor takes the group over.
    let _ = second.child.kill();
    let _ = second.child.wait();
    let taken_over = eventually(Duration::from_secs(60), || async {
        first.leases().await.filter(|held| held.len() == 2)
    })
    .await;
    assert!(taken_over.is_some(), "the survivor holds both groups again");
    let more: Vec<Uuid> = (0..ORDERS / 3).map(|_| Uuid::now_v7()).collect();
    stack
        .publish(&more.iter().map(|id| order_placed(*id)).collect::<Vec<_>>())
        .await;
    stack
        .publish(&more.iter().map(|id| captured(*id)).collect::<Vec<_>>())
        .await;
    let orders = ids.len() + more.len();
    let paid = stack
        .wait_for(
            "SELECT count(*) FROM orders WHERE status = 'paid'",
            orders as i64,
            180,
        )
        .await;
    assert_eq!(paid, orders as i64, "every order and payment applied");
    for group in groups {
        assert!(crate::support::eventually_drained(&stack, group).await);
    }
    assert_orders_and_payments_once(&stack, orders).await;
    assert_eq!(stack.number("SELECT count(*) FROM dead_letters").await, 0);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_group_concurrency_of_two_two_processes_consume_one_group() {
    let _watchdog = Watchdog::new(
        "with_a_group_concurrency_of_two_two_processes_consume_one_group",
        TEST_LIMIT,
    );
    let stack = Stack::with_settings(settings_with(&RETRY_ENVIRONMENT)).await;
    // One by flag, one by environment; a third process stands by.
    let first = Process::spawn_with(&stack, &["--group-concurrency", "2"]);
    let http = free_address();
    let child = consumers_binary(&stack)
        .args([
            "run",
            "--group",
            "orders",
            "--http-address",
            &http.to_string(),
        ])
        .envs(RETRY_ENVIRONMENT)
        .env("SWITCHYARD_GROUP_CONCURRENCY", "2")
        .env("RUST_LOG", "error")
        .spawn()
        .expect("spawn consumers");
    let second = Process { child, http };
    let third = Process::spawn_with(&stack, &["--group-concurrency", "2"]);
    let orders = vec!["orders".to_owned()];
    let both = eventually(Duration::from_secs(60), || async {
        let held = [
            first.leases().await?,
            second.leases().await?,
            third.leases().await?,
        ];
        let holders = held.iter().filter(|held| **held == orders).count();
        let idle = held.iter().filter(|held| held.is_empty()).count();
        (holders == 2 && idle == 1).then_some(())
    })
    .await;
    assert!(
        both.is_some(),
        "two of the three processes hold an orders lease"
    );
    let management = Management::new(&stack.settings).expect("management API configured");
    let queue = stack
        .isolated
        .topology
        .group(ConsumerGroup::Orders)
        .work
        .clone();
    let two = eventually(Duration::from_secs(30), || async {
        (management.queue(&queue).await.ok()?.consumers == 2).then_some(())
    })
    .await;
    assert!(two.is_some(), "two consumers on the group's queue");

    let placed: Vec<_> = (0..ORDERS).map(|_| order_placed(Uuid::now_v7())).collect();
    stack.publish(&placed).await;
    let total = stack
        .wait_for("SELECT count(*) FROM processed_events", ORDERS as i64, 180)
        .await;
    assert_eq!(total, ORDERS as i64, "every order applied once");
    let mut applied = Vec::new();
    for process in [&first, &second, &third] {
        let leases = process.leases().await.unwrap_or_default();
        applied.push((leases, process.applied().await));
    }
    for (leases, count) in &applied {
        if leases.is_empty() {
            assert_eq!(*count, 0.0, "the standby applied nothing: {applied:?}");
        } else {
            assert!(*count > 0.0, "each holder applied a share: {applied:?}");
        }
    }
    assert_eq!(
        stack.number("SELECT count(*) FROM order_lines").await,
        ORDERS as i64
    );
}
