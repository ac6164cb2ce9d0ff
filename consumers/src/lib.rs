//! Consumers: the worker side of Switchyard and its operator tooling.
//!
//! - [`cli`]: the `consumers` command line.
//! - [`commands`]: one function per subcommand.
//! - [`demo`]: workers of every group fed with store traffic over AMQP.
//! - [`handlers`]: the store's handlers per group and their typed errors.
//! - [`http`]: liveness, readiness and Prometheus endpoints.
//! - [`metrics`]: every metric the workers emit.
//! - [`report`]: end-of-run batch and database totals.
//! - [`stats`]: per-group figures for operators and autoscalers.
//! - [`runtime`]: workers: prefetch, batching, retries, dead letters.

pub mod cli;
pub mod commands;
pub mod dead_letters;
pub mod demo;
pub mod fnv;
pub mod handlers;
pub mod http;
pub mod metrics;
pub mod operations_api;
pub mod report;
pub mod runtime;
pub mod stats;
