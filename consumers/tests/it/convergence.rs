//! Projections converge: whatever the delivery order and however many
//! duplicates arrive, the final database equals the in-order result. The
//! reference applies the stream in order, one event at a time (the
//! savepoint path: the group's function called with one event); the run
//! under test delivers it shuffled with copies, in batches that mix types
//! and aggregates, through the set-wise path — so each type's statement is
//! checked against itself applied alone, in order, and the levels that
//! keep an aggregate's order within a batch are checked too.

use std::collections::VecDeque;

use proptest::prelude::*;
use runtime::batch::{
    BatchContext, BatchPath, Outcome, process_batch, process_batch_event_by_event,
};
use runtime::incoming::Incoming;
use shared::events::Event;
use shared::groups::ConsumerGroup;
use shared::retry::RetryPolicy;
use shared::simulation::StoreTraffic;
use shared::testing::TestDatabase;
use sqlx::PgPool;

const SNAPSHOT_TABLES: [&str; 10] = [
    "customers",
    "orders",
    "order_lines",
    "payments",
    "shipments",
    "products",
    "stock",
    "stock_reservations",
    "sales_orders",
    "sales_daily",
];

/// How [`apply_all`] applies each batch.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// The runtime's choice, which must be set-wise for a valid stream.
    SetWise,
    /// A savepoint per event, the group's function called with that event alone.
    EventByEvent,
}

/// Applies `stream` for every group in batches of `batch_size`, retrying
/// transient failures after the rest (as the retry queues would) until
/// nothing is left.
async fn apply_all(pool: &PgPool, stream: &[Event], batch_size: usize, path: Path) {
    for group in ConsumerGroup::ALL {
        let context = BatchContext {
            group,
            handlers: consumers::handlers::Store::shared(),
            worker: "property".into(),
            policy: RetryPolicy {
                max_attempts: u32::MAX,
                ..RetryPolicy::default()
            },
            attempt_key: runtime::AttemptKey::from_bytes([1; 32]),
        };
        let mut pending: VecDeque<Incoming> = stream
            .iter()
            .filter(|event| group.handles(event.event_type()))
            .map(crate::support::incoming)
            .collect();
        let mut stalled = 0;
        while !pending.is_empty() {
            let take = batch_size.min(pending.len());
            let chunk: Vec<Incoming> = pending.drain(..take).collect();
            let mut connection = pool.acquire().await.unwrap();
            let applied = match path {
                Path::SetWise => process_batch(&mut connection, &context, &chunk).await,
                Path::EventByEvent => {
                    process_batch_event_by_event(&mut connection, &context, &chunk).await
                }
            }
            .unwrap();
            if path == Path::SetWise {
                assert_eq!(applied.path, BatchPath::SetWise, "group {group}");
            }
            let outcomes = applied.outcomes;
            let mut progressed = false;
            for (mut incoming, outcome) in chunk.into_iter().zip(outcomes) {
                match outcome {
                    Outcome::Applied | Outcome::Duplicate => progressed = true,
                    Outcome::Retry(history) => {
                        incoming.history = history;
                        pending.push_back(incoming);
                    }
                    Outcome::DeadLettered => {
                        panic!("group {group}: a valid stream dead-lettered an event")
                    }
                }
            }
            stalled = if progressed { 0 } else { stalled + 1 };
            assert!(
                stalled <= pending.len() + 1,
                "group {group}: no progress possible"
            );
        }
    }
}

async fn snapshot(pool: &PgPool) -> Vec<(String, Vec<String>)> {
    let mut tables = Vec::new();
    for table in SNAPSHOT_TABLES {
        let sql = format!("SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1");
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .unwrap();
        tables.push((table.to_owned(), rows));
    }
    tables
}

fn stream_and_delivery() -> impl Strategy<Value = (Vec<Event>, Vec<Event>)> {
    (any::<u64>(), 40usize..160).prop_flat_map(|(seed, length)| {
        let mut store = StoreTraffic::new(seed);
        let in_order: Vec<Event> = (0..length).map(|_| store.next_event()).collect();
        let duplicates = proptest::collection::vec(any::<prop::sample::Index>(), 0..length / 2);
        (
            Just(in_order.clone()),
            Just(in_order).prop_shuffle(),
            duplicates,
        )
            .prop_map(|(in_order, mut shuffled, duplicates)| {
                let copies: Vec<Event> = duplicates
                    .iter()
                    .map(|index| index.get(&in_order).clone())
                    .collect();
                for (position, copy) in duplicates.iter().zip(copies) {
                    let at = position.index(shuffled.len() + 1);
                    shuffled.insert(at, copy);
                }
                (in_order, shuffled)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn projections_converge_whatever_the_order_and_duplicates(
        (in_order, delivered) in stream_and_delivery(),
        batch_size in 1usize..48,
    ) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let expected_db = TestDatabase::create().await;
            apply_all(&expected_db.pool, &in_order, 1, Path::EventByEvent).await;
            let actual_db = TestDatabase::create().await;
            apply_all(&actual_db.pool, &delivered, batch_size, Path::SetWise).await;

            let expected = snapshot(&expected_db.pool).await;
            let actual = snapshot(&actual_db.pool).await;
            for ((table, want), (_, got)) in expected.iter().zip(&actual) {
                assert_eq!(got, want, "table {table} differs");
            }
            let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
                .fetch_one(&actual_db.pool).await.unwrap();
            let routed: usize = in_order.iter()
                .map(|event| ConsumerGroup::ALL.iter().filter(|group| group.handles(event.event_type())).count())
                .sum();
            assert_eq!(applied as usize, routed, "each event applied once per group");
        });
    }
}
