//! [`RuntimeError`]: why the runtime stopped abnormally (the workers,
//! their consumers and the broker dead-letter mover return it).

/// Why the runtime stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The broker failed in a way lapin could not recover from.
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    /// The workers' broker connection could not be opened.
    #[error(transparent)]
    Connect(#[from] shared::broker::ConnectError),
    /// The broker ended a worker's consumer (its queue was deleted, or the
    /// consumer was cancelled) while the worker was not stopping.
    #[error("the broker ended the consumer on {queue}")]
    ConsumerEnded {
        /// The queue consumed.
        queue: String,
    },
    /// A worker's consumer ended with its channel closed under it (the
    /// connection was lost and not recovered).
    #[error("the broker connection was lost while consuming {queue}")]
    ConnectionLost {
        /// The queue consumed.
        queue: String,
    },
    /// The key that signs attempt histories could not be read.
    #[error("cannot read the attempt-history key from the database: {0}")]
    AttemptKey(#[source] sqlx::Error),
    /// A worker panicked; the others were stopped.
    #[error("a worker panicked: {0}")]
    WorkerPanicked(String),
}

impl RuntimeError {
    /// Whether a new broker connection could fix it.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Self::Broker(_) | Self::ConnectionLost { .. })
    }
}
