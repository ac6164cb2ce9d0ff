//! `AMQP_URL` listing several broker addresses (the nodes of a cluster):
//! a connection opens on one that answers, and lapin's recovery, after the
//! node it was on goes, reconnects to another. Two proxies in front of the
//! one local broker stand in for two nodes; cutting one is its node
//! stopping.

use std::time::Duration;

use shared::events::{Event, EventType};
use shared::publish::Publisher;
use shared::settings::Settings;
use shared::testing::{
    IsolatedTopology, TcpProxy, Watchdog, connect, eventually, isolated_settings,
};

use crate::publisher::{drain_message_ids, sample_event, settings_for};

/// Settings of `isolated`'s namespace with `AMQP_URL` listing `urls`.
fn listing(isolated: &IsolatedTopology, urls: &[&str]) -> Settings {
    settings_for(&urls.join(","), &isolated.settings.namespace)
}

/// Publishes `event`, again while it fails (a fail-over in progress),
/// until it is confirmed.
async fn publish_until_confirmed(publisher: &Publisher, event: &Event) -> bool {
    eventually(Duration::from_secs(60), || async {
        publisher.publish(event).await.ok()
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opens_on_an_address_that_answers_and_fails_over_to_another() {
    let _watchdog = Watchdog::new(
        "a_connection_opens_on_an_address_that_answers_and_fails_over_to_another",
        Duration::from_secs(300),
    );
    let isolated = IsolatedTopology::declare_with(isolated_settings()).await;
    let (first, first_url) = TcpProxy::in_front_of(isolated.settings.expose_amqp_url()).await;
    let (second, second_url) = TcpProxy::in_front_of(isolated.settings.expose_amqp_url()).await;
    let settings = listing(&isolated, &[&first_url, &second_url]);

    // The first node is down: the connection opens on the second.
    first.cut();
    let publisher = Publisher::connect(&settings, isolated.topology.events_exchange(), "test")
        .await
        .expect("opens on the address that answers");
    let mut sent = vec![sample_event(EventType::InventoryRestocked)];
    assert!(publish_until_confirmed(&publisher, &sent[0]).await);

    // The second goes, the first is back: the open connection recovers
    // onto the first, and publishing goes on.
    first.restore();
    second.cut();
    sent.push(sample_event(EventType::InventoryRestocked));
    assert!(
        publish_until_confirmed(&publisher, &sent[1]).await,
        "publishing resumes on the other node"
    );

    // And back again.
    second.restore();
    first.cut();
    sent.push(sample_event(EventType::InventoryRestocked));
    assert!(
        publish_until_confirmed(&publisher, &sent[2]).await,
        "publishing resumes on the first node again"
    );
    publisher.close().await;

    let connection = connect(&isolated.settings).await;
    let work = isolated
        .topology
        .group(shared::groups::ConsumerGroup::Inventory)
        .work
        .clone();
    let ids = drain_message_ids(&connection, &work).await;
    for event in &sent {
        assert!(
            ids.contains(&event.id.to_string()),
            "every confirmed event is queued"
        );
    }
}

#[test]
fn amqp_url_lists_nodes_of_one_cluster_with_one_set_of_credentials() {
    let read = |url: &'static str| {
        Settings::from_lookup(move |name| (name == "AMQP_URL").then(|| url.to_owned()))
    };
    let listed = read("amqp://u:p@10.0.0.1:5672/%2f, amqp://u:p@10.0.0.2:5672/%2f")
        .expect("two nodes, one set of credentials");
    assert_eq!(
        listed.expose_amqp_urls().collect::<Vec<_>>(),
        [
            "amqp://u:p@10.0.0.1:5672/%2f",
            "amqp://u:p@10.0.0.2:5672/%2f"
        ]
    );
    assert_eq!(listed.expose_amqp_url(), "amqp://u:p@10.0.0.1:5672/%2f");

    let other_password = read("amqp://u:p@a:5672/%2f,amqp://u:secret-two@b:5672/%2f")
        .expect_err("another password")
        .to_string();
    assert!(other_password.contains("AMQP_URL"), "{other_password}");
    assert!(other_password.contains("address 2"), "{other_password}");
    assert!(
        !other_password.contains("secret-two"),
        "never the URL: {other_password}"
    );

    let other_vhost =
        read("amqp://u:p@a:5672/one,amqp://u:p@b:5672/two").expect_err("another vhost");
    assert!(other_vhost.to_string().contains("virtual host"));

    let wrong_scheme = read("amqp://u:p@a:5672/%2f,http://b").expect_err("not AMQP");
    assert!(wrong_scheme.to_string().contains("amqp://"));

    let seventeen = vec!["amqp://u:p@a:5672/%2f"; 17].join(",");
    let many = Settings::from_lookup(move |name| (name == "AMQP_URL").then(|| seventeen.clone()))
        .expect_err("too many");
    assert!(many.to_string().contains("at most 16"), "{many}");
}
