//! The `orders` group: customers, orders and their lines, payments and
//! shipments; status placed → paid → shipped, or cancelled.
//!
//! The rule itself is the group's database function
//! (`switchyard_apply_orders`); this module says which fields of each
//! event it reads, and words the failures it reports.

use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use uuid::Uuid;

use super::fields::{Fields, Line};
use runtime::handler::HandlerError;

/// What `switchyard_apply_orders` reads of `event`; `Err` for an event it
/// must never be given (a total that does not fit 64 bits, a type this
/// group does not handle). Exhaustive: a new event type does not compile
/// until this group decides what to do with it.
pub(super) fn fields(event: &Event) -> Result<Fields<'_>, HandlerError> {
    use EventPayload as P;
    Ok(match &event.payload {
        P::CustomerRegistered(customer) => Fields::Customer {
            customer_id: customer.customer_id,
            email: &customer.email,
            name: &customer.name,
        },
        P::OrderPlaced(order) => Fields::Order {
            order_id: order.order_id,
            customer_id: order.customer_id,
            currency: &order.currency,
            total: order.total_cents().ok_or_else(total_overflow)?,
            lines: order
                .lines
                .iter()
                .enumerate()
                .map(|(number, line)| Line {
                    n: number + 1,
                    sku: &line.sku,
                    category: &line.category,
                    quantity: line.quantity,
                    unit_price: line.unit_price_cents,
                })
                .collect(),
        },
        P::PaymentCaptured(payment) => Fields::Payment {
            order_id: payment.order_id,
            payment_id: payment.payment_id,
            amount: payment.amount_cents,
            currency: &payment.currency,
        },
        P::PaymentFailed(payment) => Fields::PaymentFailed {
            order_id: payment.order_id,
            payment_id: payment.payment_id,
            amount: payment.amount_cents,
            currency: &payment.currency,
            reason: &payment.reason,
        },
        P::OrderShipped(shipment) => Fields::Shipment {
            order_id: shipment.order_id,
            shipment_id: shipment.shipment_id,
            carrier: &shipment.carrier,
            tracking_number: &shipment.tracking_number,
        },
        P::OrderCancelled(cancelled) => Fields::Cancellation {
            order_id: cancelled.order_id,
        },
        P::ProductListed(_) | P::ProductPriceChanged(_) | P::InventoryRestocked(_) => {
            return Err(HandlerError::not_handled(ConsumerGroup::Orders, event));
        }
    })
}

// The failures the function reports, worded.

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
