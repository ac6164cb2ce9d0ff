//! The fields a group's database function reads of each event type: one
//! JSON object per event, serialized straight into the call's parameter
//! (read there by `jsonb_to_recordset`) without a JSON tree per event.
//! Each group's module maps its event types to these ([`fields`]).

use serde::Serialize;
use shared::events::Event;
use shared::groups::ConsumerGroup;
use uuid::Uuid;

use runtime::handler::HandlerError;

/// What `group`'s function reads of `event`; `Err` for an event that can
/// never apply (a sum that does not fit 64 bits, or a type the group does
/// not handle).
pub(super) fn fields(group: ConsumerGroup, event: &Event) -> Result<Fields<'_>, HandlerError> {
    match group {
        ConsumerGroup::Orders => super::orders::fields(event),
        ConsumerGroup::Inventory => super::inventory::fields(event),
        ConsumerGroup::Sales => super::sales::fields(event),
    }
}

/// The fields the group's function reads for one event type.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum Fields<'a> {
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
pub(super) struct Line<'a> {
    pub n: usize,
    pub sku: &'a str,
    pub category: &'a str,
    pub quantity: i64,
    pub unit_price: i64,
}

/// Units of one SKU an order reserves.
#[derive(Serialize)]
pub(super) struct Wanted<'a> {
    pub sku: &'a str,
    pub quantity: i64,
}
