//! The subcommands of `consumers`.

use std::sync::Arc;

use anyhow::Context;
use shared::settings::Settings;
use tokio_util::sync::CancellationToken;

use crate::cli::{
    Command, DemoArgs, OperationsApiArgs, OperatorTokenCommand, RunArgs, StatsArgs, TeardownArgs,
};
use crate::http::HttpState;
use runtime::{Health, WorkerOptions, run_workers_reconnecting};

/// Runs one subcommand to completion.
pub async fn run(command: Command, settings: &Settings) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run_until_signalled(args, settings).await,
        Command::Demo(args) => demo(args, settings).await,
        Command::Stats(args) => stats(args, settings).await,
        Command::Teardown(args) => teardown(args, settings).await,
        Command::OperationsApi(args) => operations_api(args, settings).await,
        Command::OperatorTokens(command) => operator_tokens(command, settings).await,
        Command::DeadLetters(command) => crate::dead_letters::cli::run(*command, settings).await,
    }
}

async fn stats(args: StatsArgs, settings: &Settings) -> anyhow::Result<()> {
    let (connection, topology) =
        shared::startup::prepare_broker(settings, "switchyard-stats").await?;
    let pool = shared::startup::prepare_database(settings, 1).await?;
    let management = shared::topology::management::Management::new(settings);
    let stop = CancellationToken::new();
    if args.watch.is_some() {
        tokio::spawn(shared::shutdown::stop_on_signals(stop.clone(), "stopping"));
    }
    let result = loop {
        // Bounded: a broker or database that stops answering ends the
        // command with an error instead of holding it (and a --watch).
        let reading = crate::stats::collect(&connection, &topology, &pool, &management);
        let stats = match tokio::time::timeout(crate::stats::STATS_PATIENCE, reading).await {
            Ok(Ok(stats)) => stats,
            Ok(Err(error)) => {
                break Err(error
                    .context("the figures could not be read: the broker or the database failed"));
            }
            Err(_) => {
                break Err(anyhow::anyhow!(
                    "the figures could not be read within {} s: the broker or the database does not answer",
                    crate::stats::STATS_PATIENCE.as_secs()
                ));
            }
        };
        if args.json {
            println!("{}", serde_json::to_string(&stats)?);
        } else {
            if args.watch.is_some() {
                // Clear the screen and go home: the table refreshes in place.
                println!("\x1b[2J\x1b[H{}", stats.at.format("%Y-%m-%d %H:%M:%S UTC"));
            }
            print!("{}", crate::stats::table(&stats));
        }
        let Some(seconds) = args.watch else {
            break Ok(());
        };
        let pause = tokio::time::sleep(std::time::Duration::from_secs(seconds));
        if stop.run_until_cancelled(pause).await.is_none() {
            break Ok(());
        }
    };
    shared::database::close(&pool).await;
    let _ = tokio::time::timeout(
        shared::database::CLOSE_PATIENCE,
        connection.close(200, "OK".into()),
    )
    .await;
    result
}

async fn operations_api(args: OperationsApiArgs, settings: &Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(shared::shutdown::stop_on_signals(
        shutdown.clone(),
        "stopping the operations API",
    ));
    let pool =
        shared::startup::prepare_database_with_retry(settings, 8, shared::startup::BROKER_PATIENCE)
            .await?;
    let listener = tokio::net::TcpListener::bind(args.http_address)
        .await
        .with_context(|| format!("cannot listen on {} (--http-address)", args.http_address))?;
    tracing::info!(address = %listener.local_addr()?, "serving the operations API");
    let state = crate::operations_api::ApiState::new(pool.clone(), settings.clone(), shutdown)
        .with_token_failures_per_address(args.token_failures_per_address);
    let served = crate::operations_api::serve(
        listener,
        state,
        args.server.limits(),
        args.server.trusted_proxies.clone(),
    )
    .await;
    shared::database::close(&pool).await;
    Ok(served?)
}

async fn operator_tokens(command: OperatorTokenCommand, settings: &Settings) -> anyhow::Result<()> {
    use crate::operations_api::tokens;
    let pool = shared::startup::prepare_database(settings, 1).await?;
    match command {
        OperatorTokenCommand::Create { name, role } => {
            anyhow::ensure!(
                (1..=100).contains(&name.chars().count()) && !name.contains('\0'),
                "--name must be 1 to 100 characters"
            );
            let (token, secret) = tokens::create(&pool, &name, role).await?;
            eprintln!(
                "token {} for {} ({}); shown once, keep it secret:",
                token.token_id,
                token.name,
                token.role.as_str()
            );
            println!("{secret}");
        }
        OperatorTokenCommand::List => {
            println!(
                "{:<36}  {:<20} {:<8} {:<20} revoked",
                "token id", "name", "role", "created"
            );
            for token in tokens::list(&pool).await? {
                println!(
                    "{:<36}  {:<20} {:<8} {:<20} {}",
                    token.token_id,
                    shared::printable::for_terminal(&token.name),
                    token.role.as_str(),
                    token.created_at.format("%Y-%m-%d %H:%M:%S"),
                    token
                        .revoked_at
                        .map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_else(|| "-".to_owned())
                );
            }
        }
        OperatorTokenCommand::Revoke { token_id } => {
            anyhow::ensure!(
                tokens::revoke(&pool, token_id).await?,
                "no live token {token_id}"
            );
            println!("token {token_id} revoked");
        }
    }
    shared::database::close(&pool).await;
    Ok(())
}

