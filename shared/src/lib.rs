//! Switchyard's shared library: everything producers and consumers agree on.
//!
//! - [`events`]: the CloudEvents contract, the event catalog and its schemas.
//! - [`groups`]: consumer groups and which event types each receives.
//! - [`topology`]: exchanges, queues and bindings as data; declaring them safely.
//! - [`publish`]: confirmed publishing.
//! - [`outbox`]: the transactional outbox, writer side.
//! - [`broker`]: connecting to RabbitMQ with automatic recovery.
//! - [`broker_limits`]: the start-up doctor's probe of the broker's message size limit.
//! - [`database`]: connecting to PostgreSQL, creating the database, migrating.
//! - [`database_errors`]: whose fault a database error is, by SQLSTATE class.
//! - [`secret_tokens`]: producers' API keys and operators' tokens: mint, parse, check.
//! - [`storable`]: text and JSON PostgreSQL can always store (NUL escaped).
//! - [`settings`]: one validated configuration value from the environment.
//! - [`simulation`]: a simulated online store emitting realistic event streams.
//! - [`latency`]: percentile summaries of latencies.
//! - [`lines`]: reading lines of untrusted input within a size limit.
//! - [`local_services`]: private PostgreSQL and RabbitMQ under `target/` when none run.
//! - [`load`]: publishing simulated traffic at a rate, with confirm latencies.
//! - [`startup`]: what every process does first (declare topology, migrate).
//! - [`retry`]: the exponential-backoff retry policy.
//! - [`telemetry`]: log output set-up.
//! - [`metrics_recorder`]: the process's one Prometheus recorder and its buckets.
//! - [`shutdown`]: SIGINT/SIGTERM → graceful shutdown, twice → exit.
//! - [`tls`]: the process-wide rustls crypto provider.
//! - `testing` (feature `testing`): support for integration tests.

pub mod broker;
pub mod broker_limits;
pub mod credentials;
pub mod database;
pub mod database_errors;
pub mod events;
pub mod groups;
pub mod http_server;
pub mod latency;
pub mod lines;
pub mod local_services;
pub mod metrics_recorder;
pub mod outbox;
pub mod pace;
pub mod printable;
pub mod publish;
pub mod retry;
pub mod secret_tokens;
pub mod settings;
pub mod shutdown;
pub mod simulation;
pub mod startup;
pub mod storable;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod topology;
