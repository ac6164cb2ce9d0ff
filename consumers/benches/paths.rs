//! The two batch paths on the same store traffic: set-wise (one call of
//! the group's function per batch) and event by event (a savepoint per
//! event, the function called with that event alone — the path for poison
//! and for batches whose call raised). Each run applies `PATHS_EVENTS`
//! store events (default 6,000; seed 5) for every group in batches of 128
//! on a fresh database, transient failures tried again after the rest as
//! the retry queues would; prints events/s per path and run, the medians
//! and their ratio. Local PostgreSQL only (as the tests):
//! `cargo bench -p consumers --bench paths`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::VecDeque;
use std::time::Instant;

use runtime::batch::{BatchContext, Outcome, process_batch, process_batch_event_by_event};
use runtime::incoming::Incoming;
use shared::events::Event;
use shared::groups::ConsumerGroup;
use shared::retry::RetryPolicy;
use shared::simulation::StoreTraffic;
use shared::testing::TestDatabase;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    SetWise,
    EventByEvent,
}

fn incoming(event: &Event) -> Incoming {
    Incoming {
        body: event.to_json_bytes(),
        routing_key: event.event_type().as_str().to_owned(),
        properties: lapin::BasicProperties::default()
            .with_message_id(event.id.to_string().into())
            .with_type(event.event_type().as_str().into()),
        event: Ok(event.clone()),
        history: runtime::attempts::AttemptHistory::default(),
        oversize: None,
    }
}

/// Applies `stream` along `path`; the number of events applied and the
/// seconds it took.
async fn run(stream: &[Event], path: Path) -> (usize, f64) {
    let database = TestDatabase::create().await;
    let started = Instant::now();
    let mut applied = 0;
    for group in ConsumerGroup::ALL {
        let context = BatchContext {
            group,
            handlers: consumers::handlers::Store::shared(),
            worker: "bench".into(),
            policy: RetryPolicy {
                max_attempts: u32::MAX,
                ..RetryPolicy::default()
            },
            attempt_key: runtime::AttemptKey::from_bytes([1; 32]),
        };
        let mut pending: VecDeque<Incoming> = stream
            .iter()
            .filter(|event| group.handles(event.event_type()))
            .map(incoming)
            .collect();
        while !pending.is_empty() {
            let take = 128.min(pending.len());
            let chunk: Vec<Incoming> = pending.drain(..take).collect();
            let mut connection = database.pool.acquire().await.unwrap();
            let outcomes = match path {
                Path::SetWise => process_batch(&mut connection, &context, &chunk).await,
                Path::EventByEvent => {
                    process_batch_event_by_event(&mut connection, &context, &chunk).await
                }
            }
            .unwrap()
            .outcomes;
            for (mut incoming, outcome) in chunk.into_iter().zip(outcomes) {
                match outcome {
                    Outcome::Applied => applied += 1,
                    Outcome::Duplicate | Outcome::DeadLettered => {}
                    Outcome::Retry(history) => {
                        incoming.history = history;
                        pending.push_back(incoming);
                    }
                }
            }
        }
    }
    (applied, started.elapsed().as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::var("PATHS_EVENTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(6_000);
    let repeat: usize = std::env::var("PATHS_REPEAT")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3);
    let mut store = StoreTraffic::new(5);
    let stream: Vec<Event> = (0..events).map(|_| store.next_event()).collect();
    let mut rates = [Vec::new(), Vec::new()];
    // Interleaved, so a slow spell of the host falls on both paths.
    for round in 0..repeat {
        for (slot, path) in [Path::SetWise, Path::EventByEvent].into_iter().enumerate() {
            let (applied, seconds) = run(&stream, path).await;
            let rate = applied as f64 / seconds;
            println!(
                "run {round} {path:?}: {applied} applied in {seconds:.2} s, {rate:.0} events/s"
            );
            rates[slot].push(rate);
        }
    }
    let [set_wise, event_by_event] = rates.map(median);
    println!(
        "medians: set-wise {set_wise:.0} events/s, event by event {event_by_event:.0} events/s, \
         ratio {:.2}",
        event_by_event / set_wise
    );
}
