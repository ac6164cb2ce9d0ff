//! `consumers`: Switchyard's worker-side commands. See `consumers --help`.

use clap::Parser;
use consumers::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // `run`'s workers on the threads asked for; every other command on
    // tokio's default (one per core).
    if let Command::Run(args) = &cli.command {
        runtime.worker_threads(usize::from(args.runtime_threads));
    }
    runtime.build()?.block_on(async {
        let settings = shared::local_services::settings_from_env()?;
        shared::telemetry::init_telemetry(settings.log_format);
        consumers::commands::run(cli.command, &settings).await
    })
}
