//! The `orders` group: customers, orders and their lines, payments and
//! shipments; status placed → paid → shipped, or cancelled.

use shared::events::catalog::*;
use shared::events::{Event, EventPayload};
use sqlx::PgConnection;
use uuid::Uuid;

use super::HandlerError;

pub async fn apply(connection: &mut PgConnection, event: &Event) -> Result<(), HandlerError> {
    match &event.payload {
        EventPayload::CustomerRegistered(customer) => register(connection, event, customer).await,
        EventPayload::OrderPlaced(order) => place(connection, event, order).await,
        EventPayload::PaymentCaptured(payment) => capture(connection, event, payment).await,
        EventPayload::PaymentFailed(payment) => fail_payment(connection, event, payment).await,
        EventPayload::OrderShipped(shipment) => ship(connection, event, shipment).await,
        EventPayload::OrderCancelled(cancellation) => cancel(connection, event, cancellation).await,
        // Routed to other groups only; nothing to do if one arrives here.
        EventPayload::ProductListed(_)
        | EventPayload::ProductPriceChanged(_)
        | EventPayload::InventoryRestocked(_) => Ok(()),
    }
}

async fn register(
    connection: &mut PgConnection,
    event: &Event,
    customer: &CustomerRegistered,
) -> Result<(), HandlerError> {
    sqlx::query(
        "INSERT INTO customers (customer_id, email, name, registered_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(customer.customer_id)
    .bind(&customer.email)
    .bind(&customer.name)
    .bind(event.time)
    .execute(connection)
    .await?;
    Ok(())
}

async fn place(
    connection: &mut PgConnection,
    event: &Event,
    order: &OrderPlaced,
) -> Result<(), HandlerError> {
    let total = order
        .total_cents()
        .ok_or_else(|| HandlerError::permanent("total_overflow", "order total overflows"))?;
    let inserted = sqlx::query(
        "INSERT INTO orders (order_id, customer_id, currency, total_cents, status, placed_at) \
         VALUES ($1, $2, $3, $4, 'placed', $5) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order.order_id)
    .bind(order.customer_id)
    .bind(&order.currency)
    .bind(total)
    .bind(event.time)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(HandlerError::permanent(
            "duplicate_order",
            format!(
                "order {} was already placed by another event",
                order.order_id
            ),
        ));
    }
    insert_lines(connection, order).await
}

async fn insert_lines(
    connection: &mut PgConnection,
    order: &OrderPlaced,
) -> Result<(), HandlerError> {
    let numbers: Vec<i32> = (1..=order.lines.len() as i32).collect();
    let skus: Vec<&str> = order.lines.iter().map(|line| line.sku.as_str()).collect();
    let categories: Vec<&str> = order
        .lines
        .iter()
        .map(|line| line.category.as_str())
        .collect();
    let quantities: Vec<i64> = order.lines.iter().map(|line| line.quantity).collect();
    let prices: Vec<i64> = order
        .lines
        .iter()
        .map(|line| line.unit_price_cents)
        .collect();
    sqlx::query(
        "INSERT INTO order_lines (order_id, line_number, sku, category, quantity, unit_price_cents) \
         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])",
    )
    .bind(order.order_id)
    .bind(&numbers)
    .bind(&skus)
    .bind(&categories)
    .bind(&quantities)
    .bind(&prices)
    .execute(connection)
    .await?;
    Ok(())
}

/// The order's status, locked for the rest of the transaction; transient
/// when the order has not been seen yet (its `order.placed` may come later).
async fn locked_status(
    connection: &mut PgConnection,
    order_id: Uuid,
) -> Result<String, HandlerError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(connection)
            .await?;
    status.ok_or_else(|| {
        HandlerError::transient(
            "order_unknown",
            format!("order {order_id} has not been placed yet"),
        )
    })
}

async fn record_payment(
    connection: &mut PgConnection,
    event: &Event,
    (payment_id, order_id, amount, currency): (Uuid, Uuid, i64, &str),
    outcome: &str,
    reason: Option<&str>,
) -> Result<(), HandlerError> {
    sqlx::query(
        "INSERT INTO payments (payment_id, order_id, outcome, amount_cents, currency, reason, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (payment_id) DO NOTHING",
    )
    .bind(payment_id)
    .bind(order_id)
    .bind(outcome)
    .bind(amount)
    .bind(currency)
    .bind(reason)
    .bind(event.time)
    .execute(connection)
    .await?;
    Ok(())
}

async fn capture(
    connection: &mut PgConnection,
    event: &Event,
    payment: &PaymentCaptured,
) -> Result<(), HandlerError> {
    let status = locked_status(connection, payment.order_id).await?;
    let key = (
        payment.payment_id,
        payment.order_id,
        payment.amount_cents,
        payment.currency.as_str(),
    );
    record_payment(connection, event, key, "captured", None).await?;
    // A capture never moves a cancelled or shipped order backwards.
    let next = if status == "placed" {
        "paid"
    } else {
        status.as_str()
    };
    sqlx::query(
        "UPDATE orders SET status = $2, paid_at = COALESCE(paid_at, $3) WHERE order_id = $1",
    )
    .bind(payment.order_id)
    .bind(next)
    .bind(event.time)
    .execute(connection)
    .await?;
    Ok(())
}

async fn fail_payment(
    connection: &mut PgConnection,
    event: &Event,
    payment: &PaymentFailed,
) -> Result<(), HandlerError> {
    locked_status(connection, payment.order_id).await?;
    let key = (
        payment.payment_id,
        payment.order_id,
        payment.amount_cents,
        payment.currency.as_str(),
    );
    record_payment(connection, event, key, "failed", Some(&payment.reason)).await
}

async fn ship(
    connection: &mut PgConnection,
    event: &Event,
    shipment: &OrderShipped,
) -> Result<(), HandlerError> {
    let status = locked_status(connection, shipment.order_id).await?;
    match status.as_str() {
        "cancelled" => {
            return Err(HandlerError::permanent(
                "ship_cancelled_order",
                format!("order {} is cancelled and cannot ship", shipment.order_id),
            ));
        }
        "placed" => {
            return Err(HandlerError::transient(
                "order_unpaid",
                format!(
                    "order {} is not paid yet; its payment may still arrive",
                    shipment.order_id
                ),
            ));
        }
        _ => {}
    }
    sqlx::query(
        "INSERT INTO shipments (shipment_id, order_id, carrier, tracking_number, shipped_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (shipment_id) DO NOTHING",
    )
    .bind(shipment.shipment_id)
    .bind(shipment.order_id)
    .bind(&shipment.carrier)
    .bind(&shipment.tracking_number)
    .bind(event.time)
    .execute(&mut *connection)
    .await?;
    sqlx::query("UPDATE orders SET status = 'shipped', shipped_at = COALESCE(shipped_at, $2) WHERE order_id = $1")
        .bind(shipment.order_id)
        .bind(event.time)
        .execute(connection)
        .await?;
    Ok(())
}

async fn cancel(
    connection: &mut PgConnection,
    event: &Event,
    cancellation: &OrderCancelled,
) -> Result<(), HandlerError> {
    let status = locked_status(connection, cancellation.order_id).await?;
    if status == "shipped" {
        return Err(HandlerError::permanent(
            "cancel_shipped_order",
            format!(
                "order {} has shipped and cannot be cancelled",
                cancellation.order_id
            ),
        ));
    }
    sqlx::query("UPDATE orders SET status = 'cancelled', cancelled_at = COALESCE(cancelled_at, $2) WHERE order_id = $1")
        .bind(cancellation.order_id)
        .bind(event.time)
        .execute(connection)
        .await?;
    Ok(())
}
