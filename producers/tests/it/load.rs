use std::collections::BTreeMap;
use std::time::Duration;

use shared::groups::ConsumerGroup;
use shared::load::run_load;
use shared::simulation::StoreTraffic;
use shared::testing::{IsolatedTopology, connect, eventually};

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

    let report = run_load(&publisher, StoreTraffic::new(5), count, None).await;

    assert_eq!((report.published, report.failed), (count, 0));
    assert_eq!(report.latency.unwrap().count, count as usize);
    let connection = connect(&isolated.settings).await;
    let queued = eventually(Duration::from_secs(15), || async {
        let depths = isolated.topology.depths(&connection).await.unwrap();
        let queued: BTreeMap<ConsumerGroup, u32> = depths
            .iter()
            .map(|depth| (depth.group, depth.work))
            .collect();
        (queued == expected).then_some(queued)
    })
    .await;
    assert_eq!(queued, Some(expected));
}
