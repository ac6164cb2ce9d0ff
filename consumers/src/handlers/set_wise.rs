//! Set-wise application of a whole batch, whatever its mix of event types:
//! one call of the group's SQL function (migration `set_wise_batches`)
//! locks the batch's aggregates, applies each type with one statement per
//! level, claims what it applied in `processed_events` and, being its own
//! statement, commits — one round trip per batch.
//!
//! Levels keep each aggregate's delivery order within the batch: an
//! event's level is one more than that of the last earlier event sharing
//! an aggregate with it, so a payment after its order in the same batch
//! sees the order. The function checks the conditions the per-event
//! handlers check and reports each event it did not apply (a duplicate, or
//! a failure such as `order_unknown`), writing nothing for it. When it
//! raises instead (a constraint, bad data) nothing was written and this
//! returns `Ok(None)`: the runtime redoes the batch event by event, where
//! each failure is isolated and classified.

use std::collections::HashMap;

use chrono::SecondsFormat;
use serde::Serialize;
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Disposition, HandlerError, advisory_lock_id, classify_database_error};

/// What became of one event of a batch applied set-wise.
#[derive(Debug)]
pub enum Verdict {
    /// Applied and claimed, committed.
    Applied,
    /// Processed before, or a later copy of an event in the same batch.
    Duplicate,
    /// Not applied (nothing written, not claimed): why.
    Failed(HandlerError),
}

/// Applies `events` for `group` in one autocommit call; one verdict per
/// event, in order. `Ok(None)`: nothing was written, redo the batch event
/// by event. `Err`: the database failed (an outage, contention).
pub async fn apply_batch(
    group: ConsumerGroup,
    connection: &mut PgConnection,
    events: &[&Event],
) -> Result<Option<Vec<Verdict>>, HandlerError> {
    let mut verdicts: Vec<Option<Verdict>> = events.iter().map(|_| None).collect();
    // The SKUs each cancellation releases: those reserved before the batch,
    // and (added below) those its order reserves earlier in the batch, so
    // the cancellation comes after that order and before any later order
    // on those SKUs.
    let mut reservations = if group == ConsumerGroup::Inventory {
        super::lock_keys::reserved_skus(connection, events).await?
    } else {
        HashMap::new()
    };
    let mut levels = Levels::default();
    let mut lock_ids = Vec::new();
    let mut batch = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let fields = match fields(group, event) {
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
        match sqlx::query_as("SELECT * FROM switchyard_apply_reported($1, $2, $3)")
            .bind(group.as_str())
            .bind(&lock_ids)
            .bind(sqlx::types::Json(&batch))
            .fetch_all(&mut *connection)
            .await
        {
            Ok(rows) => rows,
            Err(error) if classify_database_error(&error) == Disposition::DeadLetter => {
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        }
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
            return Ok(None);
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
            tracing::error!(%group, index, "the set-wise function did not report on an event; redoing the batch event by event");
            return Ok(None);
        };
        complete.push(verdict);
    }
    Ok(Some(complete))
}

/// The aggregates `event` touches in `group`'s projection: what it locks
/// and what orders it after earlier events of the batch.
fn aggregate_keys(
    group: ConsumerGroup,
    event: &Event,
    reservations: &HashMap<Uuid, Vec<String>>,
) -> Vec<String> {
    let order = |id: &Uuid| format!("order:{id}");
    let sku = |sku: &str| format!("sku:{sku}");
    match (group, &event.payload) {
        (ConsumerGroup::Inventory, EventPayload::OrderPlaced(placed)) => placed
            .lines
            .iter()
            .map(|line| sku(&line.sku))
            .chain([order(&placed.order_id)])
            .collect(),
        (ConsumerGroup::Inventory, EventPayload::OrderCancelled(cancelled)) => reservations
            .get(&cancelled.order_id)
            .into_iter()
            .flatten()
            .map(|reserved| sku(reserved))
            .chain([order(&cancelled.order_id)])
            .collect(),
        _ => super::known_lock_keys(group, event).unwrap_or_default(),
    }
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
/// fields of its type — serialized straight into the call's parameter,
/// without a JSON tree per event.
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

/// The fields the group's function reads for one event type.
#[derive(Serialize)]
#[serde(untagged)]
enum Fields<'a> {
    Customer {
        customer_id: Uuid,
        email: &'a str,
        name: &'a str,
    },
    Order {
        order_id: Uuid,
        customer_id: Uuid,
        currency: &'a str,
        total: i64,
        lines: Vec<Line<'a>>,
    },
    Payment {
        order_id: Uuid,
        payment_id: Uuid,
        amount: i64,
        currency: &'a str,
    },
    PaymentFailed {
        order_id: Uuid,
        payment_id: Uuid,
        amount: i64,
        currency: &'a str,
        reason: &'a str,
    },
    Shipment {
        order_id: Uuid,
        shipment_id: Uuid,
        carrier: &'a str,
        tracking_number: &'a str,
    },
    Cancellation {
        order_id: Uuid,
    },
    Product {
        sku: &'a str,
        name: &'a str,
        category: &'a str,
        price: i64,
        currency: &'a str,
    },
    PriceChange {
        sku: &'a str,
        price: i64,
        currency: &'a str,
    },
    Restock {
        sku: &'a str,
        quantity: i64,
    },
    Reservation {
        order_id: Uuid,
        wanted: Vec<Wanted<'a>>,
    },
    Sale {
        order_id: Uuid,
        currency: &'a str,
        categories: super::sales::CategoryTotals,
    },
    SaleDay {
        order_id: Uuid,
        day: chrono::NaiveDate,
    },
}

