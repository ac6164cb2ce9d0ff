//! Consumer groups: which group processes which event types.

use std::fmt;
use std::str::FromStr;

use crate::events::EventType;

/// A set of workers that share one work queue and one handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConsumerGroup {
    /// Orders and their lifecycle: placed → paid → shipped, or cancelled.
    Orders,
    /// Stock per SKU: restocks, reservations, releases.
    Inventory,
    /// Revenue and units per category per day.
    Sales,
}

impl ConsumerGroup {
    /// Every group.
    pub const ALL: [ConsumerGroup; 3] = [
        ConsumerGroup::Orders,
        ConsumerGroup::Inventory,
        ConsumerGroup::Sales,
    ];

    /// The group's name, used in queue names and routing.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConsumerGroup::Orders => "orders",
            ConsumerGroup::Inventory => "inventory",
            ConsumerGroup::Sales => "sales",
        }
    }

    /// Whether this group's queue is bound for `event_type`. An exhaustive
    /// match, so a new event type must be routed (or not) by every group.
    pub const fn handles(self, event_type: EventType) -> bool {
        use ConsumerGroup::*;
        use EventType::*;
        match event_type {
            CustomerRegistered => matches!(self, Orders),
            ProductListed => matches!(self, Inventory),
            ProductPriceChanged => matches!(self, Inventory),
            InventoryRestocked => matches!(self, Inventory),
            OrderPlaced => true,
            PaymentCaptured => matches!(self, Orders | Sales),
            PaymentFailed => matches!(self, Orders),
            OrderShipped => matches!(self, Orders),
            OrderCancelled => true,
        }
    }

    /// The event types this group's queue receives.
    pub fn event_types(self) -> Vec<EventType> {
        EventType::ALL
            .into_iter()
            .filter(|event_type| self.handles(*event_type))
            .collect()
    }
}

impl fmt::Display for ConsumerGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A name that is not a consumer group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown consumer group {0:?} (known: orders, inventory, sales)")]
pub struct UnknownGroup(pub String);

impl FromStr for ConsumerGroup {
    type Err = UnknownGroup;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ConsumerGroup::ALL
            .into_iter()
            .find(|group| group.as_str() == name)
            .ok_or_else(|| UnknownGroup(name.to_owned()))
    }
}

impl serde::Serialize for ConsumerGroup {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ConsumerGroup {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}
