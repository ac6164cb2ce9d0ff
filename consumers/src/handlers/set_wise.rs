//! Applying events: one call of the group's SQL function (its source in
//! `db/functions/<group>.sql`) locks the events' aggregates, applies each
//! type with one statement per level, claims what it applied in
//! `processed_events`, and reports each event it did not apply (a
//! duplicate, or a failure such as `order_unknown`), writing nothing for
//! it. The function is the store's only copy of each rule: a whole batch
//! goes through it in one round trip, and the event-by-event path calls it
//! with one event at a time.
//!
//! Levels keep each aggregate's delivery order within the batch: an
//! event's level is one more than that of the last earlier event sharing
//! an aggregate with it, so a payment after its order in the same batch
//! sees the order. When the function raises (a constraint, bad data)
//! nothing was written and this returns the error: the runtime redoes the
//! batch event by event, where each failure is isolated and classified.

use std::collections::HashMap;

use chrono::SecondsFormat;
use serde::Serialize;
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use sqlx::PgConnection;
use uuid::Uuid;

use super::fields::Fields;
use super::lock_keys::{advisory_lock_id, aggregate_keys, reserved_skus};
use runtime::handler::{HandlerError, Verdict};

/// Applies `events` for `group` in one call of the group's function; one
/// verdict per event, in order. On a connection in autocommit mode the
/// call is its own transaction (the set-wise path); inside a transaction
/// it is part of it (the event-by-event path calls it with one event in a
/// savepoint). `Err`: nothing was written — the call raised (a constraint
/// or bad data: [`HandlerError::disposition`] is `DeadLetter`; redo the
/// batch event by event, where the event at fault is found), the database
/// failed (an outage, contention), or the function's report does not match
/// this build (`set_wise_mismatch`, transient).
pub async fn apply_batch(
    group: ConsumerGroup,
    connection: &mut PgConnection,
    events: &[&Event],
) -> Result<Vec<Verdict>, HandlerError> {
    let mut verdicts: Vec<Option<Verdict>> = events.iter().map(|_| None).collect();
    // The SKUs each cancellation releases: those reserved before the batch,
    // and (added below) those its order reserves earlier in the batch, so
    // the cancellation comes after that order and before any later order
    // on those SKUs.
    let mut reservations = if group == ConsumerGroup::Inventory {
        reserved_skus(connection, events).await?
    } else {
        HashMap::new()
    };
    let mut levels = Levels::default();
    let mut lock_ids = Vec::new();
    let mut batch = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let fields = match super::fields::fields(group, event) {
            Ok(fields) => fields,
            Err(error) => {
                verdicts[index] = Some(Verdict::Failed(error));
                continue;
            }
        };
        let keys = aggregate_keys(group, event, &reservations);
        let reserves_stock = match (group, &event.payload) {
            (ConsumerGroup::Inventory, EventPayload::OrderPlaced(placed)) => {
                let skus = reservations.entry(placed.order_id).or_default();
                skus.extend(placed.lines.iter().map(|line| line.sku.clone()));
                true
            }
            _ => false,
        };
        lock_ids.extend(keys.iter().map(|key| advisory_lock_id(group, key)));
        batch.push(Entry {
            i: index,
            id: event.id,
            event_type: event.event_type().as_str(),
            lvl: levels.place(keys, reserves_stock),
            t: event.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            fields,
        });
    }
    lock_ids.sort_unstable();
    lock_ids.dedup();
    let reported: Vec<(i32, String, Option<String>, Option<i64>)> = if batch.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as("SELECT * FROM switchyard_apply_reported($1, $2, $3)")
            .bind(group.as_str())
            .bind(&lock_ids)
            .bind(sqlx::types::Json(&batch))
            .fetch_all(&mut *connection)
            .await?
    };
    for (index, verdict, sku, quantity) in reported {
        // Only indexes this batch sent come back, each once; anything else
        // means the database's functions do not match this build: redo the
        // batch per event (what the call committed is claimed, so it is a
        // duplicate there).
        let sent = usize::try_from(index)
            .ok()
            .filter(|index| batch.iter().any(|entry| entry.i == *index));
        let Some(index) = sent.filter(|index| verdicts[*index].is_none()) else {
            tracing::error!(%group, index, "the set-wise function reported an event not sent, or twice");
            return Err(mismatch(group, "reported an event not sent, or twice"));
        };
        let event = events[index];
        verdicts[index] = Some(match verdict.as_str() {
            "applied" => Verdict::Applied,
            "duplicate" => Verdict::Duplicate,
            kind => Verdict::Failed(failure(group, kind, event, sku, quantity)),
        });
    }
    // Every event has its verdict: from the database, or refused before
    // the call. One without is an error, never taken as applied.
    let mut complete = Vec::with_capacity(verdicts.len());
    for (index, verdict) in verdicts.into_iter().enumerate() {
        let Some(verdict) = verdict else {
            tracing::error!(%group, index, "the set-wise function did not report on an event");
            return Err(mismatch(group, "did not report on an event"));
        };
        complete.push(verdict);
    }
    Ok(complete)
}

