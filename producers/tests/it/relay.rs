//! The outbox relay against the real broker and database: several relays at
//! once, crashes, notifications, retention, and the `producers relay` binary.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use producers::relay::{Relay, RelayConfig};
use shared::events::{DEFAULT_MAX_EVENT_BYTES, Event};
use shared::groups::ConsumerGroup;
use shared::publish::Publisher;
use shared::testing::{IsolatedTopology, TestDatabase, connect, eventually};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Outbox {
    isolated: IsolatedTopology,
    database: TestDatabase,
}

impl Outbox {
    async fn new() -> Self {
        let isolated = IsolatedTopology::declare().await;
        let database = TestDatabase::create_with(isolated.settings.clone()).await;
        Self { isolated, database }
    }

    fn relay(&self, config: RelayConfig) -> Relay {
        let publisher = Publisher::new(
            &self.isolated.settings,
            self.isolated.topology.events_exchange(),
            "relay-test",
        );
        Relay::new(self.database.pool.clone(), publisher, config)
    }

    /// Starts a relay task; cancel the token to stop it.
    fn spawn_relay(&self, config: RelayConfig) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let relay = self.relay(config);
        let stop = CancellationToken::new();
        let token = stop.clone();
        (stop, tokio::spawn(async move { relay.run(token).await }))
    }

    /// Writes `events` in transactions of `per_transaction`.
    async fn write(&self, events: &[Event], per_transaction: usize) {
        for chunk in events.chunks(per_transaction) {
            let mut transaction = self.database.pool.begin().await.unwrap();
            shared::outbox::enqueue(&mut transaction, chunk)
                .await
                .unwrap();
            transaction.commit().await.unwrap();
        }
    }

    async fn unsent(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&self.database.pool)
            .await
            .unwrap()
    }

    /// `Some` once the outbox holds no row at all (sent rows purged),
    /// within `within`.
    async fn emptied(&self, within: Duration) -> Option<()> {
        eventually(within, || async {
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                .fetch_one(&self.database.pool)
                .await
                .unwrap();
            (rows == 0).then_some(())
        })
        .await
    }

    async fn wait_until_all_sent(&self) {
        let done = eventually(Duration::from_secs(120), || async {
            (self.unsent().await == 0).then_some(())
        })
        .await;
        assert!(done.is_some(), "{} rows still unsent", self.unsent().await);
    }

    /// Consumes the orders queue until it has been empty for a while; the
    /// events in delivery order.
    async fn delivered(&self) -> Vec<Event> {
        let connection = connect(&self.isolated.settings).await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .basic_qos(1_000, BasicQosOptions::default())
            .await
            .unwrap();
        let queue = self
            .isolated
            .topology
            .group(ConsumerGroup::Orders)
            .work
            .clone();
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "relay-test".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut events = Vec::new();
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
        {
            events.push(Event::decode(&delivery.data, DEFAULT_MAX_EVENT_BYTES).unwrap());
            delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        let _ = connection.close(200, "OK".into()).await;
        events
    }
}

/// `count` order events spread over `keys` partition keys, in write order.
fn keyed_events(count: usize, keys: usize) -> Vec<Event> {
    (0..count)
        .map(|index| {
            let mut event = crate::gateway::support::order_placed("/outbox-test");
            event.partition_key = format!("key-{}", index % keys);
            event
        })
        .collect()
}

/// Per partition key, the ids in the order they were first delivered.
fn first_deliveries_by_key(delivered: &[Event]) -> HashMap<String, Vec<Uuid>> {
    let mut seen = HashSet::new();
    let mut by_key: HashMap<String, Vec<Uuid>> = HashMap::new();
    for event in delivered {
        if seen.insert(event.id) {
            by_key
                .entry(event.partition_key.clone())
                .or_default()
                .push(event.id);
        }
    }
    by_key
}

fn written_by_key(events: &[Event]) -> HashMap<String, Vec<Uuid>> {
    let mut by_key: HashMap<String, Vec<Uuid>> = HashMap::new();
    for event in events {
        by_key
            .entry(event.partition_key.clone())
            .or_default()
            .push(event.id);
    }
    by_key
}

