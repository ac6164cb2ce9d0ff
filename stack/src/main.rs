//! `switchyard`: the whole stack with store traffic. See `switchyard --help`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use switchyard::{StackOptions, run_stack};
use tokio_util::sync::CancellationToken;

/// Run the gateway, the outbox relay and the workers of every group, feed
/// them simulated store traffic, show live progress, and end with a summary
/// checked against the database. Configuration (AMQP_URL, DATABASE_URL,
/// SWITCHYARD_*) comes from the environment; see the README.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version)]
struct Cli {
    /// Seconds of traffic; 0 sends until Ctrl-C.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Events per second (1 to 1,000,000).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rate: u64,
    /// Seed of the simulated store.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Invalid events added per valid one, 0 to 1 (refused by the gateway
    /// with 400).
    #[arg(long, default_value_t = 0.01, value_parser = shared::simulation::parse_share)]
    invalid_share: f64,
    /// Fraction of aggregates written through the transactional outbox, 0
    /// to 1.
    #[arg(long, default_value_t = 0.2, value_parser = shared::simulation::parse_share)]
    outbox_share: f64,
    /// Where the gateway listens (it also serves /metrics for the workers).
    #[arg(
        long,
        env = "SWITCHYARD_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    gateway_listen: SocketAddr,
    /// Workers per group.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// After sending stops, how long to wait for every event to be applied.
    #[arg(long, default_value_t = 180)]
    drain_secs: u64,
    /// Stop the private PostgreSQL and RabbitMQ this command started under
    /// `target/switchyard-services/` (when no server ran on the stock
    /// ports), then exit.
    #[arg(long)]
    stop_services: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.stop_services {
        let stopped = shared::local_services::stop()?;
        if stopped.is_empty() {
            println!("no private service was running");
        } else {
            println!("stopped the private {}", stopped.join(" and "));
        }
        return Ok(());
    }
    start_local_services()?;
    let settings = shared::local_services::settings_from_env()?;
    // The terminal shows the progress display; the log goes to a file.
    let log = shared::local_services::target_directory().join("switchyard-main.log");
    shared::telemetry::init_telemetry_to_file(settings.log_format, &log)?;
    eprintln!("log: {} (errors are shown here too)", log.display());
    let stop = CancellationToken::new();
    tokio::spawn(shared::shutdown::stop_on_signals(
        stop.clone(),
        "stopping the traffic and draining",
    ));
    let summary = run_stack(
        &settings,
        StackOptions {
            duration: (cli.duration_secs > 0).then(|| Duration::from_secs(cli.duration_secs)),
            rate: cli.rate,
            seed: cli.seed,
            invalid_share: cli.invalid_share,
            outbox_share: cli.outbox_share,
            gateway_listen: cli.gateway_listen,
            workers: usize::from(cli.workers),
            drain: Duration::from_secs(cli.drain_secs),
            progress_every: Duration::from_secs(2),
        },
        stop,
    )
    .await?;
    anyhow::ensure!(
        summary.balanced(),
        "the database does not account for every accepted event"
    );
    Ok(())
}

/// With no `DATABASE_URL` / `AMQP_URL` and nothing on the stock ports, the
/// private services under `target/` (started if need be, then left
/// running); says so, and how to stop them.
fn start_local_services() -> anyhow::Result<()> {
    use shared::local_services::{Choice, directory, ensure};
    let lookup = |name: &str| std::env::var(name).ok();
    let services = ensure(lookup)?;
    let private: Vec<&str> = [
        ("PostgreSQL", services.postgres),
        ("RabbitMQ", services.rabbitmq),
    ]
    .into_iter()
    .filter(|(_, choice)| *choice == Choice::Private)
    .map(|(name, _)| name)
    .collect();
    if !private.is_empty() {
        let verb = if services.started { "started" } else { "using" };
        eprintln!(
            "Nothing answers on the stock port of {0}: {verb} a private {0} in {1} (left \
             running; stop with `cargo run --release -p switchyard -- --stop-services`).",
            private.join(" and "),
            directory().display()
        );
    }
    Ok(())
}
