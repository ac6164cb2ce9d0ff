//! The `producers` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Publish events into Switchyard. Configuration comes from the environment
/// (AMQP_URL, DATABASE_URL, SWITCHYARD_*); see the README.
#[derive(Debug, Parser)]
#[command(name = "producers", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if missing and apply migrations.
    Migrate,
    /// Declare exchanges, queues and bindings (refusing unsafe existing queues).
    Declare,
    /// Publish CloudEvents from an NDJSON file (or stdin), with confirms.
    Publish(PublishArgs),
    /// Generate realistic store traffic and publish it with confirms.
    Load(LoadArgs),
}

/// Arguments of `publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// NDJSON file, one structured-mode CloudEvent per line; `-` or none for stdin.
    pub file: Option<PathBuf>,
}

/// Arguments of `load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// How many events to publish.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Target events per second; 0 publishes flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seed of the simulated store, for repeatable streams.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}