#[tokio::test]
async fn two_relays_publish_ten_thousand_rows_each_once_in_order_per_partition_key() {
    let outbox = Outbox::new().await;
    let events = keyed_events(10_000, 40);
    let config = RelayConfig {
        batch_size: 250,
        poll_interval: Duration::from_millis(200),
        ..RelayConfig::default()
    };
    let relays = [
        outbox.spawn_relay(config.clone()),
        outbox.spawn_relay(config),
    ];
    // Written while both relays run.
    outbox.write(&events, 50).await;
    outbox.wait_until_all_sent().await;
    for (stop, task) in relays {
        stop.cancel();
        task.await.unwrap();
    }

    let delivered = outbox.delivered().await;
    assert_eq!(delivered.len(), 10_000, "each row published exactly once");
    let distinct: HashSet<Uuid> = delivered.iter().map(|event| event.id).collect();
    assert_eq!(distinct.len(), 10_000);
    assert_eq!(first_deliveries_by_key(&delivered), written_by_key(&events));
}

#[tokio::test]
async fn a_relay_killed_mid_pass_loses_nothing_and_keeps_each_key_in_order() {
    let outbox = Outbox::new().await;
    let events = keyed_events(3_000, 10);
    outbox.write(&events, 100).await;
    let config = RelayConfig {
        batch_size: 500,
        poll_interval: Duration::from_millis(200),
        ..RelayConfig::default()
    };
    let (_stop, doomed) = outbox.spawn_relay(config.clone());
    // Killed once it has sent some rows and long before it has sent them all.
    let started = shared::testing::eventually(Duration::from_secs(30), || async {
        (outbox.unsent().await < 3_000).then_some(())
    })
    .await;
    assert!(started.is_some(), "the relay was sending");
    doomed.abort();
    let _ = doomed.await;
    let unsent_after_crash = outbox.unsent().await;

    let (stop, survivor) = outbox.spawn_relay(config);
    outbox.wait_until_all_sent().await;
    stop.cancel();
    survivor.await.unwrap();

    let delivered = outbox.delivered().await;
    let distinct: HashSet<Uuid> = delivered.iter().map(|event| event.id).collect();
    assert_eq!(distinct.len(), 3_000, "nothing lost");
    assert!(
        delivered.len() as i64 <= 3_000 + unsent_after_crash,
        "only rows of the interrupted pass may come twice"
    );
    assert_eq!(first_deliveries_by_key(&delivered), written_by_key(&events));
}

#[tokio::test]
async fn a_committed_row_wakes_the_relay_and_a_rolled_back_one_never_leaves() {
    let outbox = Outbox::new().await;
    let (stop, relay) = outbox.spawn_relay(RelayConfig {
        poll_interval: Duration::from_secs(600),
        ..RelayConfig::default()
    });
    // Wait until the relay is idle on LISTEN after its first, empty pass:
    // its listener is registered, a claim has run, and nothing of it is
    // still at work. A row committed from here on can only be found by the
    // notification (the next poll is 10 minutes away).
    let idle = eventually(Duration::from_secs(30), || async {
        let (listening, claimed, busy): (bool, bool, bool) = sqlx::query_as(
            "SELECT coalesce(bool_or(query LIKE 'LISTEN%' AND state = 'idle'), false), \
                    coalesce(bool_or(query LIKE '%SKIP LOCKED%' AND state = 'idle'), false), \
                    coalesce(bool_or(state <> 'idle'), false) \
             FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&outbox.database.pool)
        .await
        .unwrap();
        (listening && claimed && !busy).then_some(())
    })
    .await;
    assert!(idle.is_some(), "the relay went idle on LISTEN");

    let rolled_back = keyed_events(1, 1);
    let mut transaction = outbox.database.pool.begin().await.unwrap();
    shared::outbox::enqueue(&mut transaction, &rolled_back)
        .await
        .unwrap();
    transaction.rollback().await.unwrap();

    let committed = keyed_events(1, 1);
    outbox.write(&committed, 1).await;
    // Far sooner than the 10-minute poll: only the notification can explain it.
    let sent = eventually(Duration::from_secs(20), || async {
        (outbox.unsent().await == 0).then_some(())
    })
    .await;
    assert!(sent.is_some(), "the notification woke the relay");
    stop.cancel();
    relay.await.unwrap();

    let delivered: Vec<Uuid> = outbox.delivered().await.iter().map(|e| e.id).collect();
    assert_eq!(delivered, [committed[0].id]);
}

#[tokio::test]
async fn sent_rows_are_deleted_after_the_retention_period() {
    let outbox = Outbox::new().await;
    outbox.write(&keyed_events(20, 2), 10).await;
    let relay = outbox.relay(RelayConfig {
        retention: Duration::ZERO,
        purge_interval: Duration::ZERO,
        poll_interval: Duration::from_millis(100),
        ..RelayConfig::default()
    });
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { relay.run(stop).await }
    });
    let emptied = outbox.emptied(Duration::from_secs(20)).await;
    stop.cancel();
    running.await.unwrap();
    assert!(emptied.is_some(), "sent rows were purged");
    assert_eq!(outbox.delivered().await.len(), 20);
}

