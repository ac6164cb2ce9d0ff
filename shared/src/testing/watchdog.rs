//! A hard limit on one test's wall time, teardown included.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Ends the whole test process with exit code 124 if it is still alive
/// `limit` after creation: a test that hangs (in its body or in a teardown
/// `Drop`) then fails at once, naming itself, instead of holding CI until
/// its overall timeout with no hint of which test it was. Bind it first in
/// the test (`let _watchdog = …`) so it is dropped last.
pub struct Watchdog {
    finished: Arc<(Mutex<bool>, Condvar)>,
}

impl Watchdog {
    /// Starts watching the test `name`.
    pub fn new(name: impl Into<String>, limit: Duration) -> Self {
        let name = name.into();
        let finished = Arc::new((Mutex::new(false), Condvar::new()));
        let watched = Arc::clone(&finished);
        std::thread::spawn(move || {
            let (lock, signal) = &*watched;
            let guard = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (done, _) = signal
                .wait_timeout_while(guard, limit, |done| !*done)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !*done {
                eprintln!(
                    "{name} is still running after {limit:?}: it hangs; ending the test process"
                );
                std::process::exit(124);
            }
        });
        Self { finished }
    }

    /// Watches the running test, named as libtest names its thread (the
    /// test's path); for helpers that set a test up.
    pub fn for_current_test(limit: Duration) -> Self {
        let name = std::thread::current()
            .name()
            .unwrap_or("an unnamed test")
            .to_owned();
        Self::new(name, limit)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, signal) = &*self.finished;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        signal.notify_all();
    }
}
