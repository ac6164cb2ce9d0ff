//! The event contract: CloudEvents envelope, the closed catalog of event
//! types, schema versions with upcasting, validation and decoding.
//!
//! - [`event_type`]: the closed [`EventType`] set, wire names and versions.
//! - [`catalog`]: one struct per event payload.
//! - [`payload`]: [`EventPayload`], decoding `data` per (type, version).
//! - [`envelope`]: the CloudEvents JSON wire shape.
//! - [`event`]: [`Event`], a decoded event with metadata, and encoding.
//! - [`decode`]: bytes → [`Event`] with [`DecodeError`]s that name the field.
//! - [`binary`]: binary mode (attributes beside the data) for any transport.
//! - [`amqp`]: a delivery → [`Event`], structured or binary mode.
//! - [`schema`]: JSON Schema for every type and version.

pub mod amqp;
pub mod binary;
pub mod catalog;
pub mod decode;
pub mod decode_error;
pub mod envelope;
pub mod event;
pub mod event_type;
pub mod limits;
pub mod payload;
pub mod schema;
pub mod validation;

pub use decode_error::DecodeError;
pub use envelope::CloudEventEnvelope;
pub use event::Event;
pub use event_type::EventType;
pub use limits::DEFAULT_MAX_EVENT_BYTES;
pub use payload::{EventPayload, PayloadData};
