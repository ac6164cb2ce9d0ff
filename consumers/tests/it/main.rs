//! Integration tests of the worker runtime against the real RabbitMQ and
//! PostgreSQL: exact counts for duplicates, retries, dead letters, poison,
//! crashes, database outages and shutdown.

#![allow(clippy::unwrap_used)]

mod batch_paths;
mod binary_mode;
mod browser;
mod cluster;
mod convergence;
mod dashboard;
mod dead_letters;
mod demo;
mod failures;
mod fault_run;
mod hostile;
mod hostile_properties;
mod http;
mod operations_api;
mod operator_edges;
mod processing;
mod retries;
mod scale_in_out;
mod simulation;
mod stats;
mod stopping;
mod support;
