use std::collections::BTreeMap;
use std::time::Duration;

use shared::groups::ConsumerGroup;
use shared::simulation::StoreTraffic;
use shared::testing::{IsolatedTopology, connect, eventually};

/// The work-queue depths per group once they equal `expected` (within 30 s).
async fn queued_when(
    isolated: &IsolatedTopology,
    expected: &BTreeMap<ConsumerGroup, u32>,
) -> Option<BTreeMap<ConsumerGroup, u32>> {
    let connection = connect(&isolated.settings).await;
    eventually(Duration::from_secs(30), || async {
        let depths = isolated.topology.depths(&connection).await.unwrap();
        let queued: BTreeMap<ConsumerGroup, u32> = depths
            .iter()
            .map(|depth| (depth.group, depth.work))
            .collect();
        (&queued == expected).then_some(queued)
    })
    .await
}

#[tokio::test]
async fn every_confirmed_load_event_is_queued_for_each_group_that_handles_its_type() {
    let isolated = IsolatedTopology::declare().await;
    let publisher = isolated.publisher().await;
    let count = 1_500;
    // The same seed yields the same stream: count what each group should get.
    let mut replay = StoreTraffic::new(5);
    let mut expected: BTreeMap<ConsumerGroup, u32> = BTreeMap::new();
    for _ in 0..count {
        let event_type = replay.next_event().event_type();
        for group in ConsumerGroup::ALL
            .into_iter()
            .filter(|group| group.handles(event_type))
        {
            *expected.entry(group).or_default() += 1;
        }
    }

    // Paced at 3,000 a second, catching up by at most 50 ms of it.
    let rate = 3_000;
    let report = producers::load::run_load(
        producers::load::Target::Amqp(publisher),
        None,
        producers::load::LoadOptions {
            limit: producers::load::Limit::Count(count as u64),
            rate: Some(rate),
            seed: 5,
            ..producers::load::LoadOptions::default()
        },
        std::sync::Arc::new(producers::load::LoadProgress::default()),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();

    assert_eq!((report.accepted_direct, report.failed), (count as u64, 0));
    assert_eq!(report.latency.unwrap().count, count as usize);
    assert_eq!(queued_when(&isolated, &expected).await, Some(expected));
    // Never faster than the rate allows: all but the burst at 3,000 a second.
    let least = Duration::from_secs_f64((count as u64 - rate / 20) as f64 / rate as f64);
    assert!(
        report.elapsed >= least,
        "{count} events in {:?}",
        report.elapsed
    );
}

/// Through the gateway, with invalid items and a share of aggregates
/// through the outbox (and a relay): every accepted event reaches the
/// queues of the groups that handle it, every invalid item is refused, and
/// the recorded NDJSON holds exactly what was sent.
#[tokio::test]
async fn gateway_and_outbox_load_accounts_for_every_item_sent() {
    use std::sync::Arc;

    use producers::load::senders::GatewayClient;
    use producers::load::{Limit, LoadOptions, LoadProgress, Target, run_load};
    use producers::relay::{Relay, RelayConfig};
    use tokio_util::sync::CancellationToken;

    let gateway = crate::gateway::support::Gateway::start().await;
    let key = gateway.key(&["*"], &["*"], 100_000, 100_000).await;
    let relay = Relay::new(
        gateway.database.pool.clone(),
        gateway.isolated.publisher().await,
        RelayConfig::default(),
    );
    let stop_relay = CancellationToken::new();
    let relaying = tokio::spawn({
        let stop = stop_relay.clone();
        async move { relay.run(stop).await }
    });
    let record = std::env::temp_dir().join(format!("load-{}.ndjson", uuid::Uuid::now_v7()));
    let options = LoadOptions {
        limit: Limit::Count(1_200),
        invalid_share: 0.05,
        outbox_share: 0.3,
        lanes: 4,
        record: Some(record.clone()),
        keep_accepted: true,
        ..LoadOptions::default()
    };
    let report = run_load(
        Target::Gateway(GatewayClient::new(&gateway.base, key)),
        Some(gateway.database.pool.clone()),
        options,
        Arc::new(LoadProgress::default()),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    assert_eq!(report.sent, 1_200);
    assert_eq!(report.failed, 0, "{:?}", report.first_failure);
    assert!(report.refused_invalid > 0 && report.accepted_outbox > 0);
    assert_eq!(
        report.accepted_direct + report.accepted_outbox + report.refused_invalid,
        report.sent
    );
    let recorded = std::fs::read_to_string(&record).unwrap();
    std::fs::remove_file(&record).unwrap();
    assert_eq!(recorded.lines().count(), 1_200);

    let mut expected: BTreeMap<ConsumerGroup, u32> = BTreeMap::new();
    for (_, event_type) in &report.accepted {
        for group in ConsumerGroup::ALL
            .into_iter()
            .filter(|g| g.handles(*event_type))
        {
            *expected.entry(group).or_default() += 1;
        }
    }
    let queued = queued_when(&gateway.isolated, &expected).await;
    stop_relay.cancel();
    relaying.await.unwrap();
    assert_eq!(queued, Some(expected));
}

/// `producers load` refuses a share outside 0–1 (it was clamped, and `NaN`
/// panicked in the planner), naming the flag, before it connects anywhere.
#[test]
fn a_share_outside_zero_to_one_is_refused_naming_the_flag() {
    for (args, named) in [
        (&["--invalid-share", "NaN"][..], "--invalid-share"),
        (&["--invalid-share", "2"][..], "--invalid-share"),
        (&["--outbox-share", "1.01"][..], "--outbox-share"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_producers"))
            .arg("load")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run producers load");
        shared::testing::assert_refused(&output, named, &args);
    }
}
