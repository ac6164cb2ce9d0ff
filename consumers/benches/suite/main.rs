//! Switchyard's benchmark suite, against the real local RabbitMQ and
//! PostgreSQL (quorum queues, TLS off), every scenario in its own namespace
//! and database, in one run:
//!
//! - the broker's publish-and-consume ceiling (a hand-written batching
//!   consumer, no database) and PostgreSQL's batched-write ceiling (the
//!   groups' set-wise functions called directly, no broker);
//! - a hand-written consumer doing the same database work without the
//!   runtime (the reference);
//! - Switchyard end to end (`consumers run` processes; this process
//!   publishes with confirms) on the store mix (the main job's traffic,
//!   seed 5) and on `order.placed` only, with 1, 2 and 3 worker processes;
//! - draining a pre-loaded backlog of the store mix with 1, 2 and 3;
//! - publish→commit latency percentiles at 500, 2,000 and 5,000 events/s
//!   offered, beside the broker-alone latency at the same rates and the
//!   hand-written reference's publish→commit latency (the same database
//!   work without the runtime);
//! - CPU per 1,000 deliveries for the broker, PostgreSQL, the consumer
//!   processes and this process, in each scenario.
//!
//! `cargo bench -p consumers --bench suite` prints a table, then the same
//! figures as JSON, and writes `results.json`, `results.md` and
//! `throughput-and-p99.png` to `target/bench-suite/` (`BENCH_OUT`).
//! Scenarios are interleaved across runs, so drift on a noisy machine hits
//! them alike; figures are medians. Environment: `BENCH_EVENTS` (30000),
//! `BENCH_REPEAT` (3), `BENCH_PROCESSES` (`1,2,3`), `BENCH_RATES`
//! (`500,2000,5000`), `BENCH_LATENCY_SECONDS` (10),
//! `BENCH_ONLY=throughput|latency`, `BENCH_CONSUMERS` (the `consumers`
//! binary to run instead of the one Cargo built, for A/B runs of two
//! builds). Not part of CI.

#![allow(clippy::unwrap_used, missing_docs)]

mod cpu;
mod plot;
mod processes;
mod report;
mod roles;
mod scenarios;

use std::path::PathBuf;

use serde::Serialize;
use shared::events::catalog::{OrderLine, OrderPlaced};
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use shared::testing::{IsolatedTopology, TestDatabase};
use uuid::Uuid;

use crate::report::{LatencyRow, Report, ThroughputRow};
use crate::scenarios::{Latency, Throughput};

/// The two workloads every scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// The main job's traffic: registrations, listings, price changes,
    /// restocks, orders, payments (some failed), shipments, cancellations.
    StoreMix,
    /// Orders only, one to three lines each over 200 SKUs with ample stock.
    OrderPlaced,
}

const SKUS: usize = 200;
/// The main job's default seed.
const STORE_SEED: u64 = 5;

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::StoreMix, Workload::OrderPlaced];

    pub fn label(self) -> &'static str {
        match self {
            Workload::StoreMix => "store mix",
            Workload::OrderPlaced => "order.placed",
        }
    }

    /// The same `count` events every run.
    pub fn events(self, count: usize) -> Vec<Event> {
        match self {
            Workload::StoreMix => {
                let mut store = shared::simulation::StoreTraffic::new(STORE_SEED);
                (0..count).map(|_| store.next_event()).collect()
            }
            Workload::OrderPlaced => (0..count).map(order_placed).collect(),
        }
    }
}

fn order_placed(index: usize) -> Event {
    let lines = (0..1 + index % 3)
        .map(|line| OrderLine {
            sku: format!("SKU-{:05}", (index * 7 + line * 13) % SKUS),
            category: ["kitchen", "garden", "books", "toys"][(index + line) % 4].to_owned(),
            quantity: 1 + (line as i64 % 2),
            unit_price_cents: 1_999,
        })
        .collect();
    Event::new(
        "/bench",
        EventPayload::OrderPlaced(OrderPlaced {
            order_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            currency: "EUR".into(),
            lines,
        }),
    )
}

