//! Why a publish is not known to be safe in the broker.

use std::time::Duration;

/// A publish that did not end in a broker confirm for a routed message.
/// Every variant means "not published": the caller keeps the event.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// No queue is bound for the routing key (a `mandatory` return).
    #[error("unroutable: no queue is bound for routing key {routing_key:?} ({reply_text})")]
    Unroutable {
        /// The key nothing matched.
        routing_key: String,
        /// The broker's reply text (`NO_ROUTE`).
        reply_text: String,
    },
    /// The broker refused responsibility for the message (nack).
    #[error("the broker nacked the message for routing key {routing_key:?}")]
    Nacked {
        /// The message's routing key.
        routing_key: String,
    },
    /// No confirm arrived in time.
    #[error("no broker confirm within {0:?}")]
    Timeout(Duration),
    /// The broker is unreachable or the connection or channel broke.
    #[error("broker unavailable: {0}")]
    BrokerUnavailable(String),
}

impl PublishError {
    /// Whether trying again later may succeed (true for outages and timeouts,
    /// false for unroutable messages, which need a topology change).
    pub fn is_transient(&self) -> bool {
        match self {
            PublishError::Unroutable { .. } => false,
            PublishError::Nacked { .. }
            | PublishError::Timeout(_)
            | PublishError::BrokerUnavailable(_) => true,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            PublishError::Unroutable { .. } => "unroutable",
            PublishError::Nacked { .. } => "nacked",
            PublishError::Timeout(_) => "confirm_timeout",
            PublishError::BrokerUnavailable(_) => "broker_unavailable",
        }
    }
}
