//! The `sales` group: per-order category totals, counted when an order is
//! paid and uncounted when it is cancelled; the `sales_daily` view sums
//! them per day, category and currency.

use std::collections::BTreeMap;

use serde_json::json;
use shared::events::catalog::*;
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
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
        // Not routed to this group: refused, never acked with no effect.
        EventPayload::CustomerRegistered(_)
        | EventPayload::ProductListed(_)
        | EventPayload::ProductPriceChanged(_)
        | EventPayload::InventoryRestocked(_)
        | EventPayload::PaymentFailed(_)
        | EventPayload::OrderShipped(_) => {
            Err(HandlerError::not_handled(ConsumerGroup::Sales, event))
        }
    }
}

/// Revenue and units of an order per category; `None` when a sum does not
/// fit 64 bits (validation's bounds rule that out for decoded events; the
/// arithmetic is checked all the same, never wrapped nor a panic).
pub(super) fn category_totals(order: &OrderPlaced) -> Option<CategoryTotals> {
    let mut totals = CategoryTotals::new();
    for line in &order.lines {
        let total = totals.entry(line.category.clone()).or_default();
        total.units = total.units.checked_add(line.quantity)?;
        let revenue = line.quantity.checked_mul(line.unit_price_cents)?;
        total.revenue_cents = total.revenue_cents.checked_add(revenue)?;
    }
    Some(totals)
}

/// The permanent error of an order whose sums overflow.
pub(super) fn too_large(order: &OrderPlaced) -> HandlerError {
    HandlerError::permanent(
        "order_too_large",
        format!("order {}: its totals do not fit 64 bits", order.order_id),
    )
}

async fn record_order(
    connection: &mut PgConnection,
    order: &OrderPlaced,
) -> Result<(), HandlerError> {
    let totals = category_totals(order).ok_or_else(|| too_large(order))?;
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
    let (paid_on,) = row.ok_or_else(|| super::orders::order_unknown(order_id))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shared::events::catalog::OrderLine;

    fn extreme() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(i64::MAX),
            Just(i64::MAX / 2 + 1),
            Just(0),
            Just(1),
            0..i64::MAX,
            0i64..1_000_000,
        ]
    }

    proptest! {
        /// Whatever the quantities and prices, the totals are exact or
        /// refused: never wrapped, never a panic.
        #[test]
        fn category_totals_are_exact_or_refused(
            lines in proptest::collection::vec(
                (prop_oneof![Just("a"), Just("b")], extreme(), extreme()),
                1..6,
            )
        ) {
            let order = OrderPlaced {
                order_id: uuid::Uuid::nil(),
                customer_id: uuid::Uuid::nil(),
                currency: "EUR".into(),
                lines: lines
                    .iter()
                    .map(|(category, quantity, price)| OrderLine {
                        sku: "SKU-1".into(),
                        category: (*category).into(),
                        quantity: *quantity,
                        unit_price_cents: *price,
                    })
                    .collect(),
            };
            let mut exact: BTreeMap<&str, (i128, i128)> = BTreeMap::new();
            for (category, quantity, price) in &lines {
                let entry = exact.entry(category).or_default();
                // Saturating: past i128 it is far past i64 all the same.
                entry.0 = entry.0.saturating_add(i128::from(*quantity));
                entry.1 = entry.1.saturating_add(i128::from(*quantity) * i128::from(*price));
            }
            let fits = exact.values().all(|(units, revenue)| {
                i64::try_from(*units).is_ok() && i64::try_from(*revenue).is_ok()
            }) && lines.iter().all(|(_, quantity, price)| quantity.checked_mul(*price).is_some());
            match category_totals(&order) {
                Some(totals) => {
                    for (category, (units, revenue)) in exact {
                        prop_assert_eq!(i128::from(totals[category].units), units);
                        prop_assert_eq!(i128::from(totals[category].revenue_cents), revenue);
                    }
                }
                None => prop_assert!(!fits),
            }
        }
    }
}
