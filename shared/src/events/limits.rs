//! The bounds an event must keep: its size and its attributes' lengths
//! (the envelope's schema, decoding and the gateway all read them here).

/// Default largest accepted event body: 256 KiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 256 * 1024;
/// Longest `source` and `correlationid`, in bytes: each also travels in an
/// AMQP short string (`app_id`, `correlation_id`), which holds 255 bytes.
pub const MAX_SHORT_ATTRIBUTE_BYTES: usize = 255;
/// Longest other text attribute (`subject`, `causationid`, `partitionkey`), in characters.
pub const MAX_ATTRIBUTE_CHARS: usize = 1024;
