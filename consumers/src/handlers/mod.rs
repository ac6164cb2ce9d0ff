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

mod fields;
mod inventory;
mod lock_keys;
mod orders;
mod sales;
mod set_wise;

pub use lock_keys::{advisory_lock_id, lock_keys};
pub use set_wise::apply_batch;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use shared::events::Event;
use shared::groups::ConsumerGroup;
use sqlx::PgConnection;

use runtime::handler::{HandlerError, Handlers, Verdict};

/// The store's handlers, as the runtime calls them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Store;

impl Store {
    /// The store's handlers, to give the runtime (`WorkerOptions::handlers`,
    /// `BatchContext::handlers`).
    pub fn shared() -> std::sync::Arc<dyn Handlers> {
        std::sync::Arc::new(Store)
    }
}

impl Handlers for Store {
    fn apply<'a>(
        &'a self,
        group: ConsumerGroup,
        connection: &'a mut PgConnection,
        events: &'a [&'a Event],
    ) -> BoxFuture<'a, Result<Vec<Verdict>, HandlerError>> {
        apply_batch(group, connection, events).boxed()
    }

    fn lock_ids<'a>(
        &'a self,
        group: ConsumerGroup,
        connection: &'a mut PgConnection,
        events: &'a [&'a Event],
    ) -> BoxFuture<'a, Result<Vec<i64>, sqlx::Error>> {
        async move {
            let mut ids: Vec<i64> = lock_keys(group, connection, events)
                .await?
                .iter()
                .map(|key| advisory_lock_id(group, key))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            Ok(ids)
        }
        .boxed()
    }
}
