//! Switchyard's shared library: everything producers and consumers agree on.
//!
//! - [`events`]: the CloudEvents contract, the event catalog and its schemas.
pub mod events;
