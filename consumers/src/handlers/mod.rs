//! The store's handlers, one module per consumer group. Each group's rule
//! is its database function (one call applies a batch, or one event inside
//! the runtime's savepoint); its module here says which fields of each
//! event the function reads and words the failures it reports. Nothing
//! here commits or acks.
//!
//! Every rule is written so that the final state does not depend on the
//! order events arrive in: events that need an earlier one fail as
//! transient until it has been applied, and updates that race (prices) are
//! decided by event time.

mod error;
mod fields;
mod inventory;
mod lock_keys;
mod orders;
mod sales;
mod set_wise;

pub use error::{Disposition, HandlerError, classify_database_error};
pub use lock_keys::{advisory_lock_id, lock_keys};
pub use set_wise::{Verdict, apply_batch};
