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
    assert_eq!(progress.position(), input.len() as u64);

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

/// The `producers publish` binary, from a file and from stdin: valid lines
/// are published, and each line that is not an event — broken JSON,
/// invalid UTF-8, a line far past the event size limit (held in memory
/// only up to the limit) — is reported with its number; the command then
/// exits non-zero.
#[tokio::test]
async fn the_binary_publishes_a_file_or_stdin_and_reports_each_bad_line() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let isolated = IsolatedTopology::declare().await;
    let mut store = shared::simulation::StoreTraffic::new(12);
    let events: Vec<Event> = (0..3).map(|_| store.next_event()).collect();
    let mut input = Vec::new();
    input.extend_from_slice(&events[0].to_json_bytes());
    input.extend_from_slice(b"\n{not json\n\xff\xfe not utf-8\n");
    input.extend_from_slice(&vec![b'x'; 3 * DEFAULT_MAX_EVENT_BYTES]);
    input.push(b'\n');
    input.extend_from_slice(&events[1].to_json_bytes());
    input.extend_from_slice(b"\r\n\n");
    let file = std::env::temp_dir().join(format!("publish-{}.ndjson", isolated.settings.namespace));
    std::fs::write(&file, &input).unwrap();

    let producers = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_producers"));
        command
            .arg("publish")
            .env("SWITCHYARD_NAMESPACE", &isolated.settings.namespace)
            .env("RUST_LOG", "warn");
        command
    };
    let mut from_file = producers();
    from_file.arg(&file).stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || from_file.output().unwrap())
        .await
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "bad lines fail the command");
    assert!(stdout.contains("published: 2"), "{stdout}");
    assert!(stdout.contains("rejected:  3"), "{stdout}");
    for (line, says) in [(2, "line 2: "), (3, "line 3: "), (4, "line 4: longer than")] {
        assert!(stdout.contains(says), "line {line} reported: {stdout}");
    }

    let mut from_stdin = producers();
    from_stdin
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let third = events[2].to_json_bytes();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = from_stdin.spawn().unwrap();
        child.stdin.take().unwrap().write_all(&third).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("published: 1"), "{stdout}");

    let connection = connect(&isolated.settings).await;
    let expected: u32 = events
        .iter()
        .map(|event| {
            ConsumerGroup::ALL
                .iter()
                .filter(|group| group.handles(event.event_type()))
                .count() as u32
        })
        .sum();
    assert!(expected > 0);
    let queued = eventually(Duration::from_secs(10), || async {
        let depths = isolated.topology.depths(&connection).await.unwrap();
        let queued: u32 = depths.iter().map(|depth| depth.work).sum();
        (queued == expected).then_some(())
    })
    .await;
    assert!(
        queued.is_some(),
        "the three events reached each of their groups' queues"
    );
}
