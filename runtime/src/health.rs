//! Readiness flags shared by a process's workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the process can do its work right now.
#[derive(Debug, Clone)]
pub struct Health {
    database_ready: Arc<AtomicBool>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            database_ready: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl Health {
    /// Marks the database as reachable or not.
    pub fn set_database_ready(&self, ready: bool) {
        self.database_ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the last database use succeeded.
    pub fn database_ready(&self) -> bool {
        self.database_ready.load(Ordering::Relaxed)
    }
}
