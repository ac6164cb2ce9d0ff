use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::validation::{TEXT_PATTERN, Validate, ValidationError, check_text};

/// `order.shipped` v1: an order left the warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderShipped {
    /// The shipped order.
    #[serde(deserialize_with = "crate::events::validation::hyphenated_uuid")]
    pub order_id: Uuid,
    /// The shipment's id.
    #[serde(deserialize_with = "crate::events::validation::hyphenated_uuid")]
    pub shipment_id: Uuid,
    /// Carrier name, 1–100 characters.
    #[schemars(length(min = 1, max = 100), pattern(TEXT_PATTERN))]
    pub carrier: String,
    /// Carrier's tracking number, 1–100 characters.
    #[schemars(length(min = 1, max = 100), pattern(TEXT_PATTERN))]
    pub tracking_number: String,
}

impl Validate for OrderShipped {
    fn validate(&self) -> Result<(), ValidationError> {
        check_text("carrier", &self.carrier, 100)?;
        check_text("tracking_number", &self.tracking_number, 100)
    }
}
