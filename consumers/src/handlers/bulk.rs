//! Set-based application of a run of `order.placed` events: one call of the
//! group's SQL function (migration `batch_functions`) claims the events in
//! `processed_events` and applies the new ones, in one round trip. On a
//! bare pool the call is its own transaction; in a transaction it is one
//! step of it.
//!
//! When some event cannot be applied this way (an order id placed twice,
//! too little stock) the function fails (SQLSTATE `SY001` or `23505`) and
//! undoes everything; this returns `Ok(None)` and the runtime redoes the
//! batch event by event, where each failure is isolated and classified.

use std::collections::HashSet;

use serde_json::json;
use shared::events::catalog::OrderPlaced;
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use sqlx::types::Json;
use sqlx::{PgExecutor, Postgres};
use uuid::Uuid;

use super::HandlerError;

/// SQLSTATEs of a batch function that mean "apply this run event by event":
/// its own (too little stock) and unique violation (an order id placed by
/// another event).
const NEEDS_ONE_BY_ONE: [&str; 2] = ["SY001", "23505"];

/// One `order.placed` event of a run.
struct Placed<'a> {
    event: &'a Event,
    order: &'a OrderPlaced,
}

/// Applies the `order.placed` events of `events` (others are ignored) for
/// `group`, after taking the advisory locks `lock_ids` (ascending). Returns
/// the ids claimed and applied now; an id not in it had been processed
/// before, or occurs twice in `events` (the first copy counts). `Ok(None)`:
/// nothing was applied, redo the run event by event.
pub async fn apply_orders_placed<'c>(
    group: ConsumerGroup,
    executor: impl PgExecutor<'c>,
    lock_ids: &[i64],
    events: &[&Event],
) -> Result<Option<HashSet<Uuid>>, HandlerError> {
    // Distinct ids, ascending: concurrent batches holding copies of the same
    // events then claim them in one order and wait instead of deadlocking.
    let mut run: Vec<Placed<'_>> = events
        .iter()
        .filter_map(|event| match &event.payload {
            EventPayload::OrderPlaced(order) => Some(Placed { event, order }),
            _ => None,
        })
        .collect();
    run.sort_by_key(|placed| placed.event.id);
    run.dedup_by_key(|placed| placed.event.id);
    let event_ids: Vec<Uuid> = run.iter().map(|placed| placed.event.id).collect();
    let order_ids: Vec<Uuid> = run.iter().map(|placed| placed.order.order_id).collect();
    let lock_ids = lock_ids.to_vec();
    let query = match group {
        ConsumerGroup::Orders => {
            let Some(query) = place_orders(&run, lock_ids, event_ids, order_ids) else {
                return Ok(None); // a total overflows: a permanent error, isolated per event
            };
            query
        }
        ConsumerGroup::Inventory => reserve_stock(&run, lock_ids, event_ids, order_ids),
        ConsumerGroup::Sales => {
            let Some(query) = record_sales(&run, lock_ids, event_ids, order_ids) else {
                return Ok(None); // a sum overflows: a permanent error, isolated per event
            };
            query
        }
    };
    match query.fetch_one(executor).await {
        Ok(claimed) => Ok(Some(claimed.into_iter().collect())),
        Err(sqlx::Error::Database(error))
            if error
                .code()
                .is_some_and(|code| NEEDS_ONE_BY_ONE.contains(&code.as_ref())) =>
        {
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

type ClaimQuery<'q> =
    sqlx::query::QueryScalar<'q, Postgres, Vec<Uuid>, sqlx::postgres::PgArguments>;

fn place_orders<'q>(
    run: &[Placed<'_>],
    lock_ids: Vec<i64>,
    event_ids: Vec<Uuid>,
    order_ids: Vec<Uuid>,
) -> Option<ClaimQuery<'q>> {
    let totals = run
        .iter()
        .map(|placed| placed.order.total_cents())
        .collect::<Option<Vec<i64>>>()?;
    let customers: Vec<Uuid> = run.iter().map(|placed| placed.order.customer_id).collect();
    let currencies: Vec<String> = run
        .iter()
        .map(|placed| placed.order.currency.clone())
        .collect();
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        run.iter().map(|placed| placed.event.time).collect();
    let lines = Lines::of(run);
    Some(
        sqlx::query_scalar(
            "SELECT orders_place_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(lock_ids)
        .bind(event_ids)
        .bind(order_ids)
        .bind(customers)
        .bind(currencies)
        .bind(totals)
        .bind(times)
        .bind(lines.event_ids)
        .bind(lines.numbers)
        .bind(lines.skus)
        .bind(lines.categories)
        .bind(lines.quantities)
        .bind(lines.unit_prices),
    )
}

fn reserve_stock<'q>(
    run: &[Placed<'_>],
    lock_ids: Vec<i64>,
    event_ids: Vec<Uuid>,
    order_ids: Vec<Uuid>,
) -> ClaimQuery<'q> {
    let lines = Lines::of(run);
    sqlx::query_scalar("SELECT inventory_reserve_batch($1, $2, $3, $4, $5, $6)")
        .bind(lock_ids)
        .bind(event_ids)
        .bind(order_ids)
        .bind(lines.event_ids)
        .bind(lines.skus)
        .bind(lines.quantities)
}

fn record_sales<'q>(
    run: &[Placed<'_>],
    lock_ids: Vec<i64>,
    event_ids: Vec<Uuid>,
    order_ids: Vec<Uuid>,
) -> Option<ClaimQuery<'q>> {
    let currencies: Vec<String> = run
        .iter()
        .map(|placed| placed.order.currency.clone())
        .collect();
    let categories: Vec<Json<serde_json::Value>> = run
        .iter()
        .map(|placed| Some(Json(json!(super::sales::category_totals(placed.order)?))))
        .collect::<Option<_>>()?;
    let query = sqlx::query_scalar("SELECT sales_record_batch($1, $2, $3, $4, $5)")
        .bind(lock_ids)
        .bind(event_ids)
        .bind(order_ids)
        .bind(currencies)
        .bind(categories);
    Some(query)
}

/// Every line of a run as parallel arrays, keyed by the event it belongs to.
#[derive(Default)]
struct Lines {
    event_ids: Vec<Uuid>,
    numbers: Vec<i32>,
    skus: Vec<String>,
    categories: Vec<String>,
    quantities: Vec<i64>,
    unit_prices: Vec<i64>,
}

impl Lines {
    fn of(run: &[Placed<'_>]) -> Self {
        let mut lines = Lines::default();
        for placed in run {
            for (number, line) in placed.order.lines.iter().enumerate() {
                lines.event_ids.push(placed.event.id);
                lines.numbers.push(number as i32 + 1);
                lines.skus.push(line.sku.clone());
                lines.categories.push(line.category.clone());
                lines.quantities.push(line.quantity);
                lines.unit_prices.push(line.unit_price_cents);
            }
        }
        lines
    }
}
