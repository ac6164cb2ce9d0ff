//! The servers tests use: those of `AMQP_URL` and `DATABASE_URL`, else
//! the stock local ones, else private ones the first test of a process
//! starts ([`crate::local_services`]), so `cargo test` passes on a machine
//! where the server packages are installed and nothing runs.

use std::sync::OnceLock;

use crate::settings::Settings;

/// Settings from `lookup` (with the process's environment behind it, as the
/// caller wishes), pointed at the private services where no URL is given
/// and nothing answers on the stock port; those are started once per test
/// process (a lock keeps several processes from starting them twice).
pub fn settings_from(lookup: impl Fn(&str) -> Option<String>) -> Settings {
    ensure_services();
    let settings = Settings::from_lookup(&lookup).expect("valid test environment");
    crate::local_services::resolve(settings, lookup)
}

/// [`settings_from`] the process's environment.
pub fn environment_settings() -> Settings {
    settings_from(|name| std::env::var(name).ok())
}

fn ensure_services() {
    static ENSURED: OnceLock<()> = OnceLock::new();
    ENSURED.get_or_init(|| {
        if let Err(error) = crate::local_services::ensure(|name| std::env::var(name).ok()) {
            panic!("the tests need PostgreSQL and RabbitMQ: {error}");
        }
    });
}
