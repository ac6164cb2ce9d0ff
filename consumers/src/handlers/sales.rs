//! The `sales` group: per-order category totals, counted when an order is
//! paid and uncounted when it is cancelled; the `sales_daily` view sums
//! them per day, category and currency.
//!
//! The rule itself is the group's database function
//! (`switchyard_apply_sales`); this module says which fields of each event
//! it reads, and words the failures it reports.

use std::collections::BTreeMap;

use shared::events::catalog::OrderPlaced;
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;

use super::fields::Fields;
use runtime::handler::HandlerError;

pub(super) type CategoryTotals = BTreeMap<String, CategoryTotal>;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub(super) struct CategoryTotal {
    revenue_cents: i64,
    units: i64,
}

/// What `switchyard_apply_sales` reads of `event`; `Err` for an event it
/// must never be given (sums that do not fit 64 bits, a type this group
/// does not handle). Exhaustive, as for every group.
pub(super) fn fields(event: &Event) -> Result<Fields<'_>, HandlerError> {
    use EventPayload as P;
    Ok(match &event.payload {
        P::OrderPlaced(order) => Fields::Sale {
            order_id: order.order_id,
            currency: &order.currency,
            categories: category_totals(order).ok_or_else(|| too_large(order))?,
        },
        P::PaymentCaptured(payment) => Fields::SaleDay {
            order_id: payment.order_id,
            day: event.time.date_naive(),
        },
        P::OrderCancelled(cancelled) => Fields::Cancellation {
            order_id: cancelled.order_id,
        },
        P::CustomerRegistered(_)
        | P::ProductListed(_)
        | P::ProductPriceChanged(_)
        | P::InventoryRestocked(_)
        | P::PaymentFailed(_)
        | P::OrderShipped(_) => {
            return Err(HandlerError::not_handled(ConsumerGroup::Sales, event));
        }
    })
}

/// Revenue and units of an order per category; `None` when a sum does not
/// fit 64 bits (validation's bounds rule that out for decoded events; the
/// arithmetic is checked all the same, never wrapped nor a panic).
fn category_totals(order: &OrderPlaced) -> Option<CategoryTotals> {
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
fn too_large(order: &OrderPlaced) -> HandlerError {
    HandlerError::permanent(
        "order_too_large",
        format!("order {}: its totals do not fit 64 bits", order.order_id),
    )
}
