use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::events::validation::{
    TEXT_PATTERN, Validate, ValidationError, check_currency, check_non_negative, check_sku,
    check_text,
};

/// `product.listed` v1: a product was put on sale in a category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductListed {
    /// Stock-keeping unit: 1–64 characters of `A-Z a-z 0-9 - _ .`.
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub sku: String,
    /// Product name, 1–200 characters.
    #[schemars(length(min = 1, max = 200), pattern(TEXT_PATTERN))]
    pub name: String,
    /// Category slug, 1–100 characters.
    #[schemars(length(min = 1, max = 100), pattern(TEXT_PATTERN))]
    pub category: String,
    /// List price in minor units (cents); zero or more.
    #[schemars(range(min = 0))]
    #[serde(deserialize_with = "crate::events::validation::json_integer")]
    pub price_cents: i64,
    /// ISO 4217 code of the price, three upper-case letters.
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
}

impl Validate for ProductListed {
    fn validate(&self) -> Result<(), ValidationError> {
        check_sku("sku", &self.sku)?;
        check_text("name", &self.name, 200)?;
        check_text("category", &self.category, 100)?;
        check_non_negative("price_cents", self.price_cents)?;
        check_currency("currency", &self.currency)
    }
}

/// `product.price_changed` v1: a listed product got a new price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPriceChanged {
    /// The product's SKU.
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub sku: String,
    /// Price before the change, in minor units.
    #[schemars(range(min = 0))]
    #[serde(deserialize_with = "crate::events::validation::json_integer")]
    pub old_price_cents: i64,
    /// Price after the change, in minor units.
    #[schemars(range(min = 0))]
    #[serde(deserialize_with = "crate::events::validation::json_integer")]
    pub new_price_cents: i64,
    /// ISO 4217 code of both prices.
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
}

impl Validate for ProductPriceChanged {
    fn validate(&self) -> Result<(), ValidationError> {
        check_sku("sku", &self.sku)?;
        check_non_negative("old_price_cents", self.old_price_cents)?;
        check_non_negative("new_price_cents", self.new_price_cents)?;
        check_currency("currency", &self.currency)
    }
}
