//! Every metric the gateway emits, recorded from this one place.

use std::time::Duration;

/// Requests by mode and status code.
pub const REQUESTS_TOTAL: &str = "switchyard_gateway_requests_total";
/// Events by outcome (`published`, `duplicate`, `rejected`) and reason.
pub const EVENTS_TOTAL: &str = "switchyard_gateway_events_total";
/// Time from publishing a request's events to the last broker confirm.
pub const PUBLISH_CONFIRM_SECONDS: &str = "switchyard_gateway_publish_confirm_seconds";
/// Whole request handling time.
pub const REQUEST_SECONDS: &str = "switchyard_gateway_request_seconds";

/// A finished request.
pub fn request(mode: &'static str, status: u16, took: Duration) {
    metrics::counter!(REQUESTS_TOTAL, "mode" => mode, "status" => status.to_string()).increment(1);
    metrics::histogram!(REQUEST_SECONDS).record(took.as_secs_f64());
}

/// `count` events with one outcome; `reason` is `ok` for accepted ones.
pub fn events(outcome: &'static str, reason: &str, count: usize) {
    if count > 0 {
        metrics::counter!(EVENTS_TOTAL, "outcome" => outcome, "reason" => reason.to_owned())
            .increment(count as u64);
    }
}

/// How long the broker took to confirm a request's events.
pub fn publish_confirmed(took: Duration) {
    metrics::histogram!(PUBLISH_CONFIRM_SECONDS).record(took.as_secs_f64());
}

/// Connections closed at once because their address had too many open.
pub const CONNECTIONS_REFUSED_TOTAL: &str = "switchyard_gateway_connections_refused_total";

/// A connection closed on arrival (per-address limit).
pub fn connection_refused() {
    metrics::counter!(CONNECTIONS_REFUSED_TOTAL).increment(1);
}
