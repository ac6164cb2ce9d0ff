//! Consumers: the worker side of Switchyard and its operator tooling.
//!
//! - [`cli`]: the `consumers` command line.
//! - [`commands`]: one function per subcommand.
//! - [`demo`]: workers of every group fed with store traffic over AMQP.
//! - [`handlers`]: the store's handlers per group and their typed errors.
//! - [`http`]: liveness, readiness and Prometheus endpoints.
//! - [`report`]: end-of-run batch and database totals.
//! - [`stats`]: per-group figures for operators and autoscalers.
//!
//! The worker runtime itself (prefetch, batching, retries, dead letters,
//! leases, metrics) is the `runtime` crate, which knows no store.

pub mod cli;
pub mod commands;
pub mod dead_letters;
pub mod demo;
pub mod handlers;
pub mod http;
pub mod operations_api;
pub mod report;
pub mod stats;
