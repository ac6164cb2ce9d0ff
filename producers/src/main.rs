//! `producers`: publish events into Switchyard. See `producers --help`.

use clap::Parser;
use producers::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = shared::local_services::settings_from_env()?;
    shared::telemetry::init_telemetry(settings.log_format);
    producers::commands::run(cli.command, &settings).await
}
