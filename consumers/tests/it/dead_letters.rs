//! The operator's dead-letter commands, run as the real `consumers
//! dead-letters …` binary against 50 dead letters in two groups: a broken
//! rule (a cancelled order shipped), exhausted retries (payments of orders
//! never placed, in orders and sales) and poison.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use shared::events::Event;
use shared::groups::ConsumerGroup;
use shared::testing::{Watchdog, eventually};
use uuid::Uuid;

use crate::processing::{cancelled, captured, order_placed, shipped};
use crate::support::{RunningWorkers, Stack, TEST_LIMIT, consumers_binary, output_of};

pub const SHIPPED_CANCELLED: usize = 10;
pub const UNKNOWN_PAYMENTS: usize = 15;
pub const POISON: usize = 10;
/// Dead letters: shipments (orders), payments (orders and sales), poison (orders).
pub const DEAD: i64 = (SHIPPED_CANCELLED + 2 * UNKNOWN_PAYMENTS + POISON) as i64;

/// The dead letters' sources.
pub struct Fixture {
    pub workers: RunningWorkers,
    pub shipments: Vec<Event>,
    pub payments: Vec<Event>,
    pub payment_orders: Vec<Uuid>,
}

/// Workers of orders and sales, and the 50 dead letters.
pub async fn fixture(stack: &Stack) -> Fixture {
    let workers = stack.start(&[ConsumerGroup::Orders, ConsumerGroup::Sales], 1);
    let orders: Vec<Uuid> = (0..SHIPPED_CANCELLED).map(|_| Uuid::now_v7()).collect();
    let placed: Vec<Event> = orders.iter().map(|id| order_placed(*id)).collect();
    stack.publish(&placed).await;
    stack
        .wait_for("SELECT count(*) FROM orders", SHIPPED_CANCELLED as i64, 60)
        .await;
    let cancellations: Vec<Event> = orders.iter().map(|id| cancelled(*id)).collect();
    stack.publish(&cancellations).await;
    stack
        .wait_for(
            "SELECT count(*) FROM orders WHERE status = 'cancelled'",
            SHIPPED_CANCELLED as i64,
            60,
        )
        .await;
    let shipments: Vec<Event> = orders.iter().map(|id| shipped(*id)).collect();
    stack.publish(&shipments).await;
    let payment_orders: Vec<Uuid> = (0..UNKNOWN_PAYMENTS).map(|_| Uuid::now_v7()).collect();
    let payments: Vec<Event> = payment_orders.iter().map(|id| captured(*id)).collect();
    stack.publish(&payments).await;
    for index in 0..POISON {
        stack
            .publish_raw("order.shipped", format!("not an event #{index}").as_bytes())
            .await;
    }
    let stored = stack
        .wait_for("SELECT count(*) FROM dead_letters", DEAD, 90)
        .await;
    assert_eq!(stored, DEAD, "the fixture's dead letters were stored");
    Fixture {
        workers,
        shipments,
        payments,
        payment_orders,
    }
}

/// A watchdog for test `name`, a stack, and the fixture on it.
pub async fn prepared(name: &'static str) -> (Watchdog, Stack, Fixture) {
    let watchdog = Watchdog::new(name, TEST_LIMIT);
    let stack = Stack::new().await;
    let fixture = fixture(&stack).await;
    (watchdog, stack, fixture)
}

/// A replay of the orders group's unknown-order payments slow enough (two
/// at a time, 5/s) to be stopped halfway.
const SLOW_ORDER_UNKNOWN_REPLAY: [&str; 9] = [
    "replay",
    "--group",
    "orders",
    "--error-kind",
    "order_unknown",
    "--rate",
    "5/s",
    "--batch",
    "2",
];

/// Runs `consumers dead-letters <args>` against the stack.
pub async fn cli(stack: &Stack, args: &[&str]) -> Output {
    output_of(command(stack, args)).await
}

fn command(stack: &Stack, args: &[&str]) -> Command {
    let mut command = consumers_binary(stack);
    command
        .arg("dead-letters")
        .args(args)
        .env("USER", "tester")
        .stdin(Stdio::null());
    command
}

/// The JSON a successful command printed.
async fn json(stack: &Stack, args: &[&str]) -> Value {
    let output = cli(stack, args).await;
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{args:?} printed no JSON ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The ids a `list --json` with `filter` returns, over every page.
async fn listed(stack: &Stack, filter: &[&str]) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut after = 0_i64;
    loop {
        let after_text = after.to_string();
        let mut args = vec!["list", "--json", "--limit", "7", "--after", &after_text];
        args.extend_from_slice(filter);
        let page = json(stack, &args).await;
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row["id"].as_i64().unwrap()),
        );
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => return ids,
        }
    }
}

