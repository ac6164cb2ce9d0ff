//! The README's copy-paste AMQP example really publishes one event into the
//! right queues (run in an isolated namespace).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions};
use shared::events::{DEFAULT_MAX_EVENT_BYTES, Event, EventType};
use shared::groups::ConsumerGroup;
use shared::testing::{IsolatedTopology, connect, eventually};

/// The shell block that follows `marker` in the README.
fn example_after(marker: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let after_marker = readme.split(marker).nth(1).expect("README has the marker");
    let block = after_marker.split("```sh\n").nth(1).unwrap();
    block.split("```").next().unwrap().to_owned()
}

fn amqp_example() -> String {
    example_after("<!-- amqp-example -->")
}

#[tokio::test]
async fn the_readme_amqp_example_puts_one_event_into_every_queue_bound_for_it() {
    let isolated = IsolatedTopology::declare().await;
    let example = amqp_example();
    assert!(
        example.contains("--exchange events "),
        "the example targets the default exchange"
    );
    let script = example.replace(
        "--exchange events ",
        &format!("--exchange {} ", isolated.topology.events_exchange()),
    );

    let output = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run sh");
    assert!(
        output.status.success(),
        "the example failed (is amqp-tools installed?): {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let connection = connect(&isolated.settings).await;
    let channel = connection.create_channel().await.unwrap();
    for group in ConsumerGroup::ALL {
        let queue = isolated.topology.group(group).work.clone();
        let message = eventually(Duration::from_secs(10), || async {
            channel
                .basic_get(queue.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
        })
        .await;
        assert_eq!(
            message.is_some(),
            group.handles(EventType::OrderPlaced),
            "group {group}"
        );
        if let Some(message) = message {
            let event = Event::decode(&message.delivery.data, DEFAULT_MAX_EVENT_BYTES)
                .expect("a valid event");
            assert_eq!(event.event_type(), EventType::OrderPlaced);
            message
                .delivery
                .ack(BasicAckOptions::default())
                .await
                .unwrap();
        }
    }
}

fn curl_example() -> String {
    example_after("<!-- curl-example -->")
}

#[tokio::test]
async fn the_readme_curl_example_publishes_one_event_through_the_gateway() {
    let gateway = crate::gateway::support::Gateway::start().await;
    let key = gateway.checkout_key().await;
    let example = curl_example();
    assert!(example.contains("http://127.0.0.1:8080/events"));
    let script = example.replace("http://127.0.0.1:8080", &gateway.base);
    // curl blocks: run it off the runtime that serves the gateway.
    let output = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("KEY", &key)
            .output()
            .expect("run sh")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the example failed: {} {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["published"], 1);
    assert_eq!(gateway.queued(ConsumerGroup::Orders).await, 1);
}
