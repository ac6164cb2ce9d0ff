//! The batch paths, called directly on a real database: batches applied
//! set-wise (one call of the group's function), with duplicates, failures
//! it reports and events of one aggregate in delivery order, and the
//! fallback that redoes a batch event by event for poison or when the
//! call raises. Exact outcomes and row counts.

use runtime::batch::{Applied, BatchContext, BatchPath, Outcome, process_batch};
use runtime::incoming::Incoming;
use shared::events::Event;
use shared::groups::ConsumerGroup;
use shared::retry::RetryPolicy;
use shared::testing::TestDatabase;
use uuid::Uuid;

use crate::processing::{cancelled, captured, order_placed, order_placed_with, shipped};
use crate::support::incoming;

fn context(group: ConsumerGroup) -> BatchContext {
    BatchContext {
        group,
        handlers: consumers::handlers::Store::shared(),
        worker: "batch-paths".into(),
        policy: RetryPolicy::default(),
        attempt_key: runtime::AttemptKey::from_bytes([1; 32]),
    }
}

async fn process(database: &TestDatabase, group: ConsumerGroup, events: &[&Event]) -> Applied {
    let batch: Vec<Incoming> = events.iter().map(|event| incoming(event)).collect();
    process_incoming(database, group, &batch).await
}

async fn process_incoming(
    database: &TestDatabase,
    group: ConsumerGroup,
    batch: &[Incoming],
) -> Applied {
    let mut connection = database.pool.acquire().await.unwrap();
    process_batch(&mut connection, &context(group), batch)
        .await
        .unwrap()
}

async fn count(database: &TestDatabase, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&database.pool)
        .await
        .unwrap()
}

/// An order placed, then a batch of an order, another event placing the
/// same order id (the impostor, returned) and an order, in `group`.
async fn with_an_impostor(database: &TestDatabase, group: ConsumerGroup) -> (Event, Applied) {
    let order_id = Uuid::now_v7();
    process(database, group, &[&order_placed(order_id)]).await;
    let impostor = order_placed(order_id);
    let (before, after) = (order_placed(Uuid::now_v7()), order_placed(Uuid::now_v7()));
    let applied = process(database, group, &[&before, &impostor, &after]).await;
    (impostor, applied)
}

/// The error kind `event`'s dead letter was recorded with.
async fn dead_letter_kind(database: &TestDatabase, event: &Event) -> String {
    sqlx::query_scalar("SELECT error_kind FROM dead_letters WHERE event_id = $1")
        .bind(event.id)
        .fetch_one(&database.pool)
        .await
        .unwrap()
}

