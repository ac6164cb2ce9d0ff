//! `producers load`: send simulated store traffic and report what was
//! achieved: rate, confirm latency percentiles, refusals, queue depths.

use std::sync::Arc;
use std::time::Duration;

use shared::publish::Publisher;
use shared::settings::Settings;
use shared::topology::stats::depth_table;
use tokio_util::sync::CancellationToken;

use crate::cli::{LoadArgs, Via};
use crate::gateway::api_keys::{self, ApiKey, NewApiKey};
use crate::gateway::grants::Grants;
use crate::load::senders::GatewayClient;
use crate::load::{Limit, LoadOptions, LoadProgress, Target, run_load};

pub async fn run(args: LoadArgs, settings: &Settings) -> anyhow::Result<()> {
    let (connection, topology) =
        shared::startup::prepare_broker(settings, "switchyard-load").await?;
    let database = if args.outbox_share > 0.0 || args.issue_key {
        Some(shared::startup::prepare_database(settings, u32::from(args.lanes) + 2).await?)
    } else {
        None
    };
    let mut issued_key = None;
    let target = match args.via {
        Via::Amqp => Target::Amqp(
            Publisher::connect(settings, topology.events_exchange(), "switchyard-load").await?,
        ),
        Via::Gateway => {
            let key = match (&args.api_key, &database) {
                (Some(key), _) => key.clone(),
                (None, Some(pool)) if args.issue_key => {
                    let (record, key) = issue_load_key(pool).await?;
                    issued_key = Some(record.key_id);
                    key
                }
                _ => anyhow::bail!(
                    "--via gateway needs --api-key (or SWITCHYARD_API_KEY) or --issue-key"
                ),
            };
            let client = GatewayClient::new(&args.gateway_url, key);
            anyhow::ensure!(
                client.wait_until_ready(Duration::from_secs(120)).await,
                "the gateway at {} is not ready",
                args.gateway_url
            );
            Target::Gateway(client)
        }
    };
    let outbox = database.clone().filter(|_| args.outbox_share > 0.0);
    let options = LoadOptions {
        limit: args
            .duration_secs
            .map_or(Limit::Count(args.count), |seconds| {
                Limit::Duration(Duration::from_secs(seconds))
            }),
        rate: (args.rate > 0).then_some(args.rate),
        seed: args.seed,
        invalid_share: args.invalid_share,
        outbox_share: args.outbox_share,
        lanes: usize::from(args.lanes),
        batch_size: usize::from(args.batch_size),
        record: args.record.clone(),
        keep_accepted: false,
    };
    println!(
        "sending store traffic via {:?} {}{}",
        args.via,
        options
            .rate
            .map_or("flat out".to_owned(), |rate| format!("at {rate}/s")),
        match options.limit {
            Limit::Count(count) => format!(", {count} items"),
            Limit::Duration(duration) => format!(" for {duration:?}"),
        }
    );
    let stop = CancellationToken::new();
    tokio::spawn(shared::shutdown::stop_on_signals(
        stop.clone(),
        "waiting for outstanding sends",
    ));
    let report = run_load(
        target.clone(),
        outbox.clone(),
        options,
        Arc::new(LoadProgress::default()),
        stop,
    )
    .await?;
    if let Target::Amqp(publisher) = target {
        publisher.close().await;
    }
    println!("sent:      {} in {:.2?}", report.sent, report.elapsed);
    println!(
        "accepted:  {} direct, {} through the outbox ({:.0} events/s)",
        report.accepted_direct,
        report.accepted_outbox,
        report.rate()
    );
    let invalid_fate = match args.via {
        Via::Gateway => "refused by the gateway (400), as they should be",
        Via::Amqp => "published as poison, for the workers to dead-letter",
    };
    println!("invalid:   {} {invalid_fate}", report.refused_invalid);
    println!("failed:    {}", report.failed);
    if let Some(latency) = &report.latency {
        println!("confirm:   {latency}");
    }
    if let Some(latency) = &report.outbox_latency {
        println!("outbox:    commit {latency}");
    }
    if let Some(path) = &args.record {
        println!("recorded:  {}", path.display());
    }
    print!("{}", depth_table(&topology.depths(&connection).await?));
    let _ = connection.close(200, "OK".into()).await;
    if let Some(pool) = database {
        if let Some(key_id) = issued_key {
            api_keys::revoke(&pool, key_id).await?;
        }
        shared::database::close(&pool).await;
    }
    if let Some(reason) = report.first_failure {
        anyhow::bail!("{} items failed; first: {reason}", report.failed);
    }
    Ok(())
}

/// A key for this run only: any type, any source, a generous rate.
async fn issue_load_key(pool: &sqlx::PgPool) -> anyhow::Result<(ApiKey, String)> {
    let grants = Grants::new(vec!["*".into()], vec!["*".into()])?;
    Ok(api_keys::create(
        pool,
        NewApiKey {
            producer: "load-generator".into(),
            grants,
            rate_per_second: 1_000_000,
            burst: 100_000,
        },
    )
    .await?)
}
