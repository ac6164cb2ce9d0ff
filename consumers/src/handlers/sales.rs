//! The `sales` group: revenue and units per category per day, counted when
//! an order is paid and reversed when a paid order is cancelled.

use std::collections::BTreeMap;

use serde_json::json;
use shared::events::catalog::*;
use shared::events::{Event, EventPayload};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::HandlerError;

type CategoryTotals = BTreeMap<String, CategoryTotal>;

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct CategoryTotal {
    revenue_cents: i64,
    units: i64,
}

pub async fn apply(connection: &mut PgConnection, event: &Event) -> Result<(), HandlerError> {
    match &event.payload {
        EventPayload::OrderPlaced(order) => record_order(connection, order).await,
        EventPayload::PaymentCaptured(payment) => count(connection, event, payment).await,
        EventPayload::OrderCancelled(cancellation) => reverse(connection, cancellation).await,
        EventPayload::CustomerRegistered(_)
        | EventPayload::ProductListed(_)
        | EventPayload::ProductPriceChanged(_)
        | EventPayload::InventoryRestocked(_)
        | EventPayload::PaymentFailed(_)
        | EventPayload::OrderShipped(_) => Ok(()),
    }
}

async fn record_order(connection: &mut PgConnection, order: &OrderPlaced) -> Result<(), HandlerError> {
    let mut totals = CategoryTotals::new();
    for line in &order.lines {
        let total = totals.entry(line.category.clone()).or_default();
        total.units += line.quantity;
        total.revenue_cents += line.quantity * line.unit_price_cents;
    }
    sqlx::query(
        "INSERT INTO sales_orders (order_id, currency, categories) VALUES ($1, $2, $3) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order.order_id)
    .bind(&order.currency)
    .bind(Json(json!(totals)))
    .execute(connection)
    .await?;
    Ok(())
}

struct SalesOrder {
    currency: String,
    categories: CategoryTotals,
    paid_on: Option<chrono::NaiveDate>,
    counted: bool,
    cancelled: bool,
}

async fn locked_order(connection: &mut PgConnection, order_id: Uuid) -> Result<SalesOrder, HandlerError> {
    let row: Option<(String, Json<CategoryTotals>, Option<chrono::NaiveDate>, bool, bool)> = sqlx::query_as(
        "SELECT currency, categories, paid_on, counted, cancelled FROM sales_orders WHERE order_id = $1 FOR UPDATE",
    )
    .bind(order_id)
    .fetch_optional(connection)
    .await?;
    let (currency, Json(categories), paid_on, counted, cancelled) = row
        .ok_or_else(|| HandlerError::transient("order_unknown", format!("order {order_id} has not been placed yet")))?;
    Ok(SalesOrder { currency, categories, paid_on, counted, cancelled })
}

async fn count(connection: &mut PgConnection, event: &Event, payment: &PaymentCaptured) -> Result<(), HandlerError> {
    let order = locked_order(connection, payment.order_id).await?;
    if order.paid_on.is_some() {
        return Ok(());
    }
    let day = event.time.date_naive();
    // A payment for an order already cancelled nets to zero: it would be
    // counted and then reversed had the events arrived the other way round.
    let counted = !order.cancelled;
    if counted {
        add_to_days(connection, day, &order.currency, &order.categories, 1).await?;
    }
    sqlx::query("UPDATE sales_orders SET paid_on = $2, counted = $3 WHERE order_id = $1")
        .bind(payment.order_id)
        .bind(day)
        .bind(counted)
        .execute(connection)
        .await?;
    Ok(())
}

async fn reverse(connection: &mut PgConnection, cancellation: &OrderCancelled) -> Result<(), HandlerError> {
    let order = locked_order(connection, cancellation.order_id).await?;
    if order.cancelled {
        return Ok(());
    }
    if let (true, Some(day)) = (order.counted, order.paid_on) {
        add_to_days(connection, day, &order.currency, &order.categories, -1).await?;
    }
    sqlx::query("UPDATE sales_orders SET cancelled = true, counted = false WHERE order_id = $1")
        .bind(cancellation.order_id)
        .execute(connection)
        .await?;
    Ok(())
}

/// Adds (`sign` = 1) or subtracts (-1) an order's totals on `day`; rows that
/// fall back to zero are removed, so the table only holds real sales.
async fn add_to_days(
    connection: &mut PgConnection,
    day: chrono::NaiveDate,
    currency: &str,
    categories: &CategoryTotals,
    sign: i64,
) -> Result<(), HandlerError> {
    let names: Vec<&str> = categories.keys().map(String::as_str).collect();
    let revenue: Vec<i64> = categories.values().map(|total| sign * total.revenue_cents).collect();
    let units: Vec<i64> = categories.values().map(|total| sign * total.units).collect();
    sqlx::query(
        "INSERT INTO sales_daily (day, category, currency, revenue_cents, units) \
         SELECT $1, category, $2, revenue, units FROM UNNEST($3::text[], $4::bigint[], $5::bigint[]) \
           AS t(category, revenue, units) \
         ON CONFLICT (day, category, currency) DO UPDATE SET \
           revenue_cents = sales_daily.revenue_cents + EXCLUDED.revenue_cents, \
           units = sales_daily.units + EXCLUDED.units",
    )
    .bind(day)
    .bind(currency)
    .bind(&names)
    .bind(&revenue)
    .bind(&units)
    .execute(&mut *connection)
    .await?;
    sqlx::query("DELETE FROM sales_daily WHERE day = $1 AND currency = $2 AND revenue_cents = 0 AND units = 0")
        .bind(day)
        .bind(currency)
        .execute(connection)
        .await?;
    Ok(())
}