/// Deliveries `events` make: one per group whose queue is bound for its type.
pub fn deliveries(events: &[Event]) -> i64 {
    events
        .iter()
        .map(|event| {
            ConsumerGroup::ALL
                .iter()
                .filter(|group| group.handles(event.event_type()))
                .count() as i64
        })
        .sum()
}

/// A namespace and a migrated database of their own, removed when dropped.
pub struct Scenario {
    pub isolated: IsolatedTopology,
    pub database: TestDatabase,
}

impl Scenario {
    pub async fn new(workload: Workload) -> Self {
        let settings = shared::settings::Settings::from_env()
            .unwrap()
            .with_namespace(format!("bench-{}", Uuid::now_v7().simple()));
        let isolated = IsolatedTopology::declare_with(settings).await;
        let database = TestDatabase::create_with(isolated.settings.clone()).await;
        if workload == Workload::OrderPlaced {
            // Ample stock, so reservations never wait on restocks.
            sqlx::query("INSERT INTO stock (sku, on_hand) SELECT format('SKU-%s', lpad(i::text, 5, '0')), 1000000000 FROM generate_series(0, $1) i")
                .bind(SKUS as i32)
                .execute(&database.pool)
                .await
                .unwrap();
        }
        Self { isolated, database }
    }
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// What one invocation measures.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub events: usize,
    pub repeat: usize,
    pub processes: Vec<usize>,
    pub rates: Vec<u64>,
    pub latency_seconds: u64,
    #[serde(skip)]
    pub out: PathBuf,
    #[serde(skip)]
    pub only: String,
}

fn variable<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not valid")),
        Err(_) => default,
    }
}

fn list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    let value = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    value
        .split(',')
        .map(|item| {
            item.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}={value:?} is not a comma-separated list"))
        })
        .collect()
}

impl Config {
    fn from_env() -> Self {
        Self {
            events: variable("BENCH_EVENTS", 30_000),
            repeat: variable("BENCH_REPEAT", 3),
            processes: list("BENCH_PROCESSES", "1,2,3"),
            rates: list("BENCH_RATES", "500,2000,5000"),
            latency_seconds: variable("BENCH_LATENCY_SECONDS", 10),
            out: std::env::var("BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/../target/bench-suite"
                    ))
                }),
            only: std::env::var("BENCH_ONLY").unwrap_or_default(),
        }
    }
}

/// What a row is measured under: scenario or system, workload, and
/// processes or offered rate.
type Key = (String, Workload, Option<usize>);

/// Samples gathered under one name, in the order first seen.
struct Samples<T> {
    rows: Vec<(Key, Vec<T>)>,
}

impl<T> Default for Samples<T> {
    fn default() -> Self {
        Self { rows: Vec::new() }
    }
}

impl<T> Samples<T> {
    fn push(&mut self, key: Key, sample: T) {
        match self.rows.iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, samples)) => samples.push(sample),
            None => self.rows.push((key, vec![sample])),
        }
    }
}

#[tokio::main]
async fn main() {
    if let Ok(role) = std::env::var(roles::ROLE_VARIABLE) {
        return roles::run(&role).await;
    }
    let config = Config::from_env();
    let mut throughput: Samples<Throughput> = Samples::default();
    let mut latency: Samples<Latency> = Samples::default();
    if config.only != "latency" {
        run_throughput(&config, &mut throughput).await;
    }
    if config.only != "throughput" {
        run_latency(&config, &mut latency).await;
    }
    let report = Report::new(
        &config,
        throughput
            .rows
            .into_iter()
            .map(|((scenario, workload, processes), runs)| {
                ThroughputRow::new(scenario, workload, processes, runs)
            })
            .collect(),
        latency
            .rows
            .into_iter()
            .map(|((system, workload, offered), runs)| {
                LatencyRow::new(system, workload, offered.unwrap_or(0) as u64, runs)
            })
            .collect(),
    )
    .await;
    report.print_table();
    let json = serde_json::to_string_pretty(&report).unwrap();
    println!("{json}");
    std::fs::create_dir_all(&config.out).unwrap();
    std::fs::write(config.out.join("results.json"), &json).unwrap();
    std::fs::write(config.out.join("results.md"), report.markdown()).unwrap();
    let picture = config.out.join("throughput-and-p99.png");
    match plot::draw(&report, &picture) {
        Ok(()) => println!("wrote {}", config.out.display()),
        Err(error) => println!(
            "wrote the figures to {}; the plot failed: {error}",
            config.out.display()
        ),
    }
}

