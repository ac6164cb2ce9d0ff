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
    /// Run the CloudEvents HTTP ingestion gateway.
    Serve(ServeArgs),
    /// Publish the transactional outbox (several relays may run at once).
    Relay(RelayArgs),
    /// Manage the gateway's API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// See the outbox's unsent and parked rows; park or unpark rows.
    #[command(subcommand)]
    Outbox(OutboxCommand),
}

/// `producers outbox …`.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Unsent rows, oldest first: attempts, last error, next attempt, and
    /// whether they are parked.
    List {
        /// Only parked rows.
        #[arg(long)]
        parked: bool,
        /// Most rows shown.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        limit: i64,
    },
    /// Parks unsent rows by hand (a row that keeps failing for a reason of
    /// its own): their keys go on without them.
    Park {
        /// Outbox ids.
        #[arg(required = true)]
        ids: Vec<i64>,
        /// Why, shown by `list`.
        #[arg(long)]
        reason: String,
    },
    /// Puts parked rows back in line: the relay tries them at its next pass.
    Unpark {
        /// Outbox ids.
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "SWITCHYARD_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: std::net::SocketAddr,
    /// Largest request body in bytes (413 above; 1 KiB to 64 MiB).
    #[arg(
        long,
        env = "SWITCHYARD_GATEWAY_MAX_BODY_BYTES",
        default_value_t = 1024 * 1024,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=64 * 1024 * 1024)
    )]
    pub max_body_bytes: usize,
    /// Most events in one batched request (413 above; 1 to 10,000).
    #[arg(
        long,
        env = "SWITCHYARD_GATEWAY_MAX_BATCH_EVENTS",
        default_value_t = 500,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000)
    )]
    pub max_batch_events: usize,
    /// Longest a request may take, broker confirms included (503 after;
    /// 100 ms to 10 min).
    #[arg(
        long,
        env = "SWITCHYARD_GATEWAY_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(100..=600_000)
    )]
    pub request_timeout_ms: u64,
    /// How long an accepted event id is remembered: a re-send within it is
    /// acknowledged and not published again (1 s to 365 days).
    #[arg(
        long,
        env = "SWITCHYARD_GATEWAY_IDEMPOTENCY_WINDOW_SECS",
        default_value_t = 86_400,
        value_parser = clap::value_parser!(u64).range(1..=365 * 86_400)
    )]
    pub idempotency_window_secs: u64,
    /// How often the keys held in memory are checked against the key store
    /// (a revoked key works at most this long; 0 checks before every
    /// answer, at most 1 h).
    #[arg(
        long,
        env = "SWITCHYARD_GATEWAY_KEY_CACHE_MS",
        default_value_t = 5_000,
        value_parser = clap::value_parser!(u64).range(0..=3_600_000)
    )]
    pub key_cache_ms: u64,
    /// Failed checks of well-formed keys one client address may make per
    /// second, twice as many at once (429 instead of 401 above; a valid key
    /// is never refused because of them).
    #[arg(
        long,
        env = "SWITCHYARD_GATEWAY_KEY_LOOKUPS_PER_ADDRESS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub key_lookups_per_address: u32,
    /// Connection limits, the header deadline and trusted proxies.
    #[command(flatten)]
    pub server: GatewayServerArgs,
}

shared::server_limit_args!(
    /// The gateway's connection limits and trusted proxies.
    GatewayServerArgs,
    env_prefix: "SWITCHYARD_GATEWAY",
    max_connections: 1024,
    max_connections_per_address: 256,
);

impl ServeArgs {
    /// The gateway configuration these arguments describe.
    pub fn config(&self) -> crate::gateway::GatewayConfig {
        use std::time::Duration;
        crate::gateway::GatewayConfig {
            listen: self.listen,
            max_body_bytes: self.max_body_bytes,
            max_batch_events: self.max_batch_events,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            idempotency_window: Duration::from_secs(self.idempotency_window_secs),
            key_cache_ttl: Duration::from_millis(self.key_cache_ms),
            key_lookups_per_address: self.key_lookups_per_address,
            trusted_proxies: self.server.trusted_proxies.clone(),
            connections: self.server.limits(),
        }
    }
}

