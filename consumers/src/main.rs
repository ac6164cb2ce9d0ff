//! `consumers`: Switchyard's worker-side commands. See `consumers --help`.

use clap::Parser;
use consumers::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = shared::settings::Settings::from_env()?;
    shared::telemetry::init_telemetry(settings.log_format);
    consumers::commands::run(cli.command, &settings).await
}
