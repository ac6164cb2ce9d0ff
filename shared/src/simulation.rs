//! A simulated online store: customers register, products are listed and
//! restocked, orders are placed, then paid (or their payment fails), shipped
//! or cancelled, in plausible proportions and causal order.

use crate::events::catalog::*;
use crate::events::{Event, EventPayload};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// A share of the traffic given on a command line (`--invalid-share`,
/// `--outbox-share`): a fraction from 0 to 1, such as `0.05`. Anything
/// else — above 1, negative, `NaN` — is refused rather than clamped.
pub fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!(
            "{text:?} is not a fraction from 0 to 1, such as 0.05"
        )),
    }
}

/// The `source` of every generated event.
pub const SOURCE: &str = "/switchyard/load-generator";

const CATEGORIES: [&str; 8] = [
    "kitchen", "garden", "books", "toys", "audio", "outdoor", "office", "bath",
];
const CURRENCY: &str = "EUR";
const CARRIERS: [&str; 3] = ["DHL", "UPS", "PostNL"];

struct Product {
    sku: String,
    category: &'static str,
    price_cents: i64,
    /// Units neither sold nor reserved, as the store believes.
    available: i64,
}

struct OpenOrder {
    placed: Event,
    total_cents: i64,
}

/// An endless, repeatable (per seed) stream of valid store events.
pub struct StoreTraffic {
    random: StdRng,
    customers: Vec<Uuid>,
    products: Vec<Product>,
    awaiting_payment: Vec<OpenOrder>,
    awaiting_shipment: Vec<OpenOrder>,
    pending: std::collections::VecDeque<Event>,
}

impl StoreTraffic {
    /// A store that starts with a few products in stock and a few customers.
    pub fn new(seed: u64) -> Self {
        let mut store = Self {
            random: StdRng::seed_from_u64(seed),
            customers: Vec::new(),
            products: Vec::new(),
            awaiting_payment: Vec::new(),
            awaiting_shipment: Vec::new(),
            pending: std::collections::VecDeque::new(),
        };
        for _ in 0..24 {
            store.list_product();
        }
        for _ in 0..10 {
            store.register_customer();
        }
        store
    }

    /// The next event.
    pub fn next_event(&mut self) -> Event {
        while self.pending.is_empty() {
            self.step();
        }
        // The loop above guarantees an event is queued.
        self.pending.pop_front().unwrap_or_else(|| unreachable!())
    }

    fn step(&mut self) {
        let roll = self.random.random_range(0..100);
        match roll {
            0..=3 => self.register_customer(),
            4..=5 => self.list_product(),
            6..=7 => self.change_price(),
            8..=12 => self.restock(),
            13..=49 => self.place_order(),
            50..=76 => self.settle_payment(),
            77..=94 => self.ship(),
            _ => self.cancel(),
        }
    }

    fn emit(&mut self, payload: EventPayload) -> Event {
        let event = Event::new(SOURCE, payload);
        self.pending.push_back(event.clone());
        event
    }

    fn register_customer(&mut self) {
        let customer_id = Uuid::now_v7();
        self.customers.push(customer_id);
        let number = self.customers.len();
        self.emit(EventPayload::CustomerRegistered(CustomerRegistered {
            customer_id,
            email: format!("customer{number}@example.com"),
            name: format!("Customer {number}"),
        }));
    }

    fn list_product(&mut self) {
        let product = Product {
            sku: format!("SKU-{:05}", self.products.len() + 1),
            category: CATEGORIES[self.random.random_range(0..CATEGORIES.len())],
            price_cents: self.random.random_range(199..=19_999),
            available: 0,
        };
        self.emit(EventPayload::ProductListed(ProductListed {
            sku: product.sku.clone(),
            name: format!("{} item {}", product.category, self.products.len() + 1),
            category: product.category.to_owned(),
            price_cents: product.price_cents,
            currency: CURRENCY.to_owned(),
        }));
        self.products.push(product);
        let quantity = self.random.random_range(50..500);
        self.restock_product(self.products.len() - 1, quantity);
    }