async fn teardown(args: TeardownArgs, settings: &Settings) -> anyhow::Result<()> {
    let shown = if settings.namespace.is_empty() {
        "default"
    } else {
        settings.namespace.as_str()
    };
    anyhow::ensure!(
        args.confirm == shown,
        "refusing: --confirm must repeat the namespace being deleted ({shown:?})"
    );
    let connection = shared::broker::connect(settings, "switchyard-teardown").await?;
    let topology = shared::topology::Topology::new(settings);
    let existing = topology.existing_queues(&connection).await?;
    let held: u64 = topology
        .depths(&connection)
        .await?
        .iter()
        .map(|depth| {
            u64::from(depth.work) + u64::from(depth.retrying) + u64::from(depth.dead_letter)
        })
        .sum();
    anyhow::ensure!(
        held == 0 || args.discard_messages,
        "refusing: the namespace's queues hold {held} messages (pass --discard-messages to lose them)"
    );
    topology.delete(&connection).await?;
    let _ = connection.close(200, "OK".into()).await;
    if existing == 0 {
        println!(
            "namespace {shown:?} had no queues: nothing to delete (its exchanges, if any, are gone too)"
        );
    } else {
        println!(
            "deleted {existing} queues and the {} exchanges of namespace {shown:?}",
            topology.exchanges.len()
        );
    }
    Ok(())
}

async fn run_until_signalled(args: RunArgs, settings: &Settings) -> anyhow::Result<()> {
    let options = WorkerOptions {
        groups: if args.groups.is_empty() {
            shared::groups::ConsumerGroup::ALL.to_vec()
        } else {
            args.groups
        },
        workers: usize::from(args.workers),
        prefetch: args.prefetch,
        batch_size: usize::from(args.batch_size),
        batch_linger: std::time::Duration::from_millis(u64::from(args.batch_linger_ms)),
        batch_timeout: std::time::Duration::from_millis(u64::from(args.batch_timeout_ms)),
        group_concurrency: args.group_concurrency,
        handlers: crate::handlers::Store::shared(),
    };
    // Each worker holds one connection; the rest serve the dead-letter
    // movers (one per group, briefly), readiness checks and outage probes;
    // one, detached from the pool, holds the group leases.
    let connections = options.groups.len() as u32 * (u32::from(args.workers) + 1) + 3;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signals(shutdown.clone()));
    // Served first: "alive, not ready" while the broker and database are awaited.
    let health = Health::default();
    health.set_database_ready(false);
    let http = HttpState::new(health.clone(), runtime::metrics::install_recorder());
    runtime::metrics::runtime_threads(tokio::runtime::Handle::current().metrics().num_workers());
    let listener = tokio::net::TcpListener::bind(args.http_address)
        .await
        .with_context(|| format!("cannot listen on {} (--http-address)", args.http_address))?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    let http_stop = CancellationToken::new();
    let server = tokio::spawn(crate::http::serve(
        listener,
        http.clone(),
        http_stop.clone(),
    ));

    let prepared = tokio::select! {
        () = shutdown.cancelled() => None,
        prepared = prepare(settings, connections) => Some(prepared?),
    };
    let result = match prepared {
        None => Ok(()),
        Some((pool, topology)) => {
            http.set_pool(pool.clone());
            health.set_database_ready(true);
            tokio::spawn(crate::stats::sample_every(
                settings.clone(),
                topology.clone(),
                pool.clone(),
                std::time::Duration::from_secs(15),
                shutdown.clone(),
            ));
            tokio::spawn(crate::dead_letters::manage::expire_hourly(
                pool.clone(),
                settings.dead_letters.retention,
                settings.dead_letters.database_timeout,
                shutdown.clone(),
            ));
            tracing::info!(groups = ?options.groups, workers = options.workers, prefetch = options.prefetch,
                batch_size = options.batch_size, batch_linger_ms = options.batch_linger.as_millis() as u64,
                batch_timeout_ms = options.batch_timeout.as_millis() as u64,
                "starting workers");
            let result = run_workers_reconnecting(
                settings,
                &topology,
                pool.clone(),
                &options,
                health,
                shutdown,
                "switchyard-workers",
                |connection| http.set_broker(Arc::clone(connection)),
            )
            .await;
            // Bounded: a connection still in a statement the database does
            // not answer (a network cut) is dropped with the process.
            shared::database::close(&pool).await;
            result
        }
    };
    http_stop.cancel();
    let _ = server.await;
    tracing::info!("workers stopped");
    Ok(result?)
}

/// The database (waited for, like the broker), and the topology declared
/// (the workers then open their own connection).
async fn prepare(
    settings: &Settings,
    connections: u32,
) -> anyhow::Result<(sqlx::PgPool, shared::topology::Topology)> {
    let patience = shared::startup::BROKER_PATIENCE;
    let pool =
        shared::startup::prepare_database_with_retry(settings, connections, patience).await?;
    let (connection, topology) =
        shared::startup::prepare_broker(settings, "switchyard-workers-setup").await?;
    shared::broker_limits::check_message_size_limit(&connection, settings.max_event_bytes).await;
    let _ = connection.close(200, "topology declared".into()).await;
    Ok((pool, topology))
}

async fn stop_on_signals(shutdown: tokio_util::sync::CancellationToken) {
    shared::shutdown::stop_on_signals(shutdown, "finishing in-flight batches").await;
}

async fn demo(args: DemoArgs, settings: &Settings) -> anyhow::Result<()> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(stop_on_signals(shutdown.clone()));
    let options = crate::demo::DemoOptions {
        count: args.count,
        rate: (args.rate > 0).then_some(args.rate),
        seed: args.seed,
        workers: WorkerOptions::defaults(
            usize::from(args.workers),
            crate::handlers::Store::shared(),
        ),
        deadline: std::time::Duration::from_secs(args.max_seconds),
    };
    crate::demo::run_demo(settings, options, shutdown).await
}
