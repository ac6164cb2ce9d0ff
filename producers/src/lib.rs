//! Producers: the ways events get into Switchyard.
//!
//! - [`cli`]: the `producers` command line.
//! - [`commands`]: one module per subcommand (`migrate`, `declare`, `publish`, `load`).
//! - [`traffic`]: a simulated online store that emits realistic event streams.
//! - [`latency`]: percentile summaries of confirm latencies.

pub mod cli;
pub mod commands;
pub mod latency;
pub mod traffic;