    fn change_price(&mut self) {
        let index = self.random.random_range(0..self.products.len());
        let new_price =
            (self.products[index].price_cents * self.random.random_range(80..=120) / 100).max(99);
        let old_price = std::mem::replace(&mut self.products[index].price_cents, new_price);
        let sku = self.products[index].sku.clone();
        self.emit(EventPayload::ProductPriceChanged(ProductPriceChanged {
            sku,
            old_price_cents: old_price,
            new_price_cents: new_price,
            currency: CURRENCY.to_owned(),
        }));
    }

    fn restock(&mut self) {
        let index = self.random.random_range(0..self.products.len());
        let quantity = self.random.random_range(20..200);
        self.restock_product(index, quantity);
    }

    fn restock_product(&mut self, index: usize, quantity: i64) {
        self.products[index].available += quantity;
        let sku = self.products[index].sku.clone();
        self.emit(EventPayload::InventoryRestocked(InventoryRestocked {
            sku,
            quantity,
        }));
    }

    fn place_order(&mut self) {
        let line_count = self.random.random_range(1..=4);
        let mut lines = Vec::with_capacity(line_count);
        for _ in 0..line_count {
            let index = self.random.random_range(0..self.products.len());
            let quantity = self.random.random_range(1..=3);
            // A real store reorders before it would oversell.
            if self.products[index].available < quantity {
                let restock = self.random.random_range(50..300);
                self.restock_product(index, restock);
            }
            let product = &mut self.products[index];
            product.available -= quantity;
            lines.push(OrderLine {
                sku: product.sku.clone(),
                category: product.category.to_owned(),
                quantity,
                unit_price_cents: product.price_cents,
            });
        }
        let order = OrderPlaced {
            order_id: Uuid::now_v7(),
            customer_id: self.customers[self.random.random_range(0..self.customers.len())],
            currency: CURRENCY.to_owned(),
            lines,
        };
        let total_cents = order.total_cents().unwrap_or_default();
        let placed = self.emit(EventPayload::OrderPlaced(order));
        self.awaiting_payment.push(OpenOrder {
            placed,
            total_cents,
        });
    }

    fn settle_payment(&mut self) {
        let Some(order) = self.take_random(true) else {
            return self.place_order();
        };
        let order_id = order_id(&order);
        if self.random.random_bool(0.92) {
            let payment = PaymentCaptured {
                payment_id: Uuid::now_v7(),
                order_id,
                amount_cents: order.total_cents,
                currency: CURRENCY.to_owned(),
            };
            self.emit_caused(EventPayload::PaymentCaptured(payment), &order.placed);
            self.awaiting_shipment.push(order);
        } else {
            let failure = PaymentFailed {
                payment_id: Uuid::now_v7(),
                order_id,
                amount_cents: order.total_cents,
                currency: CURRENCY.to_owned(),
                reason: "card declined".to_owned(),
            };
            self.emit_caused(EventPayload::PaymentFailed(failure), &order.placed);
            // Customers retry: the order stays open for another payment.
            self.awaiting_payment.push(order);
        }
    }

    fn ship(&mut self) {
        let Some(order) = self.take_random(false) else {
            return self.settle_payment();
        };
        let carrier = CARRIERS[self.random.random_range(0..CARRIERS.len())];
        let shipment = OrderShipped {
            order_id: order_id(&order),
            shipment_id: Uuid::now_v7(),
            carrier: carrier.to_owned(),
            tracking_number: format!(
                "{carrier}{:010}",
                self.random.random_range(0..10_000_000_000u64)
            ),
        };
        self.emit_caused(EventPayload::OrderShipped(shipment), &order.placed);
    }