/// `event` on partition key `key`.
fn on_key(mut event: Event, key: &str) -> Event {
    event.partition_key = key.to_owned();
    event
}

/// (unsent and not parked, parked) rows.
async fn unsent_and_parked(outbox: &Outbox) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE parked_at IS NULL), count(*) FILTER (WHERE parked_at IS NOT NULL)
         FROM outbox WHERE sent_at IS NULL",
    )
    .fetch_one(&outbox.database.pool)
    .await
    .unwrap()
}

/// Runs the real `producers` binary against the outbox's database.
fn producers_cli(outbox: &Outbox, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_producers"))
        .args(args)
        .env("SWITCHYARD_NAMESPACE", &outbox.isolated.settings.namespace)
        .env(
            "DATABASE_URL",
            shared::testing::database_url(&outbox.database.settings),
        )
        .env("RUST_LOG", "warn")
        .output()
        .expect("run producers")
}

#[tokio::test]
async fn a_row_the_broker_cannot_route_is_parked_and_its_key_goes_on() {
    let outbox = Outbox::new().await;
    crate::gateway::support::bind_routing_key(&outbox.isolated, "order.cancelled", false).await;
    let before = on_key(crate::gateway::support::order_placed("/outbox-test"), "k");
    let unroutable = on_key(
        crate::gateway::support::order_cancelled("/outbox-test"),
        "k",
    );
    let after = on_key(crate::gateway::support::order_placed("/outbox-test"), "k");
    outbox
        .write(&[before.clone(), unroutable.clone(), after.clone()], 3)
        .await;

    let relay = outbox.relay(RelayConfig::default());
    let pass = relay.pass().await.unwrap();
    assert_eq!((pass.published, pass.parked, pass.failed), (2, 1, 0));
    assert_eq!(unsent_and_parked(&outbox).await, (0, 1));
    let delivered: Vec<Uuid> = outbox.delivered().await.iter().map(|e| e.id).collect();
    assert_eq!(
        delivered,
        [before.id, after.id],
        "the key went on, in order"
    );
    let (id, attempts, reason): (i64, i32, String) = sqlx::query_as(
        "SELECT id, attempts, parked_reason FROM outbox WHERE event_id = $1 AND parked_at IS NOT NULL",
    )
    .bind(unroutable.id)
    .fetch_one(&outbox.database.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert!(reason.contains("unroutable"), "{reason}");

    // The operator sees it with the real binary ...
    let listed = producers_cli(&outbox, &["outbox", "list", "--parked"]);
    assert!(listed.status.success(), "{listed:?}");
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains(&unroutable.id.to_string()), "{listed}");
    assert!(listed.contains("unroutable"), "{listed}");
    assert!(!listed.contains(&before.id.to_string()), "{listed}");

    // ... fixes the topology, and puts the row back in line.
    crate::gateway::support::bind_routing_key(&outbox.isolated, "order.cancelled", true).await;
    let unparked = producers_cli(&outbox, &["outbox", "unpark", &id.to_string()]);
    assert!(unparked.status.success(), "{unparked:?}");
    assert_eq!(
        String::from_utf8(unparked.stdout).unwrap().trim(),
        format!("unparked {id}")
    );
    let again = producers_cli(&outbox, &["outbox", "unpark", &id.to_string()]);
    assert!(
        !again.status.success(),
        "a row not parked cannot be unparked"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(&format!("[{id}]")),
        "{again:?}"
    );
    let pass = relay.pass().await.unwrap();
    assert_eq!((pass.published, pass.parked), (1, 0));
    assert_eq!(unsent_and_parked(&outbox).await, (0, 0));
}

