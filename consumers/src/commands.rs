//! The subcommands of `consumers`.

use shared::settings::Settings;
use shared::topology::GroupDepth;

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
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10}",
        "group", "ready", "retrying", "dead", "consumers"
    );
    for GroupDepth {
        group,
        work,
        consumers,
        retrying,
        dead_letter,
    } in topology.depths(&connection).await?
    {
        println!("{group:<10} {work:>10} {retrying:>10} {dead_letter:>10} {consumers:>10}");
    }
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
