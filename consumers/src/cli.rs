//! The `consumers` command line.

use clap::{Parser, Subcommand};

/// Worker-side commands. Configuration comes from the environment
/// (AMQP_URL, DATABASE_URL, SWITCHYARD_*); see the README.
#[derive(Debug, Parser)]
#[command(name = "consumers", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Declare the topology and migrate, then print each group's queue depths
    /// and the dead-letter store's size per group.
    Stats,
    /// Delete every queue and exchange of the configured namespace.
    Teardown(TeardownArgs),
}

/// Arguments of `teardown`.
#[derive(Debug, clap::Args)]
pub struct TeardownArgs {
    /// Must repeat SWITCHYARD_NAMESPACE (`default` for the empty namespace).
    #[arg(long)]
    pub confirm: String,
    /// Delete even when queues still hold messages (they are lost).
    #[arg(long)]
    pub discard_messages: bool,
}
