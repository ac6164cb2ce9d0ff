//! Publishing with publisher confirms.
//!
//! - [`message`]: [`OutgoingMessage`], an event's body, routing key and AMQP properties.
//! - [`publisher`]: [`Publisher`], confirmed publishing with a bounded window.
//! - `turns`: the order single publishes in flight together are sent in.
//! - [`error`]: [`PublishError`], one variant per way a publish can fail.

pub mod error;
pub mod message;
pub mod publisher;
mod turns;

pub use error::PublishError;
pub use message::OutgoingMessage;
pub use publisher::Publisher;
