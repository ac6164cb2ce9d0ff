//! The `sales` group: per-order category totals, counted when an order is
//! paid and uncounted when it is cancelled; the `sales_daily` view sums
//! them per day, category and currency.

use std::collections::BTreeMap;

use serde_json::json;
use shared::events::catalog::*;
use shared::events::{Event, EventPayload};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::HandlerError;

pub(super) type CategoryTotals = BTreeMap<String, CategoryTotal>;

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct CategoryTotal {
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

/// Revenue and units of an order per category.
pub(super) fn category_totals(order: &OrderPlaced) -> CategoryTotals {
    let mut totals = CategoryTotals::new();
    for line in &order.lines {
        let total = totals.entry(line.category.clone()).or_default();
        total.units += line.quantity;
        total.revenue_cents += line.quantity * line.unit_price_cents;
    }
    totals
}

async fn record_order(
    connection: &mut PgConnection,
    order: &OrderPlaced,
) -> Result<(), HandlerError> {
    let totals = category_totals(order);
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
    paid_on: Option<chrono::NaiveDate>,
}

async fn locked_order(
    connection: &mut PgConnection,
    order_id: Uuid,
) -> Result<SalesOrder, HandlerError> {
    let row: Option<(Option<chrono::NaiveDate>,)> =
        sqlx::query_as("SELECT paid_on FROM sales_orders WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(connection)
            .await?;
    let (paid_on,) = row.ok_or_else(|| {
        HandlerError::transient(
            "order_unknown",
            format!("order {order_id} has not been placed yet"),
        )
    })?;
    Ok(SalesOrder { paid_on })
}

async fn count(
    connection: &mut PgConnection,
    event: &Event,
    payment: &PaymentCaptured,
) -> Result<(), HandlerError> {
    let order = locked_order(connection, payment.order_id).await?;
    if order.paid_on.is_some() {
        return Ok(());
    }
    // A payment for an order already cancelled nets to zero: it would be
    // counted and then reversed had the events arrived the other way round.
    sqlx::query(
        "UPDATE sales_orders SET paid_on = $2, counted = NOT cancelled WHERE order_id = $1",
    )
    .bind(payment.order_id)
    .bind(event.time.date_naive())
    .execute(connection)
    .await?;
    Ok(())
}

async fn reverse(
    connection: &mut PgConnection,
    cancellation: &OrderCancelled,
) -> Result<(), HandlerError> {
    locked_order(connection, cancellation.order_id).await?;
    sqlx::query("UPDATE sales_orders SET cancelled = true, counted = false WHERE order_id = $1")
        .bind(cancellation.order_id)
        .execute(connection)
        .await?;
    Ok(())
}
