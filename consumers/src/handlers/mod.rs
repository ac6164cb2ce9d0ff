//! The store's handlers, one module per consumer group. A handler applies
//! one event inside the runtime's transaction; it never commits and never acks.
//!
//! Every handler is written so that the final state does not depend on the
//! order events arrive in: events that need an earlier one fail as
//! transient until it has been applied, and updates that race (prices) are
//! decided by event time.

mod error;
mod inventory;
mod lock_keys;
mod orders;
mod sales;
mod set_wise;

pub use error::{Disposition, HandlerError, classify_database_error};
pub use lock_keys::{advisory_lock_id, known_lock_keys, lock_keys};
pub use set_wise::{Verdict, apply_batch};

use shared::events::Event;
use shared::groups::ConsumerGroup;
use sqlx::PgConnection;

/// Applies `event` to `group`'s projection on `connection` (inside a transaction).
pub async fn apply(
    group: ConsumerGroup,
    connection: &mut PgConnection,
    event: &Event,
) -> Result<(), HandlerError> {
    match group {
        ConsumerGroup::Orders => orders::apply(connection, event).await,
        ConsumerGroup::Inventory => inventory::apply(connection, event).await,
        ConsumerGroup::Sales => sales::apply(connection, event).await,
    }
}
