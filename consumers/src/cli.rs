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
    /// Run workers for one or more groups until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Workers of every group fed with simulated store traffic over AMQP,
    /// live progress, and database totals at the end (the whole stack with
    /// the gateway and relay is the `switchyard` binary).
    Demo(DemoArgs),
    /// Declare the topology and migrate, then print each group's ready,
    /// in-flight, retrying and open dead-letter counts, consumers and rates.
    Stats(StatsArgs),
    /// Delete every queue and exchange of the configured namespace.
    Teardown(TeardownArgs),
    /// Serve the operations API (dead letters over HTTP for operators and
    /// the dashboard) until SIGINT/SIGTERM.
    #[command(name = "operations-api")]
    OperationsApi(OperationsApiArgs),
    /// Issue, list and revoke operators' tokens for the operations API.
    #[command(subcommand, name = "operator-tokens")]
    OperatorTokens(OperatorTokenCommand),
    /// Find, inspect, repair, replay, resolve and purge dead letters.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(Box<crate::dead_letters::cli::DeadLetterCommand>),
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

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Group to run (repeatable, or comma-separated); all groups when absent.
    #[arg(long = "group", env = "SWITCHYARD_GROUPS", value_delimiter = ',')]
    pub groups: Vec<shared::groups::ConsumerGroup>,
    /// Workers (AMQP channels, each with its own batches) per group. One
    /// keeps batches largest; add workers when database round trips, not
    /// CPU, limit a group (a remote database).
    #[arg(long, env = "SWITCHYARD_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Processes that may consume a group at once (one lease per process
    /// and group; the others stand by and take over). Set the same on every
    /// process. One keeps a group's batches from waiting on each other's
    /// locks; raise it when a group is bound by database round trips.
    #[arg(long, env = "SWITCHYARD_GROUP_CONCURRENCY", default_value_t = runtime::DEFAULT_GROUP_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub group_concurrency: u16,
    /// Deliveries the broker may send each worker ahead of its acks.
    #[arg(long, env = "SWITCHYARD_PREFETCH", default_value_t = runtime::DEFAULT_PREFETCH, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Most events applied in one transaction.
    #[arg(long, env = "SWITCHYARD_BATCH_SIZE", default_value_t = runtime::DEFAULT_BATCH_SIZE, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub batch_size: u16,
    /// Longest wait, in milliseconds, after a batch's first event arrives
    /// for more to join it while it is not full: fewer, fuller database
    /// calls at moderate rates, for at most this much latency. 0 applies
    /// what is ready at once (the default).
    #[arg(long, env = "SWITCHYARD_BATCH_LINGER_MS", default_value_t = runtime::DEFAULT_BATCH_LINGER.as_millis() as u16, value_parser = clap::value_parser!(u16).range(0..=10_000))]
    pub batch_linger_ms: u16,
    /// Longest, in milliseconds, a batch's database work may take; past
    /// it the worker gives up on the connection, holds the batch as in an
    /// outage and tries it again on a fresh one.
    #[arg(long, env = "SWITCHYARD_BATCH_TIMEOUT_MS", default_value_t = runtime::DEFAULT_BATCH_TIMEOUT.as_millis() as u32, value_parser = clap::value_parser!(u32).range(100..=3_600_000))]
    pub batch_timeout_ms: u32,
    /// Threads that run the workers (the broker connection's I/O has a
    /// thread of its own). One spends least CPU per delivery while the
    /// process's workers need less than a core (about 30 µs a delivery);
    /// raise it with `--workers` where cores are spare.
    #[arg(long, env = "SWITCHYARD_RUNTIME_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub runtime_threads: u16,
    /// Where to serve /healthz, /readyz and /metrics (port 0: any free port).
    #[arg(
        long,
        env = "SWITCHYARD_HTTP_ADDRESS",
        default_value = "127.0.0.1:9464"
    )]
    pub http_address: std::net::SocketAddr,
}

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Store events to publish.
    #[arg(long, default_value_t = 50_000)]
    pub count: u64,
    /// Target events per second; 0 publishes flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seed of the simulated store.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Workers per group (1 to 256).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Stop after this many seconds even if work remains (1 to 86,400),
    /// and exit with an error saying how much was left.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub max_seconds: u64,
}

/// Arguments of `operations-api`.
#[derive(Debug, clap::Args)]
pub struct OperationsApiArgs {
    /// Where to serve the API (port 0: any free port).
    #[arg(
        long,
        env = "SWITCHYARD_OPERATIONS_ADDRESS",
        default_value = "127.0.0.1:9470"
    )]
    pub http_address: std::net::SocketAddr,
    /// Connection limits, the header deadline and trusted proxies.
    #[command(flatten)]
    pub server: OperationsServerArgs,
    /// Failed token checks one client address may make per second, twice
    /// as many at once; past that, every request from it is answered 429
    /// until its allowance recovers (callers with a live token never fail).
    #[arg(
        long,
        env = "SWITCHYARD_OPERATIONS_TOKEN_FAILURES_PER_ADDRESS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub token_failures_per_address: u32,
}

shared::server_limit_args!(
    /// The operations API's connection limits and trusted proxies.
    OperationsServerArgs,
    env_prefix: "SWITCHYARD_OPERATIONS",
    max_connections: 256,
    max_connections_per_address: 32,
);

/// The subcommands of `operator-tokens`.
#[derive(Debug, Subcommand)]
pub enum OperatorTokenCommand {
    /// Issue a token and print it once (it is not stored and cannot be shown again).
    Create {
        /// Who holds it (recorded in the audit trail as `api:<name>`).
        #[arg(long)]
        name: String,
        /// `viewer` reads; `operator` also replays, edits, resolves and purges.
        #[arg(long, value_enum)]
        role: crate::operations_api::tokens::Role,
    },
    /// Every token (never their secrets).
    List,
    /// Revoke a token by its id.
    Revoke {
        /// The token id `list` shows.
        token_id: uuid::Uuid,
    },
}

/// Arguments of `stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Print JSON (for scripts) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Refresh every this many seconds until Ctrl-C.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub watch: Option<u64>,
}
