//! The aggregates an event touches, so the runtime can lock them all, in one
//! global order, before applying a batch: batches that share an aggregate
//! then wait for each other instead of deadlocking.

use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use sqlx::PgConnection;

/// The aggregate keys `event` will modify in `group`'s projection.
pub async fn lock_keys(
    group: ConsumerGroup,
    connection: &mut PgConnection,
    event: &Event,
) -> Result<Vec<String>, sqlx::Error> {
    if let Some(keys) = known_lock_keys(group, event) {
        return Ok(keys);
    }
    // Only a cancellation's inventory keys need a lookup: the SKUs its
    // reservation holds (none yet means the handler fails transiently).
    let order_id = match &event.payload {
        EventPayload::OrderCancelled(cancelled) => cancelled.order_id,
        _ => return Ok(Vec::new()),
    };
    let skus: Vec<String> =
        sqlx::query_scalar("SELECT sku FROM stock_reservations WHERE order_id = $1")
            .bind(order_id)
            .fetch_all(connection)
            .await?;
    Ok(skus.into_iter().map(|sku| format!("sku:{sku}")).collect())
}

/// The aggregate keys `event` will modify in `group`'s projection, when the
/// event alone tells them; `None` when they need a lookup.
///
/// `order.placed` only inserts rows in `orders` and `sales`, so it locks
/// nothing there: a later event on the order waits for nothing and fails
/// transiently until the order is committed, and copies of one event are
/// claimed in ascending id order (see `bulk`), so they wait rather than deadlock.
pub fn known_lock_keys(group: ConsumerGroup, event: &Event) -> Option<Vec<String>> {
    let order = |id: &uuid::Uuid| vec![format!("order:{id}")];
    let keys = match (group, &event.payload) {
        (ConsumerGroup::Inventory, EventPayload::OrderPlaced(placed)) => placed
            .lines
            .iter()
            .map(|line| format!("sku:{}", line.sku))
            .collect(),
        (ConsumerGroup::Inventory, EventPayload::OrderCancelled(_)) => return None,
        (_, EventPayload::OrderPlaced(_)) => Vec::new(),
        (_, EventPayload::CustomerRegistered(e)) => vec![format!("customer:{}", e.customer_id)],
        (_, EventPayload::ProductListed(e)) => vec![format!("sku:{}", e.sku)],
        (_, EventPayload::ProductPriceChanged(e)) => vec![format!("sku:{}", e.sku)],
        (_, EventPayload::InventoryRestocked(e)) => vec![format!("sku:{}", e.sku)],
        (_, EventPayload::PaymentCaptured(e)) => order(&e.order_id),
        (_, EventPayload::PaymentFailed(e)) => order(&e.order_id),
        (_, EventPayload::OrderShipped(e)) => order(&e.order_id),
        (_, EventPayload::OrderCancelled(e)) => order(&e.order_id),
    };
    Some(keys)
}

/// A stable 64-bit advisory-lock id for `key` within `group` (FNV-1a: the
/// same in every build, so workers of different versions agree).
pub fn advisory_lock_id(group: ConsumerGroup, key: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in group.as_str().bytes().chain([b'/']).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ids_are_stable_and_separate_groups() {
        let orders = advisory_lock_id(ConsumerGroup::Orders, "order:1");
        assert_eq!(orders, advisory_lock_id(ConsumerGroup::Orders, "order:1"));
        assert_ne!(orders, advisory_lock_id(ConsumerGroup::Sales, "order:1"));
        assert_ne!(orders, advisory_lock_id(ConsumerGroup::Orders, "order:2"));
    }
}
