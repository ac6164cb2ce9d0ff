//! Integration tests of the shared library against the real RabbitMQ and
//! PostgreSQL (defaults: the local services).

#![allow(clippy::unwrap_used)]

mod addresses;
mod contract;
mod database;
mod dead_lettering;
mod properties;
mod publisher;
mod schemas;
mod settings;
mod tls;
mod topology;
