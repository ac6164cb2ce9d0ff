//! Producers: the ways events get into Switchyard.
//!
//! - [`cli`]: the `producers` command line.
//! - [`commands`]: one module per subcommand (`migrate`, `declare`, `publish`, `load`).

pub mod cli;
pub mod commands;
