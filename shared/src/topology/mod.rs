//! RabbitMQ topology as data: every exchange, queue, argument and binding
//! Switchyard needs, derived from the namespace and the settings.
//!
//! - [`spec`]: the data types and [`Topology::new`].
//! - [`declare`]: idempotent declaration, with the startup safety check.
//! - [`stats`]: queue depths per group.
//! - [`management`]: in-flight counts and rates from the management API.

pub mod declare;
pub mod management;
pub mod spec;
pub mod stats;

pub use declare::TopologyError;
pub use spec::{
    ArgumentValue, BindingSpec, ExchangeKind, ExchangeSpec, GroupQueues, QueueSpec, Topology,
};
pub use stats::GroupDepth;
