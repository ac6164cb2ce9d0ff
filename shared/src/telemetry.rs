//! Logging set-up: readable lines in a terminal, JSON lines in production.

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Installs the global `tracing` subscriber. The filter comes from `RUST_LOG`
/// (default `info`). Calling it twice is harmless: the second call does nothing.
pub fn init_telemetry(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_installed = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