/// An order line as `orders` reads it (`n` counts from 1).
#[derive(Serialize)]
struct Line<'a> {
    n: usize,
    sku: &'a str,
    category: &'a str,
    quantity: i64,
    unit_price: i64,
}

/// Units of one SKU an order reserves.
#[derive(Serialize)]
struct Wanted<'a> {
    sku: &'a str,
    quantity: i64,
}

/// The fields the group's function reads for `event`; `Err` for an event
/// that can never apply (a sum that does not fit 64 bits, as its handler
/// would refuse it, or a type the group does not handle). One exhaustive
/// match per group: a new event type does not compile until each group
/// decides what to do with it.
fn fields(group: ConsumerGroup, event: &Event) -> Result<Fields<'_>, HandlerError> {
    use EventPayload as P;
    let not_handled = || Err(HandlerError::not_handled(group, event));
    let cancellation = |cancelled: &shared::events::catalog::OrderCancelled| Fields::Cancellation {
        order_id: cancelled.order_id,
    };
    let fields = match group {
        ConsumerGroup::Orders => match &event.payload {
            P::CustomerRegistered(customer) => Fields::Customer {
                customer_id: customer.customer_id,
                email: &customer.email,
                name: &customer.name,
            },
            P::OrderPlaced(order) => Fields::Order {
                order_id: order.order_id,
                customer_id: order.customer_id,
                currency: &order.currency,
                total: order
                    .total_cents()
                    .ok_or_else(super::orders::total_overflow)?,
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
            P::OrderCancelled(cancelled) => cancellation(cancelled),
            P::ProductListed(_) | P::ProductPriceChanged(_) | P::InventoryRestocked(_) => {
                return not_handled();
            }
        },
        ConsumerGroup::Inventory => match &event.payload {
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
                wanted: super::inventory::units_per_sku(order)?
                    .into_iter()
                    .map(|(sku, quantity)| Wanted { sku, quantity })
                    .collect(),
            },
            P::OrderCancelled(cancelled) => cancellation(cancelled),
            P::CustomerRegistered(_)
            | P::PaymentCaptured(_)
            | P::PaymentFailed(_)
            | P::OrderShipped(_) => return not_handled(),
        },
        ConsumerGroup::Sales => match &event.payload {
            P::OrderPlaced(order) => Fields::Sale {
                order_id: order.order_id,
                currency: &order.currency,
                categories: super::sales::category_totals(order)
                    .ok_or_else(|| super::sales::too_large(order))?,
            },
            P::PaymentCaptured(payment) => Fields::SaleDay {
                order_id: payment.order_id,
                day: event.time.date_naive(),
            },
            P::OrderCancelled(cancelled) => cancellation(cancelled),
            P::CustomerRegistered(_)
            | P::ProductListed(_)
            | P::ProductPriceChanged(_)
            | P::InventoryRestocked(_)
            | P::PaymentFailed(_)
            | P::OrderShipped(_) => return not_handled(),
        },
    };
    Ok(fields)
}

/// The handler error of a failure the function reported, as the per-event
/// handler words it.
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
