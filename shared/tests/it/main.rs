//! Integration tests of the shared library against the real RabbitMQ and
//! PostgreSQL (defaults: the local services).

mod contract;
mod database;
mod properties;
mod schemas;
mod settings;
mod publisher;
mod topology;
