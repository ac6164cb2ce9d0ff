//! Operator tooling for dead letters: find, inspect, repair, replay,
//! resolve and purge them, with an audit trail. The CLI (`consumers
//! dead-letters …`) and the operations API call these same functions.
//!
//! A dead letter is `open`, then `replayed` (by which replay, when),
//! `resolved` (handled outside) or `purged` (payload deleted). A replayed
//! event that fails again is a new open dead letter linked to the replayed
//! one. Closed records are deleted after the configured retention.
//!
//! - [`cli`]: the `consumers dead-letters` subcommands.
//! - [`filter`]: which dead letters an operation applies to.
//! - [`query`]: list, count, summary by failure fingerprint, show.
//! - [`replay`]: exactly-once, rate-limited replay with a breaker.
//! - [`repair`]: edit a payload, export NDJSON, read it back.
//! - [`manage`]: resolve, purge, expire.
//! - [`operations`]: the audit trail.

pub mod cli;
pub mod filter;
pub mod manage;
pub mod operations;
pub mod query;
pub mod repair;
pub mod replay;

pub use filter::{Filter, Status};
pub use manage::OperationError;
pub use operations::Actor;