#[tokio::test]
async fn a_row_that_fails_for_a_passing_reason_waits_and_holds_its_key_back() {
    let outbox = Outbox::new().await;
    let (proxy, through_proxy) =
        shared::testing::TcpProxy::in_front_of(outbox.isolated.settings.expose_amqp_url()).await;
    let mut settings = outbox.isolated.settings.clone();
    settings.amqp_url = through_proxy.into();
    settings.publish.timeout = Duration::from_secs(2);
    let publisher = Publisher::new(
        &settings,
        outbox.isolated.topology.events_exchange(),
        "relay-test",
    );
    let relay = Relay::new(
        outbox.database.pool.clone(),
        publisher,
        RelayConfig::default(),
    );
    let first = on_key(crate::gateway::support::order_placed("/outbox-test"), "k");
    let second = on_key(crate::gateway::support::order_placed("/outbox-test"), "k");
    outbox.write(&[first.clone(), second.clone()], 2).await;

    proxy.cut();
    let pass = relay.pass().await.unwrap();
    assert_eq!((pass.published, pass.failed, pass.parked), (0, 1, 0));
    let (attempts, error, delay): (i32, String, f64) = sqlx::query_as(
        "SELECT attempts, last_error,
                extract(epoch FROM next_attempt_at - last_attempt_at)::float8
         FROM outbox WHERE event_id = $1",
    )
    .bind(first.id)
    .fetch_one(&outbox.database.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert!(!error.is_empty());
    assert_eq!(delay, 1.0, "the first delay is 1 s");

    // The broker is back, but the row's delay has not passed (made long
    // here, so that the machine's speed does not matter): nothing of its
    // key goes, not even the second row.
    proxy.restore();
    sqlx::query(
        "UPDATE outbox SET next_attempt_at = now() + interval '1 hour' WHERE event_id = $1",
    )
    .bind(first.id)
    .execute(&outbox.database.pool)
    .await
    .unwrap();
    let pass = relay.pass().await.unwrap();
    assert_eq!((pass.claimed, pass.published), (0, 0));
    assert_eq!(unsent_and_parked(&outbox).await, (2, 0));

    // Once the delay has passed, both go, in order.
    sqlx::query("UPDATE outbox SET next_attempt_at = now()")
        .execute(&outbox.database.pool)
        .await
        .unwrap();
    let sent = eventually(Duration::from_secs(30), || async {
        relay.pass().await.unwrap();
        (outbox.unsent().await == 0).then_some(())
    })
    .await;
    assert!(sent.is_some(), "sent once the delay passed");
    let delivered: Vec<Uuid> = outbox.delivered().await.iter().map(|e| e.id).collect();
    assert_eq!(delivered, [first.id, second.id]);
}

/// A key waiting to retry holds back only its own rows: with more of
/// them behind its waiting row than a pass claims (500), the rows of other
/// keys written after them still go in the next pass.
#[tokio::test]
async fn a_key_waiting_to_retry_does_not_starve_the_other_keys() {
    let outbox = Outbox::new().await;
    let relay = outbox.relay(RelayConfig::default());
    let waiting: Vec<Event> = (0..600)
        .map(|_| {
            on_key(
                crate::gateway::support::order_placed("/outbox-test"),
                "waiting",
            )
        })
        .collect();
    let others: Vec<Event> = (0..50)
        .map(|index| {
            on_key(
                crate::gateway::support::order_placed("/outbox-test"),
                &format!("other-{index}"),
            )
        })
        .collect();
    outbox.write(&waiting, 100).await;
    outbox.write(&others, 50).await;
    // The waiting key's first row failed and waits an hour, as after a
    // nack (`claim::postpone`).
    sqlx::query(
        "UPDATE outbox SET attempts = 1, next_attempt_at = now() + interval '1 hour' \
         WHERE event_id = $1",
    )
    .bind(waiting[0].id)
    .execute(&outbox.database.pool)
    .await
    .unwrap();

    let pass = relay.pass().await.unwrap();

    assert_eq!((pass.claimed, pass.published), (50, 50));
    let delivered: HashSet<Uuid> = outbox.delivered().await.iter().map(|e| e.id).collect();
    assert_eq!(delivered, others.iter().map(|event| event.id).collect());
    assert_eq!(
        outbox.unsent().await,
        600,
        "the waiting key's rows all wait"
    );
}

#[tokio::test]
async fn rows_are_parked_by_hand_with_a_reason_and_bad_requests_are_refused() {
    let outbox = Outbox::new().await;
    let stuck = on_key(crate::gateway::support::order_placed("/outbox-test"), "k");
    outbox.write(std::slice::from_ref(&stuck), 1).await;
    let id: i64 = sqlx::query_scalar("SELECT id FROM outbox")
        .fetch_one(&outbox.database.pool)
        .await
        .unwrap();

    let parked = producers_cli(
        &outbox,
        &[
            "outbox",
            "park",
            &id.to_string(),
            "--reason",
            "poisons the ledger",
        ],
    );
    assert!(parked.status.success(), "{parked:?}");
    assert_eq!(unsent_and_parked(&outbox).await, (0, 1));
    let listed = producers_cli(&outbox, &["outbox", "list"]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("parked by hand: poisons the ledger"),
        "{listed}"
    );
    let pass = outbox.relay(RelayConfig::default()).pass().await.unwrap();
    assert_eq!(pass.claimed, 0, "a parked row is not sent");

    let blank = producers_cli(
        &outbox,
        &["outbox", "park", &id.to_string(), "--reason", " "],
    );
    assert!(!blank.status.success());
    let unknown = producers_cli(&outbox, &["outbox", "unpark", "999999"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("[999999]"));
}

/// A database that stops answering (a proxy holding every byte, as in a
/// network cut) fails the relay's pass once a statement has waited its
/// patience, instead of holding the relay (and its stop) until TCP gives
/// up; nothing is marked sent, and once the traffic flows again the rows
/// go, each once, in order.
#[tokio::test]
async fn a_pass_on_a_database_that_stops_answering_fails_in_time() {
    let outbox = Outbox::new().await;
    let events = keyed_events(10, 2);
    outbox.write(&events, 10).await;
    let (proxy, through_proxy) = shared::testing::TcpProxy::in_front_of(
        &shared::testing::database_url(&outbox.database.settings),
    )
    .await;
    let mut settings = outbox.database.settings.clone();
    settings.database_url = through_proxy.into();
    let pool = shared::database::connect(&settings, 3, false)
        .await
        .unwrap();
    let publisher = Publisher::new(
        &outbox.isolated.settings,
        outbox.isolated.topology.events_exchange(),
        "relay-test",
    );
    let relay = Relay::new(
        pool,
        publisher,
        RelayConfig {
            database_patience: Duration::from_secs(1),
            ..RelayConfig::default()
        },
    );

    proxy.stall();
    let pass = tokio::time::timeout(Duration::from_secs(30), relay.pass())
        .await
        .expect("the pass does not wait on the silence");
    assert!(pass.is_err(), "the pass fails: {pass:?}");
    assert_eq!(outbox.unsent().await, 10, "nothing is marked sent");

    proxy.restore();
    let sent = eventually(Duration::from_secs(30), || async {
        let _ = relay.pass().await;
        (outbox.unsent().await == 0).then_some(())
    })
    .await;
    assert!(sent.is_some(), "sent once the database answers");
    let delivered = outbox.delivered().await;
    assert_eq!(delivered.len(), 10, "each once");
    assert_eq!(first_deliveries_by_key(&delivered), written_by_key(&events));
}

/// The real `producers relay` process with `args` and `environment`,
/// its database reached at `database_url`; logs as JSON on stderr.
fn relay_process(
    outbox: &Outbox,
    database_url: &str,
    args: &[&str],
    environment: &[(&str, &str)],
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_producers"))
        .arg("relay")
        .args(args)
        .env("SWITCHYARD_NAMESPACE", &outbox.isolated.settings.namespace)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .envs(environment.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start producers relay")
}

/// Sends SIGTERM to `child`; its status if it exits within `within`
/// (killed otherwise), and what it logged.
async fn stopped(
    mut child: std::process::Child,
    within: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    let exited = shared::testing::sigterm_and_wait(&mut child, within).await;
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut logged = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut logged);
    }
    (exited, logged)
}

/// The `producers relay` binary: out-of-range flags and variables are
/// refused, naming the flag; `--batch-size` bounds each pass and the poll
/// interval reaches the relay; a stop on SIGTERM is bounded although the
/// database stopped answering (its listener's connection is never given
/// back); `--retention-hours 0` purges the sent rows as soon as it starts.
#[tokio::test]
async fn the_relay_binary_honours_its_flags_and_stops_on_a_silent_database() {
    let outbox = Outbox::new().await;
    let direct = shared::testing::database_url(&outbox.database.settings);
    for (args, environment, flag) in [
        (&["--batch-size", "0"][..], &[][..], "--batch-size"),
        (
            &["--poll-interval-ms", "5"][..],
            &[][..],
            "--poll-interval-ms",
        ),
        (
            &[][..],
            &[("SWITCHYARD_RELAY_RETENTION_HOURS", "876001")][..],
            "--retention-hours",
        ),
    ] {
        let output = relay_process(&outbox, &direct, args, environment)
            .wait_with_output()
            .unwrap();
        shared::testing::assert_refused(&output, flag, &(args, environment));
    }

    let events = keyed_events(10, 2);
    outbox.write(&events, 10).await;
    let (proxy, through_proxy) = shared::testing::TcpProxy::in_front_of(&direct).await;
    let relay = relay_process(
        &outbox,
        &through_proxy,
        &["--batch-size", "2"],
        &[("SWITCHYARD_RELAY_POLL_INTERVAL_MS", "3600000")],
    );
    outbox.wait_until_all_sent().await;
    let passes: Vec<i64> =
        sqlx::query_scalar("SELECT count(*) FROM outbox GROUP BY sent_at ORDER BY sent_at")
            .fetch_all(&outbox.database.pool)
            .await
            .unwrap();
    assert_eq!(passes, vec![2; 5], "five passes of two rows each");

    // Idle on LISTEN when the database goes silent.
    proxy.stall();
    let (exited, logged) = stopped(relay, Duration::from_secs(60)).await;
    let exited = exited.expect("the relay stops although the database does not answer");
    assert!(exited.success(), "a clean stop: {exited}: {logged}");
    assert!(
        logged.contains("\"batch_size\":2") && logged.contains("\"poll_interval\":\"3600s\""),
        "the relay runs with the flags given: {logged}"
    );
    assert!(logged.contains("outbox relay stopped"), "{logged}");
    proxy.restore();

    let purging = relay_process(&outbox, &direct, &["--retention-hours", "0"], &[]);
    let purged = outbox.emptied(Duration::from_secs(30)).await;
    let (exited, logged) = stopped(purging, Duration::from_secs(60)).await;
    assert!(
        purged.is_some(),
        "the sent rows were purged at start: {logged}"
    );
    assert!(exited.is_some_and(|status| status.success()), "{logged}");
    let delivered = outbox.delivered().await;
    assert_eq!(delivered.len(), 10, "each row published once");
    assert_eq!(first_deliveries_by_key(&delivered), written_by_key(&events));
}
