//! One module per subcommand; [`run`] dispatches.

mod declare;
mod keys;
mod load;
mod migrate;
mod outbox;
mod publish;
mod relay;
mod serve;

pub use publish::{PublishReport, Rejection, publish_ndjson};

use shared::settings::Settings;

use crate::cli::Command;

/// Runs one subcommand to completion.
pub async fn run(command: Command, settings: &Settings) -> anyhow::Result<()> {
    match command {
        Command::Migrate => migrate::run(settings).await,
        Command::Declare => declare::run(settings).await,
        Command::Publish(args) => publish::run(args, settings).await,
        Command::Load(args) => load::run(args, settings).await,
        Command::Serve(args) => serve::run(args, settings).await,
        Command::Relay(args) => relay::run(args, settings).await,
        Command::Keys(command) => keys::run(command, settings).await,
        Command::Outbox(command) => outbox::run(command, settings).await,
    }
}
