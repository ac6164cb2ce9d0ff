use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::validation::{
    TEXT_PATTERN, Validate, ValidationError, check_currency, check_positive, check_text,
};

/// `payment.captured` v1: money for an order was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentCaptured {
    /// The payment's id.
    #[serde(deserialize_with = "crate::events::validation::hyphenated_uuid")]
    pub payment_id: Uuid,
    /// The order it pays for.
    #[serde(deserialize_with = "crate::events::validation::hyphenated_uuid")]
    pub order_id: Uuid,
    /// Amount captured in minor units; at least 1.
    #[schemars(range(min = 1))]
    #[serde(deserialize_with = "crate::events::validation::json_integer")]
    pub amount_cents: i64,
    /// ISO 4217 code of the amount.
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
}

impl Validate for PaymentCaptured {
    fn validate(&self) -> Result<(), ValidationError> {
        check_positive("amount_cents", self.amount_cents)?;
        check_currency("currency", &self.currency)
    }
}

/// `payment.failed` v1: an attempt to take money for an order failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentFailed {
    /// The payment attempt's id.
    #[serde(deserialize_with = "crate::events::validation::hyphenated_uuid")]
    pub payment_id: Uuid,
    /// The order it was for.
    #[serde(deserialize_with = "crate::events::validation::hyphenated_uuid")]
    pub order_id: Uuid,
    /// Amount attempted in minor units; at least 1.
    #[schemars(range(min = 1))]
    #[serde(deserialize_with = "crate::events::validation::json_integer")]
    pub amount_cents: i64,
    /// ISO 4217 code of the amount.
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
    /// The processor's reason, 1–500 characters.
    #[schemars(length(min = 1, max = 500), pattern(TEXT_PATTERN))]
    pub reason: String,
}

impl Validate for PaymentFailed {
    fn validate(&self) -> Result<(), ValidationError> {
        check_positive("amount_cents", self.amount_cents)?;
        check_currency("currency", &self.currency)?;
        check_text("reason", &self.reason, 500)
    }
}
