//! The HTTP gateway over real HTTP, the real broker and a real database.

mod accepting;
mod binary;
mod hostile;
mod openapi;
mod outage;
mod properties;
mod refusing;
mod sdk;
mod statuses;
pub mod support;
