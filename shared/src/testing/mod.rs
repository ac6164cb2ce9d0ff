//! Test support shared by every crate's integration tests (feature
//! `testing`): isolated broker namespaces, throw-away databases, a TCP proxy
//! to simulate network failures, and polling with a deadline.
//!
//! Everything talks to the real RabbitMQ and PostgreSQL given by `AMQP_URL`
//! and `DATABASE_URL` (default: the local services, else private ones it
//! starts, see [`environment_settings`]) and cleans up after itself, even
//! when a test panics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broker;
mod connections;
mod database;
mod openapi;
mod process;
pub mod prometheus_text;
mod proxy;
mod services;
mod watchdog;

pub use broker::{IsolatedTopology, connect, eventually, isolated_settings};
pub use connections::{client_from, closed_by_server, connect_from};
pub use database::{TestDatabase, database_url};
pub use openapi::{documented_routes, unserved_routes};
pub use process::{assert_refused, exit_within, signal, sigterm, sigterm_and_wait};
pub use proxy::TcpProxy;
pub use services::{environment_settings, settings_from};
pub use watchdog::Watchdog;
