//! Integration tests of the shared library against the real RabbitMQ and
//! PostgreSQL (defaults: the local services).

mod helpers;
mod publisher;
mod topology;