/// The ids of dead letters selected by `sql` (a `SELECT id …`).
async fn ids(stack: &Stack, sql: &'static str) -> Vec<i64> {
    sqlx::query_scalar(sql)
        .fetch_all(&stack.database.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_filter_and_the_summary_are_exact() {
    let (_watchdog, stack, fixture) = prepared("every_list_filter_and_the_summary_are_exact").await;
    fixture.workers.stop().await;

    let all = ids(&stack, "SELECT id FROM dead_letters ORDER BY id").await;
    assert_eq!(
        listed(&stack, &[]).await,
        all,
        "no filter: every open one, paged"
    );
    let by_group = |group| {
        let stack = &stack;
        async move { listed(stack, &["--group", group]).await.len() }
    };
    assert_eq!(
        by_group("orders").await,
        SHIPPED_CANCELLED + UNKNOWN_PAYMENTS + POISON
    );
    assert_eq!(by_group("sales").await, UNKNOWN_PAYMENTS);
    assert_eq!(
        listed(
            &stack,
            &[
                "--type",
                "order.shipped",
                "--error-kind",
                "ship_cancelled_order"
            ]
        )
        .await,
        ids(
            &stack,
            "SELECT id FROM dead_letters WHERE error_kind = 'ship_cancelled_order' ORDER BY id"
        )
        .await
    );
    assert_eq!(
        listed(&stack, &["--error-kind", "poison"]).await.len(),
        POISON
    );
    assert_eq!(
        listed(&stack, &["--error", "HAS NOT BEEN PLACED"])
            .await
            .len(),
        2 * UNKNOWN_PAYMENTS,
        "error text matches as a case-insensitive substring"
    );
    let order = fixture.payment_orders[3].to_string();
    let by_key = listed(&stack, &["--partition-key", &order]).await;
    assert_eq!(by_key.len(), 2, "one payment, dead in orders and in sales");
    let event = fixture.shipments[0].id.to_string();
    assert_eq!(listed(&stack, &["--event-id", &event]).await.len(), 1);
    assert_eq!(
        listed(&stack, &["--min-attempts", "2"]).await.len(),
        2 * UNKNOWN_PAYMENTS,
        "only exhausted retries took more than one attempt"
    );
    assert_eq!(
        listed(&stack, &["--max-attempts", "1"]).await.len(),
        SHIPPED_CANCELLED + POISON
    );
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    assert!(listed(&stack, &["--since", &future]).await.is_empty());
    assert_eq!(listed(&stack, &["--until", &future]).await, all);
    assert!(listed(&stack, &["--status", "resolved"]).await.is_empty());
    let some = format!("{},{}", all[0], all[5]);
    assert_eq!(listed(&stack, &["--id", &some]).await, vec![all[0], all[5]]);
    let table = cli(&stack, &["list", "--group", "sales"]).await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.starts_with("      id  group"),
        "a table for people: {table}"
    );
    assert_eq!(table.lines().count(), UNKNOWN_PAYMENTS + 2, "{table}");
    assert!(table.ends_with("15 shown, no more\n"), "{table}");

    let summary = json(&stack, &["summary", "--json"]).await;
    let mut lines: Vec<(String, String, String, i64)> = summary
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            (
                line["group"].as_str().unwrap().to_owned(),
                line["event_type"].as_str().unwrap_or("-").to_owned(),
                line["fingerprint"].as_str().unwrap().to_owned(),
                line["count"].as_i64().unwrap(),
            )
        })
        .collect();
    lines.sort();
    let line = |group: &str, event_type: &str, fingerprint: &str, count: usize| {
        (
            group.to_owned(),
            event_type.to_owned(),
            fingerprint.to_owned(),
            count as i64,
        )
    };
    assert_eq!(
        lines,
        vec![
            line(
                "orders",
                "-",
                "poison: $: not valid JSON: expected ident at line # column #",
                POISON
            ),
            line(
                "orders",
                "order.shipped",
                "ship_cancelled_order: order <id> is cancelled and cannot ship",
                SHIPPED_CANCELLED
            ),
            line(
                "orders",
                "payment.captured",
                "order_unknown: order <id> has not been placed yet",
                UNKNOWN_PAYMENTS
            ),
            line(
                "sales",
                "payment.captured",
                "order_unknown: order <id> has not been placed yet",
                UNKNOWN_PAYMENTS
            ),
        ]
    );
    let table = cli(&stack, &["summary"]).await;
    assert!(String::from_utf8_lossy(&table.stdout).contains("ship_cancelled_order"));
    let refused = cli(&stack, &["list", "--group", "nope"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown consumer group"));
}

/// Places the orders the fixture's payments were for, so that they can apply.
async fn place_payment_orders(stack: &Stack, fixture: &Fixture) {
    let placed: Vec<Event> = fixture
        .payment_orders
        .iter()
        .map(|id| order_placed(*id))
        .collect();
    stack.publish(&placed).await;
    stack
        .wait_for(
            "SELECT count(*) FROM sales_orders",
            UNKNOWN_PAYMENTS as i64,
            60,
        )
        .await;
    stack
        .wait_for(
            "SELECT count(*) FROM orders",
            (SHIPPED_CANCELLED + UNKNOWN_PAYMENTS) as i64,
            60,
        )
        .await;
}

/// A second replay of the orders group's unknown-order payments, after a
/// first that marked `marked_before` and stopped: it completes, replays
/// exactly the rest, and every payment is applied once.
async fn the_second_run_replays_the_rest_once(
    stack: &Stack,
    fixture: &Fixture,
    marked_before: i64,
) {
    let report = json(
        stack,
        &[
            "replay",
            "--group",
            "orders",
            "--error-kind",
            "order_unknown",
            "--json",
        ],
    )
    .await;
    assert_eq!(report["outcome"], "completed");
    assert_eq!(
        report["replayed"].as_i64().unwrap() + marked_before,
        UNKNOWN_PAYMENTS as i64,
        "the second run replays only what the first did not mark: {report}"
    );
    let paid = stack
        .wait_for(
            "SELECT count(*) FROM orders WHERE status = 'paid'",
            UNKNOWN_PAYMENTS as i64,
            60,
        )
        .await;
    assert_eq!(paid, UNKNOWN_PAYMENTS as i64);
    assert!(crate::support::eventually_drained(stack, ConsumerGroup::Orders).await);
    let payment_ids: Vec<Uuid> = fixture.payments.iter().map(|event| event.id).collect();
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM processed_events WHERE consumer_group = 'orders' AND event_id = ANY($1)",
    )
    .bind(&payment_ids)
    .fetch_one(&stack.database.pool)
    .await
    .unwrap();
    assert_eq!(
        applied, UNKNOWN_PAYMENTS as i64,
        "every payment applied once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_rate_limited_replay_applies_exactly_those_events_in_exactly_that_group() {
    let (_watchdog, stack, fixture) = prepared(
        "a_filtered_rate_limited_replay_applies_exactly_those_events_in_exactly_that_group",
    )
    .await;
    place_payment_orders(&stack, &fixture).await;

    let dry = cli(
        &stack,
        &[
            "replay",
            "--group",
            "sales",
            "--error-kind",
            "order_unknown",
            "--dry-run",
        ],
    )
    .await;
    assert!(dry.status.success());
    let dry = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(dry.matches("would replay").count(), UNKNOWN_PAYMENTS);
    assert!(
        dry.contains("15 would be replayed, 0 skipped; nothing changed"),
        "{dry}"
    );
    assert_eq!(
        stack
            .number("SELECT count(*) FROM dead_letters WHERE status = 'open'")
            .await,
        DEAD
    );

    let report = json(
        &stack,
        &[
            "replay",
            "--group",
            "sales",
            "--error-kind",
            "order_unknown",
            "--rate",
            "40/s",
            "--batch",
            "4",
            "--json",
        ],
    )
    .await;
    assert_eq!(report["outcome"], "completed");
    assert_eq!(report["replayed"], UNKNOWN_PAYMENTS as i64);
    assert_eq!(report["matched"], UNKNOWN_PAYMENTS as i64);
    let paid = stack
        .wait_for(
            "SELECT count(*) FROM sales_orders WHERE paid_on IS NOT NULL",
            UNKNOWN_PAYMENTS as i64,
            60,
        )
        .await;
    assert_eq!(
        paid, UNKNOWN_PAYMENTS as i64,
        "sales applied every replayed payment"
    );
    let payment_ids: Vec<Uuid> = fixture.payments.iter().map(|event| event.id).collect();
    let applied: Vec<(String, i64)> = sqlx::query_as(
        "SELECT consumer_group, count(*) FROM processed_events WHERE event_id = ANY($1) GROUP BY 1",
    )
    .bind(&payment_ids)
    .fetch_all(&stack.database.pool)
    .await
    .unwrap();
    assert_eq!(
        applied,
        vec![("sales".to_owned(), UNKNOWN_PAYMENTS as i64)],
        "only sales applied them; the orders group was not sent them"
    );
    assert_eq!(
        stack
            .number("SELECT count(*) FROM orders WHERE status = 'paid'")
            .await,
        0,
        "the orders group's projections are unchanged"
    );
    let marked: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT consumer_group, status, count(*) FROM dead_letters GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&stack.database.pool)
    .await
    .unwrap();
    assert_eq!(
        marked,
        vec![
            (
                "orders".to_owned(),
                "open".to_owned(),
                DEAD - 2 * UNKNOWN_PAYMENTS as i64 + UNKNOWN_PAYMENTS as i64
            ),
            (
                "sales".to_owned(),
                "replayed".to_owned(),
                UNKNOWN_PAYMENTS as i64
            ),
        ]
    );
    // Nothing left to replay: a second run replays nothing.
    let again = json(&stack, &["replay", "--group", "sales", "--json"]).await;
    assert_eq!(again["replayed"], 0);
    assert_eq!(again["matched"], 0);
    let history = json(&stack, &["history", "--json"]).await;
    let replays: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|operation| operation["action"] == "replay")
        .collect();
    assert_eq!(replays.len(), 2);
    assert_eq!(replays[1]["affected"], UNKNOWN_PAYMENTS as i64);
    assert_eq!(replays[1]["actor"], "cli:tester");
    assert_eq!(replays[1]["filter"]["filter"]["group"], "sales");
    assert_eq!(replays[1]["filter"]["rate"], 40.0);
    fixture.workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_halfway_and_run_again_applies_and_marks_everything_once() {
    let (_watchdog, stack, fixture) =
        prepared("a_replay_killed_halfway_and_run_again_applies_and_marks_everything_once").await;
    place_payment_orders(&stack, &fixture).await;
    let mut slow = command(&stack, &SLOW_ORDER_UNKNOWN_REPLAY);
    let mut child = slow
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marked = eventually(Duration::from_secs(60), || async {
        let marked = stack
            .number("SELECT count(*) FROM dead_letters WHERE status = 'replayed'")
            .await;
        (marked >= 4).then_some(marked)
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let marked_before = stack
        .number("SELECT count(*) FROM dead_letters WHERE status = 'replayed'")
        .await;
    assert!(
        marked.is_some() && marked_before < UNKNOWN_PAYMENTS as i64,
        "killed halfway: {marked_before}"
    );

    the_second_run_replays_the_rest_once(&stack, &fixture, marked_before).await;
    let per_operation: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE status = 'replayed' GROUP BY operation_id ORDER BY 1",
    )
    .fetch_all(&stack.database.pool)
    .await
    .unwrap();
    assert_eq!(per_operation.iter().sum::<i64>(), UNKNOWN_PAYMENTS as i64);
    assert_eq!(
        per_operation.len(),
        2,
        "each marked by exactly one of the two runs"
    );
    assert_eq!(
        stack
            .number("SELECT count(*) FROM dead_letters WHERE previous_id IS NOT NULL")
            .await,
        0,
        "no replayed payment failed again"
    );
    let history = json(&stack, &["history", "--json"]).await;
    assert_eq!(history[1]["action"], "replay");
    assert!(
        history[1]["outcome"] == "running" || history[1]["outcome"] == "interrupted",
        "the killed run is not reported as finished: {}",
        history[1]
    );
    fixture.workers.stop().await;
}

/// A replay whose database stops answering halfway (a network cut, a
/// failover that leaves connections hanging) fails within its patience
/// instead of hanging, and says why; what it had not marked stays open,
/// and the next run replays exactly that, each payment applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_whose_database_stops_answering_fails_in_time_and_the_next_run_finishes_it() {
    let (_watchdog, stack, fixture) = prepared(
        "a_replay_whose_database_stops_answering_fails_in_time_and_the_next_run_finishes_it",
    )
    .await;
    place_payment_orders(&stack, &fixture).await;
    let (proxy, through_proxy) =
        shared::testing::TcpProxy::in_front_of(&shared::testing::database_url(&stack.settings))
            .await;
    let mut child = command(&stack, &SLOW_ORDER_UNKNOWN_REPLAY)
        .env("DATABASE_URL", &through_proxy)
        .env("SWITCHYARD_DEAD_LETTER_DATABASE_TIMEOUT_MS", "5000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = eventually(Duration::from_secs(60), || async {
        let marked = stack
            .number("SELECT count(*) FROM dead_letters WHERE status = 'replayed'")
            .await;
        (marked >= 2).then_some(marked)
    })
    .await;
    assert!(started.is_some(), "the replay marked a first batch");

    proxy.stall();
    let exited = crate::support::exit_within(&mut child, Duration::from_secs(120)).await;
    if exited.is_none() {
        let _ = child.kill();
    }
    let exited = exited.expect("the replay gives up on the silent database");
    assert!(!exited.success(), "it exits with an error: {exited}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("replay failed after") && stderr.contains("did not answer within 5000 ms"),
        "the error says why: {stderr}"
    );

    // What the proxy held is delivered and its connections end: the
    // given-up transaction (committed or rolled back) holds no rows.
    proxy.restore();
    let settled = eventually(Duration::from_secs(60), || async {
        let held = stack
            .number(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                   AND state LIKE 'idle in transaction%' AND now() - state_change > interval '1 second'",
            )
            .await;
        (held == 0).then_some(())
    })
    .await;
    assert!(settled.is_some(), "the given-up transaction ended");
    let marked_before = stack
        .number("SELECT count(*) FROM dead_letters WHERE status = 'replayed'")
        .await;
    assert!(
        marked_before < UNKNOWN_PAYMENTS as i64,
        "stopped halfway: {marked_before}"
    );

    the_second_run_replays_the_rest_once(&stack, &fixture, marked_before).await;
    assert_eq!(
        stack
            .number("SELECT count(*) FROM dead_letters WHERE status = 'open' AND consumer_group = 'orders' AND error_kind = 'order_unknown'")
            .await,
        0,
        "none left open"
    );
    fixture.workers.stop().await;
}

