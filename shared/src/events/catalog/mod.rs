//! The store's event catalog: one typed payload per event type, grouped by
//! the aggregate it speaks about.
//!
//! Every payload implements [`Validate`](super::validation::Validate); money is
//! always integer minor units (`*_cents`) with an ISO 4217 currency code.

mod customer;
mod inventory;
mod order;
mod payment;
mod product;
mod shipment;

pub use customer::CustomerRegistered;
pub use inventory::InventoryRestocked;
pub use order::{OrderCancelled, OrderLine, OrderPlaced, OrderPlacedV1};
pub use payment::{PaymentCaptured, PaymentFailed};
pub use product::{ProductListed, ProductPriceChanged};
pub use shipment::OrderShipped;