/// The function's report does not match this build (a database migrated
/// by another version): transient, so the events wait for a matching
/// build rather than being taken as applied or dead-lettered.
fn mismatch(group: ConsumerGroup, what: &str) -> HandlerError {
    HandlerError::transient(
        "set_wise_mismatch",
        format!("the {group} batch function {what}"),
    )
}

/// Each event's level: one more than the last earlier event sharing a key,
/// except that an order placed in `inventory` joins the level of the order
/// placed last on a SKU it shares: the group's function reserves the orders
/// of one level in delivery order, summing each SKU's demand over them
/// (migration `inventory_order_levels`). Any other event on the SKU, or a
/// shared order key, still starts a new level.
#[derive(Default)]
struct Levels {
    /// Per key: the level of the last event on it, and whether that event
    /// was an order placed in `inventory`.
    last: HashMap<String, (u32, bool)>,
}

impl Levels {
    fn place(&mut self, keys: Vec<String>, reserves_stock: bool) -> u32 {
        let level = keys
            .iter()
            .filter_map(|key| {
                self.last.get(key).map(|&(level, reserved)| {
                    if reserves_stock && reserved && key.starts_with("sku:") {
                        level
                    } else {
                        level + 1
                    }
                })
            })
            .max()
            .unwrap_or(0);
        for key in keys {
            self.last.insert(key, (level, reserves_stock));
        }
        level
    }
}

/// One event of a batch as the group's function reads it
/// (`jsonb_to_recordset`): its index, id, type, level, time and the
/// fields of its type.
#[derive(Serialize)]
struct Entry<'a> {
    i: usize,
    id: Uuid,
    #[serde(rename = "type")]
    event_type: &'static str,
    lvl: u32,
    t: String,
    #[serde(flatten)]
    fields: Fields<'a>,
}

/// The handler error of a failure the function reported, worded by the
/// group's module.
fn failure(
    group: ConsumerGroup,
    kind: &str,
    event: &Event,
    sku: Option<String>,
    quantity: Option<i64>,
) -> HandlerError {
    use super::{inventory, orders};
    let order_id = match &event.payload {
        EventPayload::OrderPlaced(e) => e.order_id,
        EventPayload::PaymentCaptured(e) => e.order_id,
        EventPayload::PaymentFailed(e) => e.order_id,
        EventPayload::OrderShipped(e) => e.order_id,
        EventPayload::OrderCancelled(e) => e.order_id,
        _ => Uuid::nil(),
    };
    match (kind, &event.payload) {
        ("duplicate_order", _) => orders::duplicate_order(order_id),
        ("order_unknown", EventPayload::OrderCancelled(_)) if group == ConsumerGroup::Inventory => {
            inventory::no_reservation(order_id)
        }
        ("order_unknown", _) => orders::order_unknown(order_id),
        ("ship_cancelled_order", _) => orders::ship_cancelled_order(order_id),
        ("order_unpaid", _) => orders::order_unpaid(order_id),
        ("cancel_shipped_order", _) => orders::cancel_shipped_order(order_id),
        ("product_unknown", EventPayload::ProductPriceChanged(change)) => {
            inventory::product_unknown(&change.sku)
        }
        ("insufficient_stock", _) => inventory::insufficient_stock(
            sku.as_deref().unwrap_or_default(),
            quantity.unwrap_or_default(),
            order_id,
        ),
        // The function reports only the kinds above; anything else is a
        // mismatch between this build and the database's functions.
        (other, _) => HandlerError::transient(
            "set_wise_unknown_failure",
            format!("the {group} batch function reported an unknown failure {other:?}"),
        ),
    }
}