/// Every `dead-letters` command gives up on a database that does not answer
/// within `SWITCHYARD_DEAD_LETTER_DATABASE_TIMEOUT_MS` (here a lock held
/// elsewhere; a hung server or a network cut look the same to the client),
/// exits non-zero and names the limit, instead of waiting for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_gives_up_on_a_database_that_does_not_answer_in_time() {
    let _watchdog = Watchdog::new(
        "every_command_gives_up_on_a_database_that_does_not_answer_in_time",
        TEST_LIMIT,
    );
    let stack = Stack::new().await;
    let directory = std::env::temp_dir().join(format!("switchyard-{}", stack.settings.namespace));
    std::fs::create_dir_all(&directory).unwrap();
    let edited = directory.join("edited.json");
    std::fs::write(&edited, "{}").unwrap();
    let edited = edited.to_str().unwrap();
    let holder = stack
        .database
        .lock_exclusively(&["dead_letters", "dead_letter_operations"])
        .await;

    let commands: [&[&str]; 11] = [
        &["list"],
        &["summary"],
        &["show", "1"],
        &["history"],
        &["export", "--group", "orders"],
        &["edit", "1", "--file", edited],
        &["resolve", "--group", "orders"],
        &["purge", "--group", "orders", "--yes"],
        &["expire"],
        &["replay", "--group", "orders", "--dry-run"],
        &["replay", "--group", "orders"],
    ];
    for args in commands {
        let mut child = command(&stack, args)
            .env("SWITCHYARD_DEAD_LETTER_DATABASE_TIMEOUT_MS", "1000")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let exited = crate::support::exit_within(&mut child, Duration::from_secs(60)).await;
        if exited.is_none() {
            let _ = child.kill();
        }
        let exited = exited.unwrap_or_else(|| panic!("{args:?} still waits after 60 s"));
        assert!(!exited.success(), "{args:?} fails: {exited}");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(
            stderr.contains("did not answer within 1000 ms"),
            "{args:?} says why: {stderr}"
        );
    }

    holder.rollback().await.unwrap();
    let output = cli(&stack, &["list", "--json"]).await;
    assert!(
        output.status.success(),
        "once the lock is gone, the command answers: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_edit_and_replay_from_file_repair_poison_and_a_bad_edit_is_refused() {
    let (_watchdog, stack, fixture) =
        prepared("export_edit_and_replay_from_file_repair_poison_and_a_bad_edit_is_refused").await;
    let directory = std::env::temp_dir().join(format!("switchyard-{}", stack.settings.namespace));
    std::fs::create_dir_all(&directory).unwrap();
    let export = directory.join("poison.ndjson");
    let output = cli(
        &stack,
        &[
            "export",
            "--error-kind",
            "poison",
            "--output",
            export.to_str().unwrap(),
        ],
    )
    .await;
    assert!(output.status.success());
    let text = std::fs::read_to_string(&export).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), POISON);
    assert!(
        lines
            .iter()
            .all(|line| line["event"].is_null() && line["raw"]["text"].is_string())
    );

    // Replaying poison as it is skips it: it is not an event.
    let skipped = json(&stack, &["replay", "--error-kind", "poison", "--json"]).await;
    assert_eq!(skipped["skipped"], POISON as i64);
    assert_eq!(skipped["replayed"], 0);

    // Repair the first three into events the orders group handles.
    let customers: Vec<Event> = (0..3)
        .map(|_| {
            Event::new(
                "/tests",
                shared::events::EventPayload::CustomerRegistered(
                    shared::events::catalog::CustomerRegistered {
                        customer_id: Uuid::now_v7(),
                        email: "a@example.com".into(),
                        name: "A".into(),
                    },
                ),
            )
        })
        .collect();
    let mut repaired = String::new();
    for (line, customer) in lines.iter().take(3).zip(&customers) {
        let mut line = line.clone();
        line["event"] = serde_json::from_slice(&customer.to_json_bytes()).unwrap();
        repaired.push_str(&format!("{line}\n"));
    }
    // A broken line refuses the whole file, naming the line and the field.
    let mut broken_event: Value = serde_json::from_slice(&customers[0].to_json_bytes()).unwrap();
    broken_event["data"]["email"] = Value::from("not an email");
    let mut broken = lines[3].clone();
    broken["event"] = broken_event;
    let broken_file = directory.join("broken.ndjson");
    // So are a line longer than any export line (read no further than the
    // limit) and one that is not UTF-8; every bad line is reported.
    let mut file = format!("{repaired}{broken}\n").into_bytes();
    let longest =
        consumers::dead_letters::repair::export_line_limit(stack.settings.max_event_bytes);
    file.extend(std::iter::repeat_n(b'x', longest + 1));
    file.extend_from_slice(b"\n{\"id\": 1, \"event\": \"\xff\xfe\"}\n");
    std::fs::write(&broken_file, file).unwrap();
    let refused = cli(
        &stack,
        &["replay", "--from-file", broken_file.to_str().unwrap()],
    )
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("line 4") && stderr.contains("event.data.email"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("line 5: $: longer than {longest} bytes")),
        "{stderr}"
    );
    assert!(stderr.contains("line 6: $: not UTF-8"), "{stderr}");
    assert_eq!(
        stack
            .number("SELECT count(*) FROM dead_letters WHERE edited_at IS NOT NULL")
            .await,
        0,
        "nothing was changed"
    );

    let good_file = directory.join("repaired.ndjson");
    std::fs::write(&good_file, &repaired).unwrap();
    let report = json(
        &stack,
        &[
            "replay",
            "--from-file",
            good_file.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(report["replayed"], 3);
    let registered = stack
        .wait_for("SELECT count(*) FROM customers", 3, 60)
        .await;
    assert_eq!(registered, 3, "the repaired events were applied");
    let edited: Vec<(Uuid, String, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT event_id, status, original_body FROM dead_letters WHERE edited_at IS NOT NULL ORDER BY id",
    )
    .fetch_all(&stack.database.pool)
    .await
    .unwrap();
    assert_eq!(edited.len(), 3);
    for ((event_id, status, original), customer) in edited.iter().zip(&customers) {
        assert_eq!(*event_id, customer.id);
        assert_eq!(status, "replayed");
        assert!(
            original
                .as_ref()
                .is_some_and(|bytes| bytes.starts_with(b"not an event"))
        );
    }

    // `edit` of one dead letter: a broken payload is refused naming the field.
    let shipment_row: i64 = sqlx::query_scalar(
        "SELECT id FROM dead_letters WHERE error_kind = 'ship_cancelled_order' ORDER BY id LIMIT 1",
    )
    .fetch_one(&stack.database.pool)
    .await
    .unwrap();
    let shipment_event: Uuid =
        sqlx::query_scalar("SELECT event_id FROM dead_letters WHERE id = $1")
            .bind(shipment_row)
            .fetch_one(&stack.database.pool)
            .await
            .unwrap();
    let shipment = fixture
        .shipments
        .iter()
        .find(|event| event.id == shipment_event)
        .unwrap();
    let mut bad: Value = serde_json::from_slice(&shipment.to_json_bytes()).unwrap();
    bad["data"]["carrier"] = Value::from(7);
    let bad_file = directory.join("bad.json");
    std::fs::write(&bad_file, bad.to_string()).unwrap();
    let id_text = shipment_row.to_string();
    let refused = cli(
        &stack,
        &["edit", &id_text, "--file", bad_file.to_str().unwrap()],
    )
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("data.carrier"), "{stderr}");
    // Another event's id is refused: replays must stay idempotent.
    let other: Value = serde_json::from_slice(&shipped(Uuid::now_v7()).to_json_bytes()).unwrap();
    std::fs::write(&bad_file, other.to_string()).unwrap();
    let refused = cli(
        &stack,
        &["edit", &id_text, "--file", bad_file.to_str().unwrap()],
    )
    .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("id: must stay"),
        "{stderr}"
    );
    // $EDITOR: a script that rewrites the carrier.
    let editor = directory.join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/\"DHL\"/\"UPS\"/' \"$1\"\n").unwrap();
    let mut edit = command(&stack, &["edit", &id_text]);
    edit.env("EDITOR", format!("sh {}", editor.display()));
    let output = output_of(edit).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown = json(&stack, &["show", &id_text, "--json"]).await;
    assert_eq!(shown["body"]["json"]["data"]["carrier"], "UPS");
    assert_eq!(shown["original_body"]["json"]["data"]["carrier"], "DHL");
    assert_eq!(shown["edited_by"], "cli:tester");
    assert_eq!(shown["status"], "open");
    let _ = std::fs::remove_dir_all(&directory);
    fixture.workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_stops_a_replay_whose_events_fail_again_and_they_are_linked_open_dead_letters()
{
    let (_watchdog, stack, fixture) = prepared(
        "the_breaker_stops_a_replay_whose_events_fail_again_and_they_are_linked_open_dead_letters",
    )
    .await;
    // Cancelled orders still cannot ship: every replayed shipment fails again.
    let output = cli(
        &stack,
        &[
            "replay",
            "--error-kind",
            "ship_cancelled_order",
            "--rate",
            "4/s",
            "--batch",
            "1",
            "--breaker-min",
            "2",
            "--json",
        ],
    )
    .await;
    assert!(
        !output.status.success(),
        "a tripped replay exits with an error"
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["outcome"], "tripped", "{report}");
    assert!(
        report["detail"]
            .as_str()
            .unwrap()
            .contains("breaker tripped")
    );
    let replayed = report["replayed"].as_i64().unwrap();
    assert!(
        (2..SHIPPED_CANCELLED as i64).contains(&replayed),
        "it stopped early: {replayed} of {SHIPPED_CANCELLED}"
    );
    let relinked = eventually(Duration::from_secs(60), || async {
        let linked = stack
            .number(
                "SELECT count(*) FROM dead_letters n JOIN dead_letters r ON n.previous_id = r.id \
                 WHERE n.status = 'open' AND r.status = 'replayed' AND n.event_id = r.event_id \
                   AND n.consumer_group = r.consumer_group",
            )
            .await;
        (linked == replayed).then_some(linked)
    })
    .await;
    assert_eq!(
        relinked,
        Some(replayed),
        "every replayed shipment is open again, linked"
    );
    assert_eq!(
        stack
            .number(
                "SELECT count(*) FROM dead_letters WHERE error_kind = 'ship_cancelled_order' AND status = 'open'"
            )
            .await,
        SHIPPED_CANCELLED as i64,
        "the new failures and the ones never replayed are open"
    );
    let new_row: i64 = sqlx::query_scalar(
        "SELECT id FROM dead_letters WHERE previous_id IS NOT NULL ORDER BY id LIMIT 1",
    )
    .fetch_one(&stack.database.pool)
    .await
    .unwrap();
    let shown = json(&stack, &["show", &new_row.to_string()]).await;
    let history = shown["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "the first failure, replayed: {shown}");
    assert_eq!(history[0]["status"], "replayed");
    assert_eq!(shown["previous_id"], history[0]["id"]);
    assert!(
        shown["attempts_log"]
            .as_array()
            .is_some_and(|log| !log.is_empty())
    );
    assert!(shown["headers"]["x-switchyard-replay-of"].is_string());
    fixture.workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_purge_expire_and_history_counts_are_exact() {
    let (_watchdog, stack, fixture) =
        prepared("resolve_purge_expire_and_history_counts_are_exact").await;
    fixture.workers.stop().await;
    let resolved = json(&stack, &["resolve", "--error-kind", "poison", "--json"]).await;
    assert_eq!(resolved["affected"], POISON as i64);
    let again = json(&stack, &["resolve", "--error-kind", "poison", "--json"]).await;
    assert_eq!(again["affected"], 0, "resolved ones are not open any more");
    let refused = cli(&stack, &["purge", "--group", "sales"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    let purged = json(&stack, &["purge", "--group", "sales", "--yes", "--json"]).await;
    assert_eq!(purged["affected"], UNKNOWN_PAYMENTS as i64);
    assert_eq!(
        stack
            .number(
                "SELECT count(*) FROM dead_letters WHERE status = 'purged' AND body = ''::bytea"
            )
            .await,
        UNKNOWN_PAYMENTS as i64,
        "purging deletes the payload"
    );
    let open = listed(&stack, &[]).await.len();
    assert_eq!(open, SHIPPED_CANCELLED + UNKNOWN_PAYMENTS);
    let stats = cli(
        &stack,
        &["list", "--status", "all", "--limit", "1000", "--json"],
    )
    .await;
    let all: Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(all["items"].as_array().unwrap().len() as i64, DEAD);

    let refused = cli(&stack, &["expire", "--retention-days", "1e300"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("0 to 36500"));
    let expired = json(&stack, &["expire", "--retention-days", "0", "--json"]).await;
    assert_eq!(expired["affected"], (POISON + UNKNOWN_PAYMENTS) as i64);
    assert_eq!(
        stack.number("SELECT count(*) FROM dead_letters").await,
        (SHIPPED_CANCELLED + UNKNOWN_PAYMENTS) as i64
    );
    let history = json(&stack, &["history", "--json"]).await;
    let summary: Vec<(String, i64, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|operation| {
            (
                operation["action"].as_str().unwrap().to_owned(),
                operation["affected"].as_i64().unwrap(),
                operation["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let entry = |action: &str, affected: usize| {
        (action.to_owned(), affected as i64, "completed".to_owned())
    };
    assert_eq!(
        summary,
        vec![
            entry("expire", POISON + UNKNOWN_PAYMENTS),
            entry("purge", UNKNOWN_PAYMENTS),
            entry("resolve", 0),
            entry("resolve", POISON),
        ]
    );
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .all(|operation| operation["actor"] == "cli:tester")
    );
    let table = cli(&stack, &["history"]).await;
    assert!(String::from_utf8_lossy(&table.stdout).contains("purge"));
}

/// Dead letters just written in bulk (an outage), before autovacuum saw
/// them: the first command that reads them in order (here `export`)
/// brings the planner's statistics up to date, or each page of a large
/// replay would read and sort every remaining row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_fresh_set_of_dead_letters_is_analyzed_before_it_is_read_in_order() {
    const ROWS: i64 = 3000;
    let _watchdog = Watchdog::new(
        "a_large_fresh_set_of_dead_letters_is_analyzed_before_it_is_read_in_order",
        TEST_LIMIT,
    );
    let stack = Stack::new().await;
    let pool = &stack.database.pool;
    // Only the command may analyze the table in this database.
    sqlx::query("ALTER TABLE dead_letters SET (autovacuum_enabled = false)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO dead_letters (consumer_group, event_id, event_type, routing_key, body, reason, \
                                   error_kind, attempts, first_failed_at, last_failed_at) \
         SELECT 'inventory', gen_random_uuid(), 'inventory.restocked', 'inventory.restocked', \
                convert_to('{}', 'UTF8'), 'handler: the warehouse was unreachable', 'handler', 1, now(), now() \
         FROM generate_series(1, $1)",
    )
    .bind(ROWS)
    .execute(pool)
    .await
    .unwrap();
    let seen = eventually(Duration::from_secs(60), || async {
        let changed: i64 = sqlx::query_scalar(
            "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relid = 'dead_letters'::regclass",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        (changed >= ROWS).then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "the inserts reached the table's statistics counters"
    );
    let never: bool = sqlx::query_scalar(
        "SELECT last_analyze IS NULL FROM pg_stat_user_tables WHERE relid = 'dead_letters'::regclass",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(never, "nothing analyzed the table before the command");

    let directory = std::env::temp_dir().join(format!("switchyard-{}", stack.settings.namespace));
    std::fs::create_dir_all(&directory).unwrap();
    let export = directory.join("all.ndjson");
    let output = cli(
        &stack,
        &[
            "export",
            "--group",
            "inventory",
            "--output",
            export.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = std::fs::read_to_string(&export).unwrap().lines().count();
    assert_eq!(lines as i64, ROWS, "every dead letter exported once");
    let analyzed: bool = sqlx::query_scalar(
        "SELECT last_analyze IS NOT NULL AND n_mod_since_analyze < $1 \
         FROM pg_stat_user_tables WHERE relid = 'dead_letters'::regclass",
    )
    .bind(ROWS)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(
        analyzed,
        "the export refreshed the table's statistics first"
    );
    std::fs::remove_dir_all(&directory).unwrap();
}
