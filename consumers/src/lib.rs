//! Consumers: the worker side of Switchyard and its operator tooling.
//!
//! - [`cli`]: the `consumers` command line.
//! - [`commands`]: one function per subcommand.
//! - [`handlers`]: the store's handlers per group and their typed errors.
//! - [`runtime`]: workers: prefetch, batching, retries, dead letters.

pub mod cli;
pub mod commands;
pub mod handlers;
pub mod runtime;
