//! The closed set of event types, their wire names and schema versions.

use std::fmt;
use std::str::FromStr;

/// Every event type Switchyard knows. Adding a variant fails to compile until
/// its wire name, version, payload, schema and routing are all decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// `customer.registered`
    CustomerRegistered,
    /// `product.listed`
    ProductListed,
    /// `product.price_changed`
    ProductPriceChanged,
    /// `inventory.restocked`
    InventoryRestocked,
    /// `order.placed`
    OrderPlaced,
    /// `payment.captured`
    PaymentCaptured,
    /// `payment.failed`
    PaymentFailed,
    /// `order.shipped`
    OrderShipped,
    /// `order.cancelled`
    OrderCancelled,
}

impl EventType {
    /// Every type, in catalog order.
    pub const ALL: [EventType; 9] = [
        EventType::CustomerRegistered,
        EventType::ProductListed,
        EventType::ProductPriceChanged,
        EventType::InventoryRestocked,
        EventType::OrderPlaced,
        EventType::PaymentCaptured,
        EventType::PaymentFailed,
        EventType::OrderShipped,
        EventType::OrderCancelled,
    ];

    /// The CloudEvents `type` attribute, which is also the routing key.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::CustomerRegistered => "customer.registered",
            EventType::ProductListed => "product.listed",
            EventType::ProductPriceChanged => "product.price_changed",
            EventType::InventoryRestocked => "inventory.restocked",
            EventType::OrderPlaced => "order.placed",
            EventType::PaymentCaptured => "payment.captured",
            EventType::PaymentFailed => "payment.failed",
            EventType::OrderShipped => "order.shipped",
            EventType::OrderCancelled => "order.cancelled",
        }
    }

    /// The schema version producers emit today; older versions are upcast on decode.
    pub const fn current_version(self) -> u32 {
        match self {
            EventType::OrderPlaced => 2,
            EventType::CustomerRegistered
            | EventType::ProductListed
            | EventType::ProductPriceChanged
            | EventType::InventoryRestocked
            | EventType::PaymentCaptured
            | EventType::PaymentFailed
            | EventType::OrderShipped
            | EventType::OrderCancelled => 1,
        }
    }

    /// Every version that can still be decoded, oldest first.
    pub fn supported_versions(self) -> std::ops::RangeInclusive<u32> {
        1..=self.current_version()
    }

    /// The `dataschema` URI of one version of this type.
    pub fn schema_uri(self, version: u32) -> String {
        format!("{SCHEMA_URI_PREFIX}{}:v{version}", self.as_str())
    }
}

/// Every `dataschema` this contract emits starts with this.
pub const SCHEMA_URI_PREFIX: &str = "urn:switchyard:schema:";

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A `type` attribute that names no known event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {0:?}")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|event_type| event_type.as_str() == name)
            .ok_or_else(|| UnknownEventType(name.to_owned()))
    }
}
