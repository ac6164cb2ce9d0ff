use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::validation::{
    EMAIL_PATTERN, TEXT_PATTERN, Validate, ValidationError, check_email, check_text,
};

/// `customer.registered` v1: a shopper created an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerRegistered {
    /// The new customer's id.
    #[serde(deserialize_with = "crate::events::validation::hyphenated_uuid")]
    pub customer_id: Uuid,
    /// Contact address; must contain one `@` with text on both sides.
    #[schemars(length(max = 254), pattern(EMAIL_PATTERN))]
    pub email: String,
    /// Display name, 1–200 characters.
    #[schemars(length(min = 1, max = 200), pattern(TEXT_PATTERN))]
    pub name: String,
}

impl Validate for CustomerRegistered {
    fn validate(&self) -> Result<(), ValidationError> {
        check_email("email", &self.email)?;
        check_text("name", &self.name, 200)
    }
}
