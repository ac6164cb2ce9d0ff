//! The subcommands of `consumers`.

use shared::settings::Settings;
use shared::topology::stats::depth_table;

use crate::cli::{Command, TeardownArgs};

/// Runs one subcommand to completion.
pub async fn run(command: Command, settings: &Settings) -> anyhow::Result<()> {
    match command {
        Command::Stats => stats(settings).await,
        Command::Teardown(args) => teardown(args, settings).await,
    }
}

async fn stats(settings: &Settings) -> anyhow::Result<()> {
    let (connection, topology) =
        shared::startup::prepare_broker(settings, "switchyard-stats").await?;
    print!("{}", depth_table(&topology.depths(&connection).await?));
    let pool = shared::startup::prepare_database(settings, 1).await?;
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT consumer_group, count(*) FROM dead_letters GROUP BY consumer_group ORDER BY 1",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    let stored: Vec<String> = stored
        .iter()
        .map(|(group, count)| format!("{group} {count}"))
        .collect();
    println!(
        "dead-letter store (PostgreSQL): {}",
        if stored.is_empty() {
            "empty".to_owned()
        } else {
            stored.join(", ")
        }
    );
    let _ = connection.close(200, "OK".into()).await;
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
    println!(
        "deleted {} queues and {} exchanges of namespace {shown:?}",
        topology.queues.len(),
        topology.exchanges.len()
    );
    Ok(())
}
