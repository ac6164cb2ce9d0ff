//! The typed payload of an event, and how each (type, version) of `data`
//! becomes the current struct.

use serde::de::DeserializeOwned;

use super::catalog::*;
use super::decode_error::DecodeError;
use super::event_type::EventType;
use super::validation::Validate;

/// The `data` of an event, as the current version of its type's struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPayload {
    /// `customer.registered`
    CustomerRegistered(CustomerRegistered),
    /// `product.listed`
    ProductListed(ProductListed),
    /// `product.price_changed`
    ProductPriceChanged(ProductPriceChanged),
    /// `inventory.restocked`
    InventoryRestocked(InventoryRestocked),
    /// `order.placed`
    OrderPlaced(OrderPlaced),
    /// `payment.captured`
    PaymentCaptured(PaymentCaptured),
    /// `payment.failed`
    PaymentFailed(PaymentFailed),
    /// `order.shipped`
    OrderShipped(OrderShipped),
    /// `order.cancelled`
    OrderCancelled(OrderCancelled),
}

impl EventPayload {
    /// Which type this payload is.
    pub fn event_type(&self) -> EventType {
        match self {
            EventPayload::CustomerRegistered(_) => EventType::CustomerRegistered,
            EventPayload::ProductListed(_) => EventType::ProductListed,
            EventPayload::ProductPriceChanged(_) => EventType::ProductPriceChanged,
            EventPayload::InventoryRestocked(_) => EventType::InventoryRestocked,
            EventPayload::OrderPlaced(_) => EventType::OrderPlaced,
            EventPayload::PaymentCaptured(_) => EventType::PaymentCaptured,
            EventPayload::PaymentFailed(_) => EventType::PaymentFailed,
            EventPayload::OrderShipped(_) => EventType::OrderShipped,
            EventPayload::OrderCancelled(_) => EventType::OrderCancelled,
        }
    }

    /// The aggregate this event belongs to (the default `partitionkey`):
    /// events with the same key must be applied in order.
    pub fn aggregate_key(&self) -> String {
        match self {
            EventPayload::CustomerRegistered(e) => e.customer_id.to_string(),
            EventPayload::ProductListed(e) => e.sku.clone(),
            EventPayload::ProductPriceChanged(e) => e.sku.clone(),
            EventPayload::InventoryRestocked(e) => e.sku.clone(),
            EventPayload::OrderPlaced(e) => e.order_id.to_string(),
            EventPayload::PaymentCaptured(e) => e.order_id.to_string(),
            EventPayload::PaymentFailed(e) => e.order_id.to_string(),
            EventPayload::OrderShipped(e) => e.order_id.to_string(),
            EventPayload::OrderCancelled(e) => e.order_id.to_string(),
        }
    }

    /// Checks the business rules of the payload.
    pub fn validate(&self) -> Result<(), super::validation::ValidationError> {
        match self {
            EventPayload::CustomerRegistered(e) => e.validate(),
            EventPayload::ProductListed(e) => e.validate(),
            EventPayload::ProductPriceChanged(e) => e.validate(),
            EventPayload::InventoryRestocked(e) => e.validate(),
            EventPayload::OrderPlaced(e) => e.validate(),
            EventPayload::PaymentCaptured(e) => e.validate(),
            EventPayload::PaymentFailed(e) => e.validate(),
            EventPayload::OrderShipped(e) => e.validate(),
            EventPayload::OrderCancelled(e) => e.validate(),
        }
    }

    /// The payload as JSON `data` in the current schema version.
    pub fn to_data(&self) -> serde_json::Value {
        let encoded = match self {
            EventPayload::CustomerRegistered(e) => serde_json::to_value(e),
            EventPayload::ProductListed(e) => serde_json::to_value(e),
            EventPayload::ProductPriceChanged(e) => serde_json::to_value(e),
            EventPayload::InventoryRestocked(e) => serde_json::to_value(e),
            EventPayload::OrderPlaced(e) => serde_json::to_value(e),
            EventPayload::PaymentCaptured(e) => serde_json::to_value(e),
            EventPayload::PaymentFailed(e) => serde_json::to_value(e),
            EventPayload::OrderShipped(e) => serde_json::to_value(e),
            EventPayload::OrderCancelled(e) => serde_json::to_value(e),
        };
        // Plain structs of strings, integers and uuids always serialize.
        encoded.unwrap_or(serde_json::Value::Null)
    }

    /// Decodes `data` written in `version` of `event_type`'s schema, upcasting
    /// older versions to the current struct, then validates it. A field the
    /// version does not define is refused, never dropped.
    pub fn from_data<D: PayloadData>(
        event_type: EventType,
        version: u32,
        data: &D,
    ) -> Result<Self, DecodeError> {
        let payload =
            Self::parse_version(event_type, version, data).map_err(|error| match error {
                DecodeError::UnknownField { field, .. } => DecodeError::UnknownField {
                    reason: unknown_field_reason(event_type, version),
                    field,
                },
                other => other,
            })?;
        payload.validated()
    }

