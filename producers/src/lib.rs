//! Producers: the ways events get into Switchyard.
//!
//! - [`cli`]: the `producers` command line.
//! - [`commands`]: one module per subcommand (`migrate`, `declare`, `publish`,
//!   `load`, `serve`, `relay`, `keys`).
//! - [`gateway`]: the CloudEvents HTTP ingestion gateway.
//! - [`relay`]: the transactional outbox relay.
//! - [`load`]: the store traffic generator.

pub mod cli;
pub mod commands;
pub mod gateway;
pub mod load;
pub mod relay;