async fn run_throughput(config: &Config, samples: &mut Samples<Throughput>) {
    let streams: Vec<(Workload, Vec<Event>)> = Workload::ALL
        .iter()
        .map(|workload| (*workload, workload.events(config.events)))
        .collect();
    let single = Workload::OrderPlaced.events(config.events / 5);
    for run in 1..=config.repeat {
        println!("throughput, run {run} of {}", config.repeat);
        for (workload, events) in &streams {
            let workload = *workload;
            let mut record = |name: &str, processes: Option<usize>, measured: Throughput| {
                println!(
                    "  {:<40} {:<13} {:>2} {:>9.0} deliveries/s  CPU ms/1,000: broker {:.0}, postgres {:.0}, consumer {:.0}, bench {:.0}",
                    name,
                    workload.label(),
                    processes.map_or("-".to_owned(), |p| p.to_string()),
                    measured.rate,
                    measured.cpu.broker,
                    measured.cpu.postgres,
                    measured.cpu.consumer,
                    measured.cpu.bench,
                );
                samples.push((name.to_owned(), workload, processes), measured);
            };
            record(
                "broker ceiling",
                None,
                scenarios::hand_written("ceiling", workload, events).await,
            );
            record(
                "database ceiling",
                None,
                scenarios::database_ceiling(workload, events).await,
            );
            record(
                "hand-written reference",
                None,
                scenarios::hand_written("reference", workload, events).await,
            );
            for &processes in &config.processes {
                record(
                    "switchyard end to end",
                    Some(processes),
                    scenarios::end_to_end(workload, events, processes, None).await,
                );
            }
            if workload == Workload::StoreMix {
                for &processes in &config.processes {
                    record(
                        "switchyard backlog drain",
                        Some(processes),
                        scenarios::drain(workload, events, processes).await,
                    );
                }
            } else {
                record(
                    "switchyard, one event per transaction",
                    Some(1),
                    scenarios::end_to_end(workload, &single, 1, Some(1)).await,
                );
            }
        }
    }
}

async fn run_latency(config: &Config, samples: &mut Samples<Latency>) {
    for run in 1..=config.repeat {
        println!("latency, run {run} of {}", config.repeat);
        for workload in Workload::ALL {
            for &rate in &config.rates {
                let count = (rate * config.latency_seconds) as usize;
                let broker =
                    scenarios::broker_latency(workload, workload.events(count), rate).await;
                let reference =
                    scenarios::reference_latency(workload, workload.events(count), rate).await;
                let switchyard =
                    scenarios::switchyard_latency(workload, workload.events(count), rate).await;
                for (system, measured) in [
                    ("broker alone", broker),
                    ("hand-written reference", reference),
                    ("switchyard", switchyard),
                ] {
                    println!(
                        "  {:<22} {:<13} {:>5}/s offered: {:>6.0}/s through, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
                        system,
                        workload.label(),
                        rate,
                        measured.achieved,
                        measured.p50_ms,
                        measured.p90_ms,
                        measured.p99_ms
                    );
                    samples.push((system.to_owned(), workload, Some(rate as usize)), measured);
                }
            }
        }
    }
}