async fn stock(database: &TestDatabase, sku: &str, on_hand: i64) {
    sqlx::query("INSERT INTO stock (sku, on_hand) VALUES ($1, $2)")
        .bind(sku)
        .bind(on_hand)
        .execute(&database.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_all_placed_batch_applies_each_event_once_in_every_group() {
    let database = TestDatabase::create().await;
    stock(&database, "SKU-1", 100).await;
    let (earlier, first, second) = (
        order_placed(Uuid::now_v7()),
        order_placed(Uuid::now_v7()),
        order_placed(Uuid::now_v7()),
    );
    for group in ConsumerGroup::ALL {
        assert_eq!(
            process(&database, group, &[&earlier]).await,
            Applied {
                outcomes: vec![Outcome::Applied],
                path: BatchPath::SetWise
            }
        );
        // An event applied before, a fresh one twice, another fresh one.
        assert_eq!(
            process(&database, group, &[&earlier, &first, &first, &second]).await,
            Applied {
                outcomes: vec![
                    Outcome::Duplicate,
                    Outcome::Applied,
                    Outcome::Duplicate,
                    Outcome::Applied
                ],
                path: BatchPath::SetWise
            },
            "group {group}"
        );
    }
    assert_eq!(count(&database, "SELECT count(*) FROM orders").await, 3);
    assert_eq!(
        count(&database, "SELECT count(*) FROM order_lines").await,
        3
    );
    assert_eq!(
        count(&database, "SELECT count(*) FROM sales_orders").await,
        3
    );
    // Each order reserves 2 units of SKU-1, once.
    assert_eq!(
        count(&database, "SELECT reserved FROM stock WHERE sku = 'SKU-1'").await,
        6
    );
    assert_eq!(
        count(&database, "SELECT count(*) FROM stock_reservations").await,
        3
    );
    assert_eq!(
        count(&database, "SELECT count(*) FROM processed_events").await,
        9
    );
}

#[tokio::test]
async fn an_order_placed_twice_is_isolated_and_its_neighbours_commit() {
    let database = TestDatabase::create().await;
    let (impostor, applied) = with_an_impostor(&database, ConsumerGroup::Orders).await;

    // Reported by the set-wise call, which wrote nothing for it.
    assert_eq!(
        applied,
        Applied {
            outcomes: vec![Outcome::Applied, Outcome::DeadLettered, Outcome::Applied],
            path: BatchPath::SetWise
        }
    );
    assert_eq!(count(&database, "SELECT count(*) FROM orders").await, 3);
    let kind = dead_letter_kind(&database, &impostor).await;
    assert_eq!(kind, "duplicate_order");
}

#[tokio::test]
async fn an_order_short_of_stock_is_retried_alone() {
    let database = TestDatabase::create().await;
    stock(&database, "SKU-A", 5).await;
    stock(&database, "SKU-B", 1).await;
    let fits = order_placed_with(Uuid::now_v7(), "SKU-A", 4);
    let short = order_placed_with(Uuid::now_v7(), "SKU-B", 3);
    let also_fits = order_placed_with(Uuid::now_v7(), "SKU-A", 1);

    let outcomes = process(
        &database,
        ConsumerGroup::Inventory,
        &[&fits, &short, &also_fits],
    )
    .await
    .outcomes;

    assert_eq!(outcomes[0], Outcome::Applied);
    match &outcomes[1] {
        Outcome::Retry(history) => {
            assert_eq!(history.records.len(), 1);
            assert_eq!(history.records[0].kind, "insufficient_stock");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    assert_eq!(outcomes[2], Outcome::Applied);
    assert_eq!(
        count(&database, "SELECT reserved FROM stock WHERE sku = 'SKU-A'").await,
        5
    );
    assert_eq!(
        count(&database, "SELECT reserved FROM stock WHERE sku = 'SKU-B'").await,
        0
    );
    assert_eq!(
        count(
            &database,
            "SELECT count(*) FROM processed_events WHERE consumer_group = 'inventory'"
        )
        .await,
        2,
        "the retried event is not marked processed"
    );
}

#[tokio::test]
async fn stock_released_by_a_cancellation_is_there_for_a_later_order_of_the_same_batch() {
    // The cancelled order was placed in the same batch: its reservation is
    // not in the database yet when the batch is planned, yet the order
    // after the cancellation must see the units it released.
    let database = TestDatabase::create().await;
    stock(&database, "SKU-A", 3).await;
    let first = Uuid::now_v7();
    let placed = order_placed_with(first, "SKU-A", 3);
    let cancellation = cancelled(first);
    let second = order_placed_with(Uuid::now_v7(), "SKU-A", 3);

    let applied = process(
        &database,
        ConsumerGroup::Inventory,
        &[&placed, &cancellation, &second],
    )
    .await;

    assert_eq!(applied.path, BatchPath::SetWise);
    assert_eq!(
        applied.outcomes,
        [Outcome::Applied, Outcome::Applied, Outcome::Applied]
    );
    assert_eq!(
        count(&database, "SELECT reserved FROM stock WHERE sku = 'SKU-A'").await,
        3
    );
}

#[tokio::test]
async fn a_mixed_batch_applies_runs_and_single_events_in_order() {
    let database = TestDatabase::create().await;
    let order_id = Uuid::now_v7();
    let placed = order_placed(order_id);
    let payment = captured(order_id);
    let next = order_placed(Uuid::now_v7());

    // The order, its payment, the order again, and another order: the
    // payment needs the run before it applied first.
    let applied = process(
        &database,
        ConsumerGroup::Orders,
        &[&placed, &payment, &placed, &next, &payment],
    )
    .await;

    assert_eq!(applied.path, BatchPath::SetWise);
    let outcomes = applied.outcomes;
    assert_eq!(
        outcomes,
        [
            Outcome::Applied,
            Outcome::Applied,
            Outcome::Duplicate,
            Outcome::Applied,
            Outcome::Duplicate
        ]
    );
    assert_eq!(
        count(
            &database,
            "SELECT count(*) FROM orders WHERE status = 'paid'"
        )
        .await,
        1
    );
    assert_eq!(count(&database, "SELECT count(*) FROM orders").await, 2);
    assert_eq!(count(&database, "SELECT count(*) FROM payments").await, 1);
    assert_eq!(
        count(&database, "SELECT count(*) FROM processed_events").await,
        3
    );
}

#[tokio::test]
async fn failing_events_are_reported_and_their_neighbours_commit_in_one_call() {
    let database = TestDatabase::create().await;
    let (known, cancelled_order) = (Uuid::now_v7(), Uuid::now_v7());
    process(
        &database,
        ConsumerGroup::Orders,
        &[&order_placed(known), &order_placed(cancelled_order)],
    )
    .await;
    process(
        &database,
        ConsumerGroup::Orders,
        &[&cancelled(cancelled_order)],
    )
    .await;
    let early_payment = captured(Uuid::now_v7()); // its order is not known yet: transient
    let ship_cancelled = shipped(cancelled_order); // a broken rule: permanent
    let (payment, next) = (captured(known), order_placed(Uuid::now_v7()));

    let applied = process(
        &database,
        ConsumerGroup::Orders,
        &[&early_payment, &payment, &ship_cancelled, &next],
    )
    .await;

    assert_eq!(
        applied.path,
        BatchPath::SetWise,
        "the failures were reported; no savepoints"
    );
    let outcomes = applied.outcomes;

    assert!(
        matches!(&outcomes[0], Outcome::Retry(history) if history.records[0].kind == "order_unknown"),
        "{:?}",
        outcomes[0]
    );
    assert_eq!(outcomes[1], Outcome::Applied);
    assert_eq!(outcomes[2], Outcome::DeadLettered);
    assert_eq!(outcomes[3], Outcome::Applied);
    assert_eq!(
        count(
            &database,
            "SELECT count(*) FROM orders WHERE status = 'paid'"
        )
        .await,
        1
    );
    assert_eq!(count(&database, "SELECT count(*) FROM orders").await, 3);
    assert_eq!(count(&database, "SELECT count(*) FROM shipments").await, 0);
    assert_eq!(
        count(&database, "SELECT count(*) FROM dead_letters").await,
        1
    );
    assert_eq!(
        count(&database, "SELECT count(*) FROM processed_events").await,
        5,
        "two orders, a cancellation, a payment, an order; neither failure"
    );
}

#[tokio::test]
async fn a_batch_whose_set_wise_call_raises_is_redone_event_by_event() {
    let database = TestDatabase::create().await;
    stock(&database, "SKU-1", 100).await;
    // The impostor's reservation rows exist, so the set-wise insert raises
    // a unique violation and undoes the call.
    let (impostor, applied) = with_an_impostor(&database, ConsumerGroup::Inventory).await;

    assert_eq!(
        applied,
        Applied {
            outcomes: vec![Outcome::Applied, Outcome::DeadLettered, Outcome::Applied],
            path: BatchPath::EventByEvent
        }
    );
    assert_eq!(
        count(&database, "SELECT reserved FROM stock WHERE sku = 'SKU-1'").await,
        6,
        "three orders of 2 units reserved, the impostor none"
    );
    let kind = dead_letter_kind(&database, &impostor).await;
    assert_eq!(kind, "database_constraint");
}

#[tokio::test]
async fn events_of_one_aggregate_keep_their_order_within_a_set_wise_batch() {
    let database = TestDatabase::create().await;
    let (paid_then_shipped, cancelled_then_shipped) = (Uuid::now_v7(), Uuid::now_v7());
    let (placed, payment, shipment) = (
        order_placed(paid_then_shipped),
        captured(paid_then_shipped),
        shipped(paid_then_shipped),
    );
    let (other, cancellation, late_shipment) = (
        order_placed(cancelled_then_shipped),
        cancelled(cancelled_then_shipped),
        shipped(cancelled_then_shipped),
    );

    // Interleaved, each order's events in their order: order, payment,
    // shipment; order, cancellation, shipment (a broken rule).
    let applied = process(
        &database,
        ConsumerGroup::Orders,
        &[
            &placed,
            &other,
            &payment,
            &cancellation,
            &shipment,
            &late_shipment,
        ],
    )
    .await;

    assert_eq!(applied.path, BatchPath::SetWise);
    assert_eq!(
        applied.outcomes,
        [
            Outcome::Applied,
            Outcome::Applied,
            Outcome::Applied,
            Outcome::Applied,
            Outcome::Applied,
            Outcome::DeadLettered
        ]
    );
    let statuses: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT order_id, status FROM orders ORDER BY order_id")
            .fetch_all(&database.pool)
            .await
            .unwrap();
    let mut expected = vec![
        (paid_then_shipped, "shipped".to_owned()),
        (cancelled_then_shipped, "cancelled".to_owned()),
    ];
    expected.sort();
    assert_eq!(statuses, expected);
    let kind = dead_letter_kind(&database, &late_shipment).await;
    assert_eq!(kind, "ship_cancelled_order");
    assert_eq!(
        count(&database, "SELECT count(*) FROM processed_events").await,
        5,
        "the dead-lettered shipment is not claimed"
    );
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_while_its_batch_neighbours_commit() {
    let database = TestDatabase::create().await;
    let before: Vec<Event> = (0..5).map(|_| order_placed(Uuid::now_v7())).collect();
    let after: Vec<Event> = (0..5).map(|_| order_placed(Uuid::now_v7())).collect();
    let mut batch: Vec<Incoming> = before.iter().map(incoming).collect();
    let mut poison = incoming(&before[0]);
    poison.body = b"{\"specversion\":\"1.0\", truncated".to_vec();
    poison.event = Err(runtime::incoming::Refusal::Undecodable(
        Event::decode(&poison.body, 1 << 20).unwrap_err(),
    ));
    poison.properties = lapin::BasicProperties::default();
    batch.push(poison);
    batch.extend(after.iter().map(incoming));

    let applied = process_incoming(&database, ConsumerGroup::Orders, &batch).await;

    let mut expected = vec![Outcome::Applied; 5];
    expected.push(Outcome::DeadLettered);
    expected.extend(vec![Outcome::Applied; 5]);
    assert_eq!(
        applied,
        Applied {
            outcomes: expected,
            path: BatchPath::EventByEvent
        }
    );
    assert_eq!(count(&database, "SELECT count(*) FROM orders").await, 10);
    let (kind, event_id): (String, Option<Uuid>) =
        sqlx::query_as("SELECT error_kind, event_id FROM dead_letters")
            .fetch_one(&database.pool)
            .await
            .unwrap();
    assert_eq!((kind.as_str(), event_id), ("poison", None));
}

/// The set-wise functions keep each statement's plan for the session, so
/// a plan made while the tables were empty serves them once they have
/// grown: it must read every table through an index (migration
/// `index_bound_plans`), never whole. Tables analyzed empty (where a
/// sequential scan is the cheapest plan), then store traffic applied in
/// one session and transaction, whose own scan counts are read at the end.
/// (Inventory's batches leave out cancellations: their reservation lookup
/// is planned for each call, outside the functions, and may scan a table
/// this small.)
#[tokio::test]
async fn set_wise_plans_made_on_empty_tables_read_every_table_through_an_index() {
    let database = TestDatabase::create().await;
    sqlx::query("ANALYZE")
        .execute(&database.pool)
        .await
        .unwrap();
    let mut store = shared::simulation::StoreTraffic::new(5);
    let events: Vec<Event> = (0..1_200).map(|_| store.next_event()).collect();
    let mut connection = database.pool.acquire().await.unwrap();
    let mut transaction = sqlx::Connection::begin(&mut *connection).await.unwrap();
    // This backend's counts not yet flushed to the shared statistics (they
    // may hold earlier statements'; none is flushed inside a transaction).
    let scans = "SELECT relname::text, seq_scan FROM pg_stat_xact_user_tables ORDER BY 1";
    let before: Vec<(String, i64)> = sqlx::query_as(scans)
        .fetch_all(&mut *transaction)
        .await
        .unwrap();
    let mut applied = 0;
    for chunk in events.chunks(100) {
        for group in ConsumerGroup::ALL {
            let batch: Vec<&Event> = chunk
                .iter()
                .filter(|event| group.handles(event.event_type()))
                .filter(|event| {
                    group != ConsumerGroup::Inventory
                        || event.event_type() != shared::events::EventType::OrderCancelled
                })
                .collect();
            let verdicts = consumers::handlers::apply_batch(group, &mut transaction, &batch)
                .await
                .expect("applied set-wise");
            applied += verdicts
                .iter()
                .filter(|verdict| matches!(verdict, runtime::handler::Verdict::Applied))
                .count();
        }
    }
    assert!(applied > 2_000, "only {applied} events applied");
    let after: Vec<(String, i64)> = sqlx::query_as(scans)
        .fetch_all(&mut *transaction)
        .await
        .unwrap();
    let scanned: Vec<(String, i64)> = after
        .into_iter()
        .filter(|(table, count)| {
            let earlier = before.iter().find(|(name, _)| name == table);
            *count > earlier.map_or(0, |(_, count)| *count)
        })
        .collect();
    assert!(
        scanned.is_empty(),
        "tables read whole by a set-wise function: {scanned:?}"
    );
}

/// Orders placed on one SKU share a level in `inventory` and reserve in
/// delivery order: an order short of units reserves nothing and the next
/// one gets what is left; a cancellation's release is seen by the orders
/// after it, not by those before it.
#[tokio::test]
async fn orders_on_one_sku_reserve_in_delivery_order_within_a_set_wise_batch() {
    let database = TestDatabase::create().await;
    stock(&database, "SKU-A", 5).await;
    stock(&database, "SKU-B", 3).await;
    let ids: Vec<Uuid> = (0..7).map(|_| Uuid::now_v7()).collect();
    let events = [
        order_placed_with(ids[0], "SKU-A", 3),
        order_placed_with(ids[1], "SKU-A", 3), // 2 left: short
        order_placed_with(ids[2], "SKU-A", 2), // the 2 left
        cancelled(ids[0]),                     // releases 3
        order_placed_with(ids[3], "SKU-A", 3), // the 3 released
        order_placed_with(ids[4], "SKU-B", 3),
        order_placed_with(ids[5], "SKU-B", 1), // before the release: short
        cancelled(ids[4]),
        order_placed_with(ids[6], "SKU-B", 3),
    ];
    let batch: Vec<&Event> = events.iter().collect();

    let applied = process(&database, ConsumerGroup::Inventory, &batch).await;

    assert_eq!(applied.path, BatchPath::SetWise);
    for (index, outcome) in applied.outcomes.iter().enumerate() {
        match index {
            1 | 6 => assert!(
                matches!(outcome, Outcome::Retry(history)
                    if history.records[0].kind == "insufficient_stock"),
                "event {index}: {outcome:?}"
            ),
            _ => assert_eq!(outcome, &Outcome::Applied, "event {index}"),
        }
    }
    let reserved: Vec<(String, i64)> =
        sqlx::query_as("SELECT sku, reserved FROM stock ORDER BY sku")
            .fetch_all(&database.pool)
            .await
            .unwrap();
    assert_eq!(reserved, [("SKU-A".to_owned(), 5), ("SKU-B".to_owned(), 3)]);
    let held: Vec<(Uuid, i64, bool)> = sqlx::query_as(
        "SELECT order_id, quantity, released FROM stock_reservations ORDER BY order_id",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap();
    assert_eq!(
        held,
        [
            (ids[0], 3, true),
            (ids[2], 2, false),
            (ids[3], 3, false),
            (ids[4], 3, true),
            (ids[6], 3, false),
        ]
    );
}

/// The function the workers call refuses, before writing anything, a
/// batch holding a type its group's function has no statement for (the
/// batch is then redone event by event, where the event is dead-lettered
/// as `type_not_handled`), and otherwise answers once for every event.
#[tokio::test]
async fn the_batch_function_refuses_a_type_it_does_not_apply_and_reports_every_event() {
    let database = TestDatabase::create().await;
    let refused = sqlx::query(
        "SELECT * FROM switchyard_apply_reported('sales', '{}', \
           '[{\"i\": 0, \"id\": \"01a24e67-7b2a-7201-a165-51dc0c8f2454\", \"type\": \"customer.registered\", \"lvl\": 0}]')",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap_err();
    let code = refused
        .as_database_error()
        .and_then(|error| error.code())
        .map(|code| code.into_owned());
    assert_eq!(code.as_deref(), Some("22023"), "{refused}");
    assert_eq!(
        count(&database, "SELECT count(*) FROM processed_events").await,
        0
    );

    let (first, second) = (order_placed(Uuid::now_v7()), order_placed(Uuid::now_v7()));
    process(&database, ConsumerGroup::Sales, &[&first]).await;
    let applied = process(&database, ConsumerGroup::Sales, &[&first, &second, &second]).await;
    assert_eq!(
        applied.outcomes,
        [Outcome::Duplicate, Outcome::Applied, Outcome::Duplicate]
    );
    assert_eq!(applied.path, BatchPath::SetWise);
}
