//! The main job end to end, briefly, in its own namespace and database:
//! gateway, relay and workers under store traffic with invalid events and
//! an outbox share; the summary must match the database.

use std::time::Duration;

use shared::testing::{IsolatedTopology, TestDatabase};
use switchyard::{StackOptions, run_stack};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_accounts_for_every_accepted_event_in_the_database() {
    let isolated = IsolatedTopology::declare().await;
    let database = TestDatabase::create_with(isolated.settings.clone()).await;
    let options = StackOptions {
        duration: Some(Duration::from_secs(4)),
        rate: 300,
        seed: 11,
        invalid_share: 0.05,
        outbox_share: 0.3,
        gateway_listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        drain: Duration::from_secs(90),
        progress_every: Duration::from_millis(500),
    };
    let summary = run_stack(&database.settings, options, CancellationToken::new())
        .await
        .unwrap();

    assert!(summary.balanced(), "{:?}", summary.groups);
    assert_eq!(summary.load.failed, 0);
    assert!(summary.load.accepted_direct > 0);
    assert!(summary.load.accepted_outbox > 0);
    assert!(summary.load.refused_invalid > 0);
    let expected: i64 = summary.groups.values().map(|group| group.expected).sum();
    let applied_or_dead: i64 = summary
        .groups
        .values()
        .map(|group| group.applied + group.dead_lettered)
        .sum();
    assert_eq!(applied_or_dead, expected);
    // The database agrees independently of the summary's own query.
    let processed: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(processed + dead, expected);
    let live_keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
            .fetch_one(&database.pool)
            .await
            .unwrap();
    assert_eq!(live_keys, 0, "the run's key is revoked at the end");
}
