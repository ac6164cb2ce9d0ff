//! The `orders` group: customers, orders and their lines, payments and
//! shipments; status placed → paid → shipped, or cancelled.

use shared::events::catalog::*;
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
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
        // Not routed to this group: refused, never acked with no effect.
        EventPayload::ProductListed(_)
        | EventPayload::ProductPriceChanged(_)
        | EventPayload::InventoryRestocked(_) => {
            Err(HandlerError::not_handled(ConsumerGroup::Orders, event))
        }
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
    let total = order.total_cents().ok_or_else(total_overflow)?;
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
        return Err(duplicate_order(order.order_id));
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

/// The order's status before `statement` ran — `statement` selects it
/// `FOR UPDATE` in a CTE named `current` and writes only through `current`,
/// so each handler is one round trip; transient when the order has not been
/// seen yet (its `order.placed` may come later), and then nothing was written.
async fn status_before(
    statement: sqlx::query::QueryScalar<'_, sqlx::Postgres, String, sqlx::postgres::PgArguments>,
    connection: &mut PgConnection,
    order_id: Uuid,
) -> Result<String, HandlerError> {
    statement
        .fetch_optional(connection)
        .await?
        .ok_or_else(|| order_unknown(order_id))
}

async fn capture(
    connection: &mut PgConnection,
    event: &Event,
    payment: &PaymentCaptured,
) -> Result<(), HandlerError> {
    // A capture never moves a cancelled or shipped order backwards.
    let statement = sqlx::query_scalar(
        "WITH current AS (SELECT status FROM orders WHERE order_id = $1 FOR UPDATE), \
              recorded AS ( \
                INSERT INTO payments (payment_id, order_id, outcome, amount_cents, currency, occurred_at) \
                SELECT $2, $1, 'captured', $3, $4, $5 FROM current \
                ON CONFLICT (payment_id) DO NOTHING), \
              updated AS ( \
                UPDATE orders SET status = CASE WHEN orders.status = 'placed' THEN 'paid' ELSE orders.status END, \
                                  paid_at = COALESCE(paid_at, $5) \
                FROM current WHERE orders.order_id = $1) \
         SELECT status FROM current",
    )
    .bind(payment.order_id)
    .bind(payment.payment_id)
    .bind(payment.amount_cents)
    .bind(&payment.currency)
    .bind(event.time);
    status_before(statement, connection, payment.order_id).await?;
    Ok(())
}

async fn fail_payment(
    connection: &mut PgConnection,
    event: &Event,
    payment: &PaymentFailed,
) -> Result<(), HandlerError> {
    let statement = sqlx::query_scalar(
        "WITH current AS (SELECT status FROM orders WHERE order_id = $1 FOR UPDATE), \
              recorded AS ( \
                INSERT INTO payments (payment_id, order_id, outcome, amount_cents, currency, reason, occurred_at) \
                SELECT $2, $1, 'failed', $3, $4, $5, $6 FROM current \
                ON CONFLICT (payment_id) DO NOTHING) \
         SELECT status FROM current",
    )
    .bind(payment.order_id)
    .bind(payment.payment_id)
    .bind(payment.amount_cents)
    .bind(&payment.currency)
    .bind(&payment.reason)
    .bind(event.time);
    status_before(statement, connection, payment.order_id).await?;
    Ok(())
}

async fn ship(
    connection: &mut PgConnection,
    event: &Event,
    shipment: &OrderShipped,
) -> Result<(), HandlerError> {
    // Written only when the order is paid (or already shipped).
    let statement = sqlx::query_scalar(
        "WITH current AS (SELECT status FROM orders WHERE order_id = $1 FOR UPDATE), \
              recorded AS ( \
                INSERT INTO shipments (shipment_id, order_id, carrier, tracking_number, shipped_at) \
                SELECT $2, $1, $3, $4, $5 FROM current WHERE current.status IN ('paid', 'shipped') \
                ON CONFLICT (shipment_id) DO NOTHING), \
              updated AS ( \
                UPDATE orders SET status = 'shipped', shipped_at = COALESCE(shipped_at, $5) \
                FROM current WHERE orders.order_id = $1 AND current.status IN ('paid', 'shipped')) \
         SELECT status FROM current",
    )
    .bind(shipment.order_id)
    .bind(shipment.shipment_id)
    .bind(&shipment.carrier)
    .bind(&shipment.tracking_number)
    .bind(event.time);
    match status_before(statement, connection, shipment.order_id)
        .await?
        .as_str()
    {
        "cancelled" => Err(ship_cancelled_order(shipment.order_id)),
        "placed" => Err(order_unpaid(shipment.order_id)),
        _ => Ok(()),
    }
}

async fn cancel(
    connection: &mut PgConnection,
    event: &Event,
    cancellation: &OrderCancelled,
) -> Result<(), HandlerError> {
    // Written only when the order has not shipped.
    let statement = sqlx::query_scalar(
        "WITH current AS (SELECT status FROM orders WHERE order_id = $1 FOR UPDATE), \
              updated AS ( \
                UPDATE orders SET status = 'cancelled', cancelled_at = COALESCE(cancelled_at, $2) \
                FROM current WHERE orders.order_id = $1 AND current.status <> 'shipped') \
         SELECT status FROM current",
    )
    .bind(cancellation.order_id)
    .bind(event.time);
    if status_before(statement, connection, cancellation.order_id).await? == "shipped" {
        return Err(cancel_shipped_order(cancellation.order_id));
    }
    Ok(())
}

// The failures, shared with the set-wise path (`set_wise`).

pub(super) fn total_overflow() -> HandlerError {
    HandlerError::permanent("total_overflow", "order total overflows")
}

pub(super) fn duplicate_order(order_id: Uuid) -> HandlerError {
    HandlerError::permanent(
        "duplicate_order",
        format!("order {order_id} was already placed by another event"),
    )
}

/// Also the `sales` group's: its order row comes from the same event.
pub(super) fn order_unknown(order_id: Uuid) -> HandlerError {
    HandlerError::transient(
        "order_unknown",
        format!("order {order_id} has not been placed yet"),
    )
}

pub(super) fn ship_cancelled_order(order_id: Uuid) -> HandlerError {
    HandlerError::permanent(
        "ship_cancelled_order",
        format!("order {order_id} is cancelled and cannot ship"),
    )
}

pub(super) fn order_unpaid(order_id: Uuid) -> HandlerError {
    HandlerError::transient(
        "order_unpaid",
        format!("order {order_id} is not paid yet; its payment may still arrive"),
    )
}

pub(super) fn cancel_shipped_order(order_id: Uuid) -> HandlerError {
    HandlerError::permanent(
        "cancel_shipped_order",
        format!("order {order_id} has shipped and cannot be cancelled"),
    )
}
