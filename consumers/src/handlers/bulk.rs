//! Set-based application of a run of `order.placed` events: a few
//! `INSERT … SELECT FROM UNNEST(…)` statements per batch instead of several
//! round trips per event. Returns `false` when some event cannot be applied
//! this way (a duplicate order id, too little stock); the runtime then redoes
//! the batch event by event, where each failure is isolated and classified.

use std::collections::BTreeMap;

use serde_json::json;
use shared::events::catalog::OrderPlaced;
use shared::groups::ConsumerGroup;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::HandlerError;

/// Applies every order of `orders` for `group`, or reports `Ok(false)`
/// (leaving the transaction to be rolled back by the caller).
pub async fn apply_orders_placed(
    group: ConsumerGroup,
    connection: &mut PgConnection,
    orders: &[(&OrderPlaced, chrono::DateTime<chrono::Utc>)],
) -> Result<bool, HandlerError> {
    match group {
        ConsumerGroup::Orders => insert_orders(connection, orders).await,
        ConsumerGroup::Inventory => reserve_stock(connection, orders).await,
        ConsumerGroup::Sales => record_sales_orders(connection, orders).await,
    }
}

async fn insert_orders(
    connection: &mut PgConnection,
    orders: &[(&OrderPlaced, chrono::DateTime<chrono::Utc>)],
) -> Result<bool, HandlerError> {
    let mut totals = Vec::with_capacity(orders.len());
    for (order, _) in orders {
        match order.total_cents() {
            Some(total) => totals.push(total),
            None => return Ok(false),
        }
    }
    let ids: Vec<Uuid> = orders.iter().map(|(order, _)| order.order_id).collect();
    let customers: Vec<Uuid> = orders.iter().map(|(order, _)| order.customer_id).collect();
    let currencies: Vec<&str> = orders
        .iter()
        .map(|(order, _)| order.currency.as_str())
        .collect();
    let times: Vec<chrono::DateTime<chrono::Utc>> = orders.iter().map(|(_, time)| *time).collect();
    let inserted = sqlx::query(
        "INSERT INTO orders (order_id, customer_id, currency, total_cents, status, placed_at) \
         SELECT id, customer, currency, total, 'placed', placed_at \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::timestamptz[]) \
           AS t(id, customer, currency, total, placed_at) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&customers)
    .bind(&currencies)
    .bind(&totals)
    .bind(&times)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    if inserted as usize != orders.len() {
        return Ok(false); // an order id placed twice: a permanent error, isolated per event
    }
    let placed: Vec<&OrderPlaced> = orders.iter().map(|(order, _)| *order).collect();
    insert_order_lines(connection, &placed).await?;
    Ok(true)
}

/// Inserts the lines of every order in one statement.
pub(super) async fn insert_order_lines(
    connection: &mut PgConnection,
    orders: &[&OrderPlaced],
) -> Result<(), HandlerError> {
    let (mut line_orders, mut numbers, mut skus, mut categories, mut quantities, mut prices) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for order in orders {
        for (number, line) in order.lines.iter().enumerate() {
            line_orders.push(order.order_id);
            numbers.push(number as i32 + 1);
            skus.push(line.sku.as_str());
            categories.push(line.category.as_str());
            quantities.push(line.quantity);
            prices.push(line.unit_price_cents);
        }
    }
    sqlx::query(
        "INSERT INTO order_lines (order_id, line_number, sku, category, quantity, unit_price_cents) \
         SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])",
    )
    .bind(&line_orders)
    .bind(&numbers)
    .bind(&skus)
    .bind(&categories)
    .bind(&quantities)
    .bind(&prices)
    .execute(connection)
    .await?;
    Ok(())
}

async fn reserve_stock(
    connection: &mut PgConnection,
    orders: &[(&OrderPlaced, chrono::DateTime<chrono::Utc>)],
) -> Result<bool, HandlerError> {
    let mut per_order_sku: BTreeMap<(Uuid, &str), i64> = BTreeMap::new();
    let mut per_sku: BTreeMap<&str, i64> = BTreeMap::new();
    for (order, _) in orders {
        for line in &order.lines {
            *per_order_sku
                .entry((order.order_id, line.sku.as_str()))
                .or_default() += line.quantity;
            *per_sku.entry(line.sku.as_str()).or_default() += line.quantity;
        }
    }
    let skus: Vec<&str> = per_sku.keys().copied().collect();
    let wanted: Vec<i64> = per_sku.values().copied().collect();
    // All or nothing: if any SKU lacks stock for the whole run, the
    // event-by-event path decides which order is short.
    let reserved: i64 = sqlx::query_scalar(
        "WITH wanted AS (SELECT * FROM UNNEST($1::text[], $2::bigint[]) AS t(sku, quantity)), \
              updated AS ( \
                UPDATE stock SET reserved = stock.reserved + wanted.quantity FROM wanted \
                WHERE stock.sku = wanted.sku AND stock.on_hand - stock.reserved >= wanted.quantity \
                RETURNING 1) \
         SELECT count(*) FROM updated",
    )
    .bind(&skus)
    .bind(&wanted)
    .fetch_one(&mut *connection)
    .await?;
    if reserved as usize != skus.len() {
        return Ok(false);
    }
    let order_ids: Vec<Uuid> = per_order_sku.keys().map(|(order, _)| *order).collect();
    let order_skus: Vec<&str> = per_order_sku.keys().map(|(_, sku)| *sku).collect();
    let quantities: Vec<i64> = per_order_sku.values().copied().collect();
    let inserted = sqlx::query(
        "INSERT INTO stock_reservations (order_id, sku, quantity) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING",
    )
    .bind(&order_ids)
    .bind(&order_skus)
    .bind(&quantities)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(inserted as usize == order_ids.len())
}

async fn record_sales_orders(
    connection: &mut PgConnection,
    orders: &[(&OrderPlaced, chrono::DateTime<chrono::Utc>)],
) -> Result<bool, HandlerError> {
    let ids: Vec<Uuid> = orders.iter().map(|(order, _)| order.order_id).collect();
    let currencies: Vec<&str> = orders
        .iter()
        .map(|(order, _)| order.currency.as_str())
        .collect();
    let categories: Vec<Json<serde_json::Value>> = orders
        .iter()
        .map(|(order, _)| Json(json!(super::sales::category_totals(order))))
        .collect();
    sqlx::query(
        "INSERT INTO sales_orders (order_id, currency, categories) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[]) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&currencies)
    .bind(&categories)
    .execute(connection)
    .await?;
    Ok(true)
}
