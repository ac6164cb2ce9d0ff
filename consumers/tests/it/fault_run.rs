//! The fault run, short: two real worker processes drain a few thousand
//! events (orders, their payments, and poison) while one is killed with
//! SIGKILL, PostgreSQL is cut, and the broker connections are cut. The
//! accounting must be exact: every event applied once, the poison and only
//! the poison dead-lettered, nothing stored twice.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use shared::groups::ConsumerGroup;
use shared::testing::{TcpProxy, Watchdog, database_url, eventually};
use uuid::Uuid;

use crate::http::{free_address, get};
use crate::processing::{captured, order_placed};
use crate::support::Stack;

const ORDERS: usize = 3_000;

/// A generous budget (about 30 s): a payment that overtakes its order (a
/// redelivery after a kill) waits for it instead of running out.
const RETRY_ENVIRONMENT: [(&str, &str); 3] = [
    ("SWITCHYARD_RETRY_INITIAL_DELAY_MS", "200"),
    ("SWITCHYARD_RETRY_MAX_DELAY_MS", "2000"),
    ("SWITCHYARD_RETRY_MAX_ATTEMPTS", "20"),
];
const POISON: usize = 20;

/// A `consumers run` process of the orders group, reaching the broker and
/// the database through the proxies.
struct Worker {
    child: Child,
    http: SocketAddr,
}

impl Worker {
    fn spawn(stack: &Stack, amqp_url: &str, database_url: &str) -> Self {
        let http = free_address();
        let child = Command::new(env!("CARGO_BIN_EXE_consumers"))
            .args([
                "run",
                "--group",
                "orders",
                "--workers",
                "2",
                "--batch-size",
                "16",
                "--prefetch",
                "32",
                "--http-address",
                &http.to_string(),
            ])
            .env("SWITCHYARD_NAMESPACE", &stack.settings.namespace)
            .envs(RETRY_ENVIRONMENT)
            .env("AMQP_URL", amqp_url)
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "error")
            .spawn()
            .expect("spawn consumers");
        Self { child, http }
    }

    /// `/readyz`'s body, when it answers.
    async fn readiness(&self) -> Option<String> {
        get(self.http, "/readyz").await.map(|(_, body)| body)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn orders(stack: &Stack) -> i64 {
    stack.number("SELECT count(*) FROM orders").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_fault_run_applies_every_event_once_and_dead_letters_exactly_the_poison() {
    let _watchdog = Watchdog::new(
        "a_short_fault_run_applies_every_event_once_and_dead_letters_exactly_the_poison",
        crate::support::TEST_LIMIT,
    );
    let stack = Stack::with_settings(crate::support::settings_with(&RETRY_ENVIRONMENT)).await;
    let (amqp, amqp_url) = TcpProxy::in_front_of(stack.settings.expose_amqp_url()).await;
    let (postgres, postgres_url) = TcpProxy::in_front_of(&database_url(&stack.settings)).await;

    let ids: Vec<Uuid> = (0..ORDERS).map(|_| Uuid::now_v7()).collect();
    let placed: Vec<_> = ids.iter().map(|id| order_placed(*id)).collect();
    let payments: Vec<_> = ids.iter().map(|id| captured(*id)).collect();
    let (first_half, second_half) = placed.split_at(ORDERS / 2);
    stack.publish(first_half).await;
    for index in 0..POISON / 2 {
        let body = format!("not an event #{index}");
        stack.publish_raw("order.placed", body.as_bytes()).await;
    }
    stack.publish(second_half).await;
    stack.publish(&payments).await;
    for index in POISON / 2..POISON {
        let body = format!("not an event #{index}");
        stack.publish_raw("payment.captured", body.as_bytes()).await;
    }

    let mut doomed = Worker::spawn(&stack, &amqp_url, &postgres_url);
    let steady = Worker::spawn(&stack, &amqp_url, &postgres_url);

    // 1. SIGKILL one process mid-stream, then start another.
    let progressed = eventually(Duration::from_secs(120), || async {
        (orders(&stack).await > 200).then_some(())
    })
    .await;
    assert!(progressed.is_some(), "the workers made progress");
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let replacement = Worker::spawn(&stack, &amqp_url, &postgres_url);

    // 2. Cut PostgreSQL while work remains, until a process notices.
    let before_cut = orders(&stack).await;
    postgres.cut();
    let noticed = eventually(Duration::from_secs(60), || async {
        for worker in [&steady, &replacement] {
            if worker
                .readiness()
                .await
                .is_some_and(|body| body.contains(r#""database":false"#))
            {
                return Some(());
            }
        }
        None
    })
    .await;
    postgres.restore();
    assert!(
        before_cut < ORDERS as i64,
        "the cut came with work left ({before_cut} orders applied)"
    );
    assert!(noticed.is_some(), "a worker noticed the database cut");

    // 3. Cut the broker connections until the broker has no consumer left.
    let before_broker_cut = stack.number("SELECT count(*) FROM processed_events").await;
    amqp.cut();
    let gone = eventually(Duration::from_secs(60), || async {
        (stack.depth(ConsumerGroup::Orders).await.consumers == 0).then_some(())
    })
    .await;
    amqp.restore();
    assert!(gone.is_some(), "the broker saw every consumer go");
    assert!(
        before_broker_cut < (2 * ORDERS) as i64,
        "the broker cut came with work left"
    );

    // Everything lands, exactly once.
    let expected = (2 * ORDERS) as i64;
    let applied = stack
        .wait_for("SELECT count(*) FROM processed_events", expected, 180)
        .await;
    let dead = stack
        .wait_for("SELECT count(*) FROM dead_letters", POISON as i64, 60)
        .await;
    let drained = crate::support::eventually_drained(&stack, ConsumerGroup::Orders).await;

    assert_eq!(applied, expected, "every order and payment applied");
    assert!(drained, "nothing left in the work or retry queues");
    assert_eq!(orders(&stack).await, ORDERS as i64);
    crate::support::assert_orders_and_payments_once(&stack, ORDERS).await;
    assert_eq!(dead, POISON as i64, "exactly the poison is dead-lettered");
    assert_eq!(
        stack
            .number(
                "SELECT count(*) FROM dead_letters WHERE error_kind = 'poison' AND event_id IS NULL"
            )
            .await,
        POISON as i64,
        "only poison, each once"
    );
    assert_eq!(
        stack
            .number("SELECT count(DISTINCT message_sha256) FROM dead_letters")
            .await,
        POISON as i64
    );
    let (_, _, dead_letter_queue) = stack.queued(ConsumerGroup::Orders).await;
    assert_eq!(dead_letter_queue, 0, "the broker dead-lettered nothing");
    // Processes working the same orders (an order and its payment) take
    // their locks in one order: they wait, never deadlock.
    assert_eq!(
        stack
            .number("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            .await,
        0
    );
}
