use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::events::validation::{Validate, ValidationError, check_positive, check_sku};

/// `inventory.restocked` v1: units of a SKU arrived in stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryRestocked {
    /// The product's SKU.
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub sku: String,
    /// Units added to stock; at least 1.
    #[schemars(range(min = 1))]
    #[serde(deserialize_with = "crate::events::validation::json_integer")]
    pub quantity: i64,
}

impl Validate for InventoryRestocked {
    fn validate(&self) -> Result<(), ValidationError> {
        check_sku("sku", &self.sku)?;
        check_positive("quantity", self.quantity)
    }
}
