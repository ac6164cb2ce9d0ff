use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::validation::{
    TEXT_PATTERN, Validate, ValidationError, check_at_most, check_currency, check_non_negative,
    check_positive, check_sku, check_text,
};

/// Most lines one order may carry; bounds the work one event can cause.
pub const MAX_ORDER_LINES: usize = 500;
/// Most units of one line.
pub const MAX_LINE_QUANTITY: i64 = 1_000_000;
/// Highest unit price, in minor units (100 million in the major unit).
/// With [`MAX_ORDER_LINES`] and [`MAX_LINE_QUANTITY`] it keeps every order
/// total within 64 bits, so the JSON Schema can say all the rules.
pub const MAX_UNIT_PRICE_CENTS: i64 = 10_000_000_000;

/// `order.placed` v2 (current): a customer placed an order.
///
/// Version 2 added `currency`; version 1 orders were all in US dollars and
/// are upcast by [`OrderPlacedV1::upcast`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    /// The order's id (also its partition key).
    #[serde(deserialize_with = "crate::events::validation::hyphenated_uuid")]
    pub order_id: Uuid,
    /// Who placed it.
    #[serde(deserialize_with = "crate::events::validation::hyphenated_uuid")]
    pub customer_id: Uuid,
    /// ISO 4217 code for every price in the order.
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
    /// What was ordered: 1 to 500 lines.
    #[schemars(length(min = 1, max = 500))]
    pub lines: Vec<OrderLine>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    /// The product's SKU.
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub sku: String,
    /// The product's category slug at the time of the order.
    #[schemars(length(min = 1, max = 100), pattern(TEXT_PATTERN))]
    pub category: String,
    /// Units ordered; 1 to 1,000,000.
    #[schemars(range(min = 1, max = MAX_LINE_QUANTITY))]
    #[serde(deserialize_with = "crate::events::validation::json_integer")]
    pub quantity: i64,
    /// Price of one unit in minor units; 0 to 10,000,000,000.
    #[schemars(range(min = 0, max = MAX_UNIT_PRICE_CENTS))]
    #[serde(deserialize_with = "crate::events::validation::json_integer")]
    pub unit_price_cents: i64,
}

impl OrderPlaced {
    /// Sum of `quantity × unit_price_cents` over the lines, or `None` on overflow.
    pub fn total_cents(&self) -> Option<i64> {
        self.lines.iter().try_fold(0i64, |total, line| {
            total.checked_add(line.quantity.checked_mul(line.unit_price_cents)?)
        })
    }
}

impl Validate for OrderPlaced {
    fn validate(&self) -> Result<(), ValidationError> {
        check_currency("currency", &self.currency)?;
        validate_lines(&self.lines)?;
        if self.total_cents().is_none() {
            return Err(ValidationError::new(
                "lines",
                "order total overflows 64 bits",
            ));
        }
        Ok(())
    }
}

fn validate_lines(lines: &[OrderLine]) -> Result<(), ValidationError> {
    if lines.is_empty() || lines.len() > MAX_ORDER_LINES {
        return Err(ValidationError::new(
            "lines",
            format!(
                "must hold 1 to {MAX_ORDER_LINES} lines, got {}",
                lines.len()
            ),
        ));
    }
    for (index, line) in lines.iter().enumerate() {
        line.validate()
            .map_err(|error| error.within(&format!("lines[{index}]")))?;
    }
    Ok(())
}

impl Validate for OrderLine {
    fn validate(&self) -> Result<(), ValidationError> {
        check_sku("sku", &self.sku)?;
        check_text("category", &self.category, 100)?;
        check_positive("quantity", self.quantity)?;
        check_at_most("quantity", self.quantity, MAX_LINE_QUANTITY)?;
        check_non_negative("unit_price_cents", self.unit_price_cents)?;
        check_at_most(
            "unit_price_cents",
            self.unit_price_cents,
            MAX_UNIT_PRICE_CENTS,
        )
    }
}

/// `order.placed` v1: the same order before currencies existed (all USD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPlacedV1 {
    /// The order's id.
    #[serde(deserialize_with = "crate::events::validation::hyphenated_uuid")]
    pub order_id: Uuid,
    /// Who placed it.
    #[serde(deserialize_with = "crate::events::validation::hyphenated_uuid")]
    pub customer_id: Uuid,
    /// What was ordered.
    #[schemars(length(min = 1, max = 500))]
    pub lines: Vec<OrderLine>,
}

impl OrderPlacedV1 {
    /// The currency every version-1 order was priced in.
    pub const IMPLIED_CURRENCY: &'static str = "USD";

    /// Lifts a version-1 order to the current struct: its currency was USD.
    pub fn upcast(self) -> OrderPlaced {
        OrderPlaced {
            order_id: self.order_id,
            customer_id: self.customer_id,
            currency: Self::IMPLIED_CURRENCY.to_owned(),
            lines: self.lines,
        }
    }
}

/// `order.cancelled` v1: an order was called off (before or after payment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    /// The cancelled order.
    #[serde(deserialize_with = "crate::events::validation::hyphenated_uuid")]
    pub order_id: Uuid,
    /// Why, 1–500 characters.
    #[schemars(length(min = 1, max = 500), pattern(TEXT_PATTERN))]
    pub reason: String,
}

impl Validate for OrderCancelled {
    fn validate(&self) -> Result<(), ValidationError> {
        check_text("reason", &self.reason, 500)
    }
}
