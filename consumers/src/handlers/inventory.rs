//! The `inventory` group: products and their prices, stock per SKU —
//! restocks add, placed orders reserve, cancellations release.
//!
//! The rule itself is the group's database function
//! (`switchyard_apply_inventory`); this module says which fields of each
//! event it reads, and words the failures it reports.

use std::collections::BTreeMap;

use shared::events::catalog::OrderPlaced;
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use uuid::Uuid;

use super::fields::{Fields, Wanted};
use runtime::handler::HandlerError;

/// What `switchyard_apply_inventory` reads of `event`; `Err` for an event
/// it must never be given (units that do not fit 64 bits, a type this
/// group does not handle). Exhaustive, as for every group.
pub(super) fn fields(event: &Event) -> Result<Fields<'_>, HandlerError> {
    use EventPayload as P;
    Ok(match &event.payload {
        P::ProductListed(product) => Fields::Product {
            sku: &product.sku,
            name: &product.name,
            category: &product.category,
            price: product.price_cents,
            currency: &product.currency,
        },
        P::ProductPriceChanged(change) => Fields::PriceChange {
            sku: &change.sku,
            price: change.new_price_cents,
            currency: &change.currency,
        },
        P::InventoryRestocked(restock) => Fields::Restock {
            sku: &restock.sku,
            quantity: restock.quantity,
        },
        P::OrderPlaced(order) => Fields::Reservation {
            order_id: order.order_id,
            wanted: units_per_sku(order)?
                .into_iter()
                .map(|(sku, quantity)| Wanted { sku, quantity })
                .collect(),
        },
        P::OrderCancelled(cancelled) => Fields::Cancellation {
            order_id: cancelled.order_id,
        },
        P::CustomerRegistered(_)
        | P::PaymentCaptured(_)
        | P::PaymentFailed(_)
        | P::OrderShipped(_) => {
            return Err(HandlerError::not_handled(ConsumerGroup::Inventory, event));
        }
    })
}

/// The units an order wants of each SKU, in SKU (byte) order; permanent
/// `order_too_large` when a sum does not fit 64 bits.
fn units_per_sku(order: &OrderPlaced) -> Result<BTreeMap<&str, i64>, HandlerError> {
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

// The failures the function reports, worded.

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