    /// Decodes `data` sent without `dataschema`: it is read as the one
    /// version of the type whose fields it matches exactly (no unknown
    /// field, every required field present). A payload that fits no version
    /// is refused with what the newest version finds wrong; one that fits
    /// several (possible only if a version added nothing but optional
    /// fields) is refused asking for `dataschema`. So a payload is never
    /// read as a version that would drop or invent a field.
    pub fn from_unversioned_data<D: PayloadData>(
        event_type: EventType,
        data: &D,
    ) -> Result<Self, DecodeError> {
        let newest = event_type.current_version();
        let mut fits = event_type.supported_versions().rev().filter_map(|version| {
            Some((
                version,
                Self::parse_version(event_type, version, data).ok()?,
            ))
        });
        match (fits.next(), fits.next()) {
            (Some((_, payload)), None) => payload.validated(),
            (Some((first, _)), Some((second, _))) => Err(DecodeError::invalid(
                "dataschema",
                format!(
                    "is required here: this data fits {event_type} v{second} and v{first}; send {}",
                    event_type.schema_uri(first)
                ),
            )),
            (None, _) => Err(match Self::from_data(event_type, newest, data) {
                Err(error) if newest > 1 => with_version_hint(error, event_type),
                Err(error) => error,
                // Unreachable: the newest version did not fit above.
                Ok(_) => DecodeError::invalid("data", "does not fit any version of its type"),
            }),
        }
    }

    /// Deserializes `data` as one version (structure only, no rules).
    fn parse_version<D: PayloadData>(
        event_type: EventType,
        version: u32,
        data: &D,
    ) -> Result<Self, DecodeError> {
        Ok(match (event_type, version) {
            (EventType::CustomerRegistered, 1) => Self::CustomerRegistered(parse(data)?),
            (EventType::ProductListed, 1) => Self::ProductListed(parse(data)?),
            (EventType::ProductPriceChanged, 1) => Self::ProductPriceChanged(parse(data)?),
            (EventType::InventoryRestocked, 1) => Self::InventoryRestocked(parse(data)?),
            (EventType::OrderPlaced, 1) => {
                Self::OrderPlaced(parse::<OrderPlacedV1, D>(data)?.upcast())
            }
            (EventType::OrderPlaced, 2) => Self::OrderPlaced(parse(data)?),
            (EventType::PaymentCaptured, 1) => Self::PaymentCaptured(parse(data)?),
            (EventType::PaymentFailed, 1) => Self::PaymentFailed(parse(data)?),
            (EventType::OrderShipped, 1) => Self::OrderShipped(parse(data)?),
            (EventType::OrderCancelled, 1) => Self::OrderCancelled(parse(data)?),
            _ => {
                return Err(DecodeError::UnsupportedVersion {
                    event_type,
                    version,
                    newest: event_type.current_version(),
                });
            }
        })
    }

    fn validated(self) -> Result<Self, DecodeError> {
        self.validate().map_err(|error| DecodeError::Invalid {
            field: format!("data.{}", error.field),
            reason: error.reason,
        })?;
        Ok(self)
    }
}

/// Why a field of `data` is refused: the version lacks it.
fn unknown_field_reason(event_type: EventType, version: u32) -> String {
    let versions: Vec<String> = event_type
        .supported_versions()
        .map(|version| format!("v{version}"))
        .collect();
    if versions.len() == 1 {
        return format!(
            "is not a field of {event_type} ({}); nothing may be sent that would be dropped",
            event_type.schema_uri(version)
        );
    }
    format!(
        "is not a field of {event_type} v{version} ({}); this type has {}: set dataschema to the version that defines it",
        event_type.schema_uri(version),
        versions.join(", ")
    )
}

/// Says which version an unversioned payload was checked against.
fn with_version_hint(error: DecodeError, event_type: EventType) -> DecodeError {
    let hint = format!(
        " (no dataschema: the data fits no version of {event_type} exactly; checked against the newest, {})",
        event_type.schema_uri(event_type.current_version())
    );
    match error {
        DecodeError::Malformed { field, reason } => DecodeError::Malformed {
            field,
            reason: reason + &hint,
        },
        DecodeError::UnknownField { field, reason } => DecodeError::UnknownField {
            field,
            reason: reason + &hint,
        },
        DecodeError::Invalid { field, reason } => DecodeError::Invalid {
            field,
            reason: reason + &hint,
        },
        other => other,
    }
}

/// Deserializes `data` into `T`, naming the offending field on failure.
fn parse<T: DeserializeOwned, D: PayloadData>(data: &D) -> Result<T, DecodeError> {
    data.parse()
}

/// An envelope's `data`, as the payload's types are read from it.
pub trait PayloadData {
    /// Deserializes it as `T` (structure only, no rules).
    fn parse<T: DeserializeOwned>(&self) -> Result<T, DecodeError>;
}

impl PayloadData for serde_json::Value {
    /// With the path of what is wrong (`data.lines[0].sku`).
    fn parse<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_path_to_error::deserialize(self).map_err(|error| {
            let path = error.path().to_string();
            DecodeError::from_serde(Some("data"), &path, error.into_inner().to_string())
        })
    }
}

impl PayloadData for Box<serde_json::value::RawValue> {
    /// Straight from the text, without a JSON tree: the decoder's fast
    /// path, which redoes any failure on the parsed path for its wording.
    fn parse<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_str(self.get())
            .map_err(|error| DecodeError::from_serde(Some("data"), ".", error.to_string()))
    }
}