    fn cancel(&mut self) {
        let before_payment = self.random.random_bool(0.6);
        let Some(order) = self
            .take_random(before_payment)
            .or_else(|| self.take_random(!before_payment))
        else {
            return;
        };
        if let EventPayload::OrderPlaced(placed) = &order.placed.payload {
            for line in &placed.lines {
                if let Some(product) = self
                    .products
                    .iter_mut()
                    .find(|product| product.sku == line.sku)
                {
                    product.available += line.quantity;
                }
            }
        }
        let cancellation = OrderCancelled {
            order_id: order_id(&order),
            reason: if before_payment {
                "customer changed mind"
            } else {
                "damaged in warehouse"
            }
            .to_owned(),
        };
        self.emit_caused(EventPayload::OrderCancelled(cancellation), &order.placed);
    }

    fn emit_caused(&mut self, payload: EventPayload, cause: &Event) {
        let event = Event::new(SOURCE, payload).caused_by(cause);
        self.pending.push_back(event);
    }

    fn take_random(&mut self, awaiting_payment: bool) -> Option<OpenOrder> {
        let orders = if awaiting_payment {
            &mut self.awaiting_payment
        } else {
            &mut self.awaiting_shipment
        };
        if orders.is_empty() {
            return None;
        }
        let index = self.random.random_range(0..orders.len());
        Some(orders.swap_remove(index))
    }
}

fn order_id(order: &OpenOrder) -> Uuid {
    match &order.placed.payload {
        EventPayload::OrderPlaced(placed) => placed.order_id,
        _ => Uuid::nil(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use crate::events::{DEFAULT_MAX_EVENT_BYTES, EventType};

    use super::*;

    #[test]
    fn every_generated_event_is_valid_and_decodes() {
        let mut store = StoreTraffic::new(1);
        for _ in 0..2_000 {
            let event = store.next_event();
            let decoded = Event::decode(&event.to_json_bytes(), DEFAULT_MAX_EVENT_BYTES);
            assert_eq!(decoded.as_ref(), Ok(&event));
        }
    }

    #[test]
    fn the_stream_mixes_every_event_type() {
        let mut store = StoreTraffic::new(2);
        let mut counts: BTreeMap<EventType, usize> = BTreeMap::new();
        for _ in 0..5_000 {
            *counts.entry(store.next_event().event_type()).or_default() += 1;
        }
        assert_eq!(counts.len(), EventType::ALL.len(), "{counts:?}");
        assert!(counts[&EventType::OrderPlaced] > counts[&EventType::OrderCancelled]);
    }

    #[test]
    fn in_order_the_store_never_reserves_more_than_it_has() {
        let mut store = StoreTraffic::new(4);
        let mut available: BTreeMap<String, i64> = BTreeMap::new();
        let mut reserved: BTreeMap<Uuid, Vec<OrderLine>> = BTreeMap::new();
        for _ in 0..20_000 {
            match store.next_event().payload {
                EventPayload::InventoryRestocked(restock) => {
                    *available.entry(restock.sku).or_default() += restock.quantity
                }
                EventPayload::OrderPlaced(order) => {
                    for line in &order.lines {
                        let left = available.entry(line.sku.clone()).or_default();
                        *left -= line.quantity;
                        assert!(*left >= 0, "{} oversold", line.sku);
                    }
                    reserved.insert(order.order_id, order.lines);
                }
                EventPayload::OrderCancelled(cancelled) => {
                    for line in reserved.remove(&cancelled.order_id).unwrap_or_default() {
                        *available.entry(line.sku).or_default() += line.quantity;
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn follow_up_events_come_after_their_order_and_name_it_as_cause() {
        let mut store = StoreTraffic::new(3);
        let mut placed = HashSet::new();
        for _ in 0..5_000 {
            let event = store.next_event();
            if event.event_type() == EventType::OrderPlaced {
                placed.insert(event.id.to_string());
            } else if let Some(cause) = &event.causation_id {
                assert!(
                    placed.contains(cause),
                    "{} before its order",
                    event.event_type()
                );
            }
        }
    }
}
