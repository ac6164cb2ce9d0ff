//! Consumers: the worker side of Switchyard and its operator tooling.
//!
//! - [`cli`]: the `consumers` command line.
//! - [`commands`]: one function per subcommand (`stats`).

pub mod cli;
pub mod commands;
