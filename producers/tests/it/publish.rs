use std::time::Duration;

use producers::commands::publish_ndjson;
use shared::events::{DEFAULT_MAX_EVENT_BYTES, Event};
use shared::groups::ConsumerGroup;
use shared::testing::{IsolatedTopology, connect, eventually};
use shared::topology::GroupDepth;

#[tokio::test]
async fn valid_lines_are_published_and_each_bad_line_is_reported_with_its_number_and_field() {
    let isolated = IsolatedTopology::declare().await;
    let publisher = isolated.publisher().await;
    let mut store = shared::simulation::StoreTraffic::new(11);
    let first = store.next_event();
    let second = store.next_event();
    let input = [
        String::from_utf8(first.to_json_bytes()).unwrap(),
        String::new(),
        "{not json".to_owned(),
        String::from_utf8(second.to_json_bytes()).unwrap(),
        r#"{"specversion":"1.0","id":"x","source":"/s","type":"order.placed","time":"2026-01-01T00:00:00Z","data":{}}"#.to_owned(),
    ]
    .join("\n");

    let progress = indicatif::ProgressBar::hidden();
    let report = publish_ndjson(
        input.as_bytes(),
        &publisher,
        DEFAULT_MAX_EVENT_BYTES,
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(progress.position(), input.len() as u64 + 1);

    assert_eq!(report.published, 2);
    let lines: Vec<usize> = report
        .rejected
        .iter()
        .map(|rejection| rejection.line)
        .collect();
    assert_eq!(lines, [3, 5]);
    assert!(
        report.rejected[1].reason.starts_with("id:"),
        "{}",
        report.rejected[1].reason
    );
    let connection = connect(&isolated.settings).await;
    let expected = [&first, &second]
        .iter()
        .filter(|event: &&&Event| ConsumerGroup::Inventory.handles(event.event_type()))
        .count() as u32;
    let inventory = eventually(Duration::from_secs(10), || async {
        let depths = isolated.topology.depths(&connection).await.unwrap();
        let inventory = depths
            .into_iter()
            .find(|depth| depth.group == ConsumerGroup::Inventory)?;
        (inventory.work == expected).then_some(inventory)
    })
    .await;
    assert!(matches!(inventory, Some(GroupDepth { dead_letter: 0, .. })));
}
