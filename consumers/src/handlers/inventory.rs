//! The `inventory` group: products and their prices, stock per SKU —
//! restocks add, placed orders reserve, cancellations release.

use std::collections::BTreeMap;

use shared::events::catalog::*;
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use sqlx::PgConnection;
use uuid::Uuid;

use super::HandlerError;

pub async fn apply(connection: &mut PgConnection, event: &Event) -> Result<(), HandlerError> {
    match &event.payload {
        EventPayload::ProductListed(product) => list(connection, event, product).await,
        EventPayload::ProductPriceChanged(change) => reprice(connection, event, change).await,
        EventPayload::InventoryRestocked(restock) => restock_sku(connection, restock).await,
        EventPayload::OrderPlaced(order) => reserve(connection, order).await,
        EventPayload::OrderCancelled(cancellation) => release(connection, cancellation).await,
        // Not routed to this group: refused, never acked with no effect.
        EventPayload::CustomerRegistered(_)
        | EventPayload::PaymentCaptured(_)
        | EventPayload::PaymentFailed(_)
        | EventPayload::OrderShipped(_) => {
            Err(HandlerError::not_handled(ConsumerGroup::Inventory, event))
        }
    }
}

async fn list(
    connection: &mut PgConnection,
    event: &Event,
    product: &ProductListed,
) -> Result<(), HandlerError> {
    sqlx::query(
        "INSERT INTO products (sku, name, category, price_cents, currency, price_as_of, price_event_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, category = EXCLUDED.category",
    )
    .bind(&product.sku)
    .bind(&product.name)
    .bind(&product.category)
    .bind(product.price_cents)
    .bind(&product.currency)
    .bind(event.time)
    .bind(event.id)
    .execute(&mut *connection)
    .await?;
    apply_price_if_newer(
        connection,
        event,
        &product.sku,
        product.price_cents,
        &product.currency,
    )
    .await?;
    Ok(())
}

async fn reprice(
    connection: &mut PgConnection,
    event: &Event,
    change: &ProductPriceChanged,
) -> Result<(), HandlerError> {
    let known = apply_price_if_newer(
        connection,
        event,
        &change.sku,
        change.new_price_cents,
        &change.currency,
    )
    .await?;
    if !known {
        return Err(product_unknown(&change.sku));
    }
    Ok(())
}

/// Sets the price when this event is newer (by time, then id) than the one
/// that set the current price: the last writer wins whatever the delivery
/// order. Returns whether the product exists.
async fn apply_price_if_newer(
    connection: &mut PgConnection,
    event: &Event,
    sku: &str,
    price_cents: i64,
    currency: &str,
) -> Result<bool, HandlerError> {
    let exists: Option<bool> = sqlx::query_scalar(
        "WITH updated AS ( \
           UPDATE products SET price_cents = $2, currency = $3, price_as_of = $4, price_event_id = $5 \
           WHERE sku = $1 AND (price_as_of, price_event_id) < ($4, $5) RETURNING 1) \
         SELECT true FROM products WHERE sku = $1",
    )
    .bind(sku)
    .bind(price_cents)
    .bind(currency)
    .bind(event.time)
    .bind(event.id)
    .fetch_optional(connection)
    .await?;
    Ok(exists.is_some())
}

async fn restock_sku(
    connection: &mut PgConnection,
    restock: &InventoryRestocked,
) -> Result<(), HandlerError> {
    sqlx::query(
        "INSERT INTO stock (sku, on_hand) VALUES ($1, $2) \
         ON CONFLICT (sku) DO UPDATE SET on_hand = stock.on_hand + EXCLUDED.on_hand",
    )
    .bind(&restock.sku)
    .bind(restock.quantity)
    .execute(connection)
    .await?;
    Ok(())
}

/// Reserves every line's units. Too little stock is transient, not
/// permanent: delivery order is not guaranteed, so a restock may still be on
/// its way; when the attempt budget is spent the order is dead-lettered as
/// `insufficient_stock` (oversold).
async fn reserve(connection: &mut PgConnection, order: &OrderPlaced) -> Result<(), HandlerError> {
    // One row per SKU, locked in SKU order so concurrent workers cannot deadlock.
    let per_sku = units_per_sku(order)?;
    for (sku, quantity) in &per_sku {
        let reserved = sqlx::query(
            "UPDATE stock SET reserved = reserved + $2 WHERE sku = $1 AND on_hand - reserved >= $2",
        )
        .bind(sku)
        .bind(quantity)
        .execute(&mut *connection)
        .await?
        .rows_affected();
        if reserved == 0 {
            return Err(insufficient_stock(sku, *quantity, order.order_id));
        }
        sqlx::query("INSERT INTO stock_reservations (order_id, sku, quantity) VALUES ($1, $2, $3)")
            .bind(order.order_id)
            .bind(sku)
            .bind(quantity)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

async fn release(
    connection: &mut PgConnection,
    cancellation: &OrderCancelled,
) -> Result<(), HandlerError> {
    let reservations: Vec<(String, i64, bool)> = sqlx::query_as(
        "SELECT sku, quantity, released FROM stock_reservations WHERE order_id = $1 ORDER BY sku FOR UPDATE",
    )
    .bind(cancellation.order_id)
    .fetch_all(&mut *connection)
    .await?;
    if reservations.is_empty() {
        return Err(no_reservation(cancellation.order_id));
    }
    for (sku, quantity, released) in reservations {
        if released {
            continue;
        }
        sqlx::query("UPDATE stock SET reserved = reserved - $2 WHERE sku = $1")
            .bind(&sku)
            .bind(quantity)
            .execute(&mut *connection)
            .await?;
    }
    sqlx::query("UPDATE stock_reservations SET released = true WHERE order_id = $1")
        .bind(cancellation.order_id)
        .execute(connection)
        .await?;
    Ok(())
}

/// The units an order wants of each SKU, in SKU (byte) order; permanent
/// `order_too_large` when a sum does not fit 64 bits.
pub(super) fn units_per_sku(order: &OrderPlaced) -> Result<BTreeMap<&str, i64>, HandlerError> {
    let mut per_sku: BTreeMap<&str, i64> = BTreeMap::new();
    for line in &order.lines {
        let units = per_sku.entry(line.sku.as_str()).or_default();
        *units = units.checked_add(line.quantity).ok_or_else(|| {
            HandlerError::permanent(
                "order_too_large",
                format!(
                    "order {}: units of {} do not fit 64 bits",
                    order.order_id, line.sku
                ),
            )
        })?;
    }
    Ok(per_sku)
}

// The failures, shared with the set-wise path (`set_wise`).

pub(super) fn product_unknown(sku: &str) -> HandlerError {
    HandlerError::transient(
        "product_unknown",
        format!("product {sku} has not been listed yet"),
    )
}

/// Too little stock is transient, not permanent: delivery order is not
/// guaranteed, so a restock may still be on its way; when the attempt
/// budget is spent the order is dead-lettered (oversold).
pub(super) fn insufficient_stock(sku: &str, quantity: i64, order_id: Uuid) -> HandlerError {
    HandlerError::transient(
        "insufficient_stock",
        format!("not enough {sku} in stock to reserve {quantity} for order {order_id}"),
    )
}

pub(super) fn no_reservation(order_id: Uuid) -> HandlerError {
    HandlerError::transient(
        "order_unknown",
        format!("no reservation for order {order_id} yet"),
    )
}