/// Arguments of `relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Most outbox rows per pass (one transaction).
    #[arg(long, env = "SWITCHYARD_RELAY_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub batch_size: i64,
    /// Longest wait between passes when no notification arrives (10 ms to
    /// 1 h: shorter would poll the database in a loop).
    #[arg(
        long,
        env = "SWITCHYARD_RELAY_POLL_INTERVAL_MS",
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u64).range(10..=3_600_000)
    )]
    pub poll_interval_ms: u64,
    /// Sent rows are deleted after this many hours (0 to 876,000, a
    /// century); checked when the relay starts and every minute.
    #[arg(
        long,
        env = "SWITCHYARD_RELAY_RETENTION_HOURS",
        default_value_t = 168,
        value_parser = clap::value_parser!(u64).range(0..=876_000)
    )]
    pub retention_hours: u64,
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue a key; prints it once.
    Create {
        /// Who holds it, e.g. `checkout` (1 to 100 characters, no control
        /// characters).
        #[arg(long, value_parser = producer_name)]
        producer: String,
        /// Event types it may publish (comma-separated), or `*`.
        #[arg(long, value_delimiter = ',', required = true)]
        types: Vec<String>,
        /// Sources it may use (comma-separated): exact, or a prefix ending in `*`.
        #[arg(long, value_delimiter = ',', required = true)]
        sources: Vec<String>,
        /// Sustained events per second.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
        rate: u32,
        /// Events at once above the rate (default: twice the rate).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        burst: Option<u32>,
    },
    /// List every key (never the secrets).
    List,
    /// Revoke a key by its id.
    Revoke {
        /// The key id (from `keys list`).
        key_id: uuid::Uuid,
    },
}

/// A key holder's name as `keys create --producer` takes it.
fn producer_name(text: &str) -> Result<String, String> {
    if text.trim() != text
        || text.is_empty()
        || text.chars().count() > 100
        || text.chars().any(char::is_control)
    {
        return Err(format!(
            "{text:?} is not a producer name: 1 to 100 characters, no control characters or surrounding spaces"
        ));
    }
    Ok(text.to_owned())
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
    /// How many items to send (ignored with `--duration-secs`).
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Send for this many seconds instead of a count.
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Target items per second; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seed of the simulated store, for repeatable streams.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Send through the HTTP gateway or straight to the broker.
    #[arg(long, value_enum, default_value_t = Via::Amqp)]
    pub via: Via,
    /// The gateway's base URL (with `--via gateway`).
    #[arg(
        long,
        env = "SWITCHYARD_GATEWAY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub gateway_url: String,
    /// API key for the gateway (with `--via gateway`); never printed.
    #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Without `--api-key`: issue a key for this run in the database (any
    /// type, any source) and revoke it at the end.
    #[arg(long)]
    pub issue_key: bool,
    /// Invalid items added per valid event (0–1), spoiled copies sent in
    /// addition: refused by the gateway, or dead-lettered by the workers
    /// over AMQP.
    #[arg(long, default_value_t = 0.0, value_parser = shared::simulation::parse_share)]
    pub invalid_share: f64,
    /// Fraction of aggregates written through the transactional outbox
    /// (0–1; a relay publishes them).
    #[arg(long, default_value_t = 0.0, value_parser = shared::simulation::parse_share)]
    pub outbox_share: f64,
    /// Concurrent senders per route.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub lanes: u16,
    /// Most events per request or outbox transaction.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub batch_size: u16,
    /// Write every item sent to this NDJSON file.
    #[arg(long)]
    pub record: Option<PathBuf>,
}

/// How `load` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// Publish to the broker with confirms.
    Amqp,
    /// Post to the HTTP gateway.
    Gateway,
}
