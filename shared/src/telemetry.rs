//! Logging set-up: readable lines in a terminal, JSON lines in production.

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// The filter without `RUST_LOG`: `info`, but PostgreSQL's notices only
/// from warnings up (every command that checks the migrations would
/// otherwise log `relation "_sqlx_migrations" already exists, skipping`),
/// and none of lapin's "Channel closed" lines: it logs every channel the
/// broker closes as an ERROR, the expected 404 of a probe for a queue that
/// does not exist included, while Switchyard reports each broker error
/// itself, with what it was doing.
pub const DEFAULT_FILTER: &str = "info,sqlx::postgres::notice=warn,lapin::channel=off";

/// Installs the global `tracing` subscriber. The filter comes from `RUST_LOG`
/// (default `info`). Calling it twice is harmless: the second call does nothing.
pub fn init_telemetry(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
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

/// For a process whose terminal shows a display (the main job): every log
/// line goes to a new file at `path` (filter from `RUST_LOG`, default
/// `info`), and only errors also to the terminal, so that the display is
/// not interleaved with expected retries and stop messages.
pub fn init_telemetry_to_file(format: LogFormat, path: &std::path::Path) -> std::io::Result<()> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let file = std::sync::Mutex::new(std::fs::File::create(path)?);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let to_file = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(file)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(file)
            .boxed(),
    };
    let to_terminal = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(LevelFilter::ERROR);
    let _already_installed = tracing_subscriber::registry()
        .with(to_file.with_filter(filter))
        .with(to_terminal)
        .try_init();
    Ok(())
}
