//! `producers load`: publish simulated store traffic and report throughput,
//! confirm latency and where the events went.

use shared::load::run_load;
use shared::publish::Publisher;
use shared::settings::Settings;
use shared::topology::stats::depth_table;

use crate::cli::LoadArgs;
use shared::simulation::StoreTraffic;

pub async fn run(args: LoadArgs, settings: &Settings) -> anyhow::Result<()> {
    let (connection, topology) =
        shared::startup::prepare_broker(settings, "switchyard-load").await?;
    let publisher =
        Publisher::connect(settings, topology.events_exchange(), "switchyard-load").await?;
    let rate = (args.rate > 0).then_some(args.rate);
    println!(
        "publishing {} store events {} to exchange {:?}",
        args.count,
        rate.map_or("flat out".to_owned(), |rate| format!("at {rate}/s")),
        topology.events_exchange()
    );
    let report = run_load(&publisher, StoreTraffic::new(args.seed), args.count, rate).await;
    publisher.close().await;
    println!(
        "published: {} confirmed, {} failed in {:.2?}",
        report.published, report.failed, report.elapsed
    );
    println!("rate:      {:.0} events/s", report.rate());
    if let Some(latency) = report.latency {
        println!("confirm:   {latency}");
    }
    print!("{}", depth_table(&topology.depths(&connection).await?));
    let _ = connection.close(200, "OK".into()).await;
    if let Some(error) = report.first_error {
        anyhow::bail!(
            "{} events were not published; first error: {error}",
            report.failed
        );
    }
    Ok(())
}
