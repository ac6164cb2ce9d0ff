//! A deterministic simulation of the worker loop, in the manner of
//! FoundationDB's simulation testing and TigerBeetle's VOPR: the real loop
//! ([`runtime::worker::consume`]: batching, lingering,
//! pipelining, holding, settling, retries, stopping) runs against an
//! in-memory broker channel and database that fail, stall, commit late,
//! refuse retries and lose the connection at random moments, with stop
//! requests (a shutdown, or a lease handed over) and restarts, all drawn
//! from one seed on tokio's paused clock in one thread: a failing seed
//! replays exactly.
//!
//! The broker double keeps AMQP's rules: tags per channel, a `multiple`
//! ack covers every earlier unacked tag, a nack with requeue puts the
//! message back, a lost or closed channel gives back everything unacked,
//! acks on a dead channel go nowhere. Checked on every run:
//! - every ack (each tag a `multiple` ack covers) comes after that
//!   delivery's own outcome was committed, and never for a tag that is
//!   not outstanding;
//! - by the end every message has been settled: applied once or
//!   dead-lettered once, never both, and nothing is left in the queue.
//!
//! `SWITCHYARD_SIMULATION_SEEDS` sets how many seeds (5,000 by default,
//! a few seconds); `SWITCHYARD_SIMULATION_FIRST_SEED` where they start
//! (to replay one: `..._FIRST_SEED=N ..._SEEDS=1`). A soak:
//! `SWITCHYARD_SIMULATION_SEEDS=200000 cargo test -p consumers --test it simulation`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::Stream;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runtime::attempts::{AttemptHistory, AttemptKey, AttemptRecord};
use runtime::batch::{BatchContext, BatchError, Outcome};
use runtime::incoming::{Incoming, Refusal};
use runtime::positions::Position;
use runtime::settlement::Acknowledge;
use runtime::worker::ports::{Channel, Received, Retries, Store};
use runtime::worker::{Batching, Parts, consume};
use runtime::{Health, RuntimeError};
use shared::events::{DecodeError, Event};
use shared::groups::ConsumerGroup;
use shared::publish::PublishError;
use shared::retry::RetryPolicy;
use tokio_util::sync::CancellationToken;

/// Attempts in all for an event that fails transiently.
const MAX_ATTEMPTS: u32 = 4;

/// What a message is, and so what the database makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Applies on its first try.
    Valid,
    /// Fails transiently this many attempts, then applies (or, past the
    /// budget, is dead-lettered).
    Transient(u32),
    /// Not an event: dead-lettered at once.
    Poison,
}

/// A message in the queue: which one, and the attempts its headers carry.
#[derive(Debug, Clone, Copy)]
struct Message {
    index: usize,
    failed_attempts: u32,
}

/// One delivery: the message and the number that names this delivery.
#[derive(Debug, Clone, Copy)]
struct Sent {
    message: Message,
    delivery: u64,
}

#[derive(Default)]
struct Broker {
    ready: VecDeque<Message>,
    /// The open channel (0: none).
    channel: u64,
    lost: bool,
    cancelled: bool,
    prefetch: usize,
    next_tag: u64,
    /// Sent on the open channel and not settled, by tag.
    unacked: BTreeMap<u64, Sent>,
    /// Sent and not yet taken from the consumer stream.
    buffer: VecDeque<u64>,
    /// The stream's end was reported (an error is reported once).
    error_reported: bool,
    waker: Option<Waker>,
    next_delivery: u64,
    /// Retries published and still waiting out their delay.
    waiting: usize,
}

#[derive(Default)]
struct Database {
    /// Deliveries whose outcome is committed (a retry counts once its
    /// wait queue confirmed it).
    settled: BTreeSet<u64>,
    applied: BTreeMap<usize, u32>,
    dead: BTreeSet<usize>,
}

struct World {
    rng: StdRng,
    kinds: Vec<Kind>,
    events: Vec<Event>,
    broker: Broker,
    database: Database,
    /// Chance that a try of a batch fails, stalls, commits late…
    chaos: f64,
    violations: Vec<String>,
    /// What happened when, for the replay check.
    trace: Vec<String>,
    started: tokio::time::Instant,
}

type Shared = Arc<Mutex<World>>;

fn lock(world: &Shared) -> MutexGuard<'_, World> {
    world
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let count = rng.random_range(1..=60);
        let kinds: Vec<Kind> = (0..count)
            .map(|_| match rng.random_range(0..10) {
                0 => Kind::Poison,
                1 | 2 => Kind::Transient(rng.random_range(1..=MAX_ATTEMPTS)),
                _ => Kind::Valid,
            })
            .collect();
        let events = (0..count)
            .map(|_| crate::processing::order_placed(uuid::Uuid::from_u128(rng.random())))
            .collect();
        let chaos = [0.0, 0.05, 0.2, 0.5][rng.random_range(0..4)];
        let prefetch = rng.random_range(1..=40);
        Self {
            rng,
            kinds,
            events,
            broker: Broker {
                prefetch,
                ..Broker::default()
            },
            database: Database::default(),
            chaos,
            violations: Vec::new(),
            trace: Vec::new(),
            started: tokio::time::Instant::now(),
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    fn millis(&mut self, most: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(0..=most))
    }

    /// Sends what the prefetch window allows on the open channel.
    fn pump(&mut self) {
        let broker = &mut self.broker;
        while broker.channel != 0
            && !broker.lost
            && !broker.cancelled
            && broker.unacked.len() < broker.prefetch
        {
            let Some(message) = broker.ready.pop_front() else {
                break;
            };
            broker.next_tag += 1;
            broker.next_delivery += 1;
            let sent = Sent {
                message,
                delivery: broker.next_delivery,
            };
            broker.unacked.insert(broker.next_tag, sent);
            broker.buffer.push_back(broker.next_tag);
        }
        if let Some(waker) = broker.waker.take() {
            waker.wake();
        }
    }

    /// Opens a new channel (a worker's start, after a reconnect or a stop).
    fn open_channel(&mut self, id: u64) {
        let broker = &mut self.broker;
        broker.channel = id;
        broker.lost = false;
        broker.cancelled = false;
        broker.next_tag = 0;
        broker.error_reported = false;
        broker.unacked.clear();
        broker.buffer.clear();
        self.pump();
    }

    /// The channel closes (or its connection is lost): everything unacked
    /// goes back to the queue, in tag order, ahead of the rest.
    fn close_channel(&mut self, lost: bool) {
        let broker = &mut self.broker;
        let returned: Vec<Message> = broker.unacked.values().map(|sent| sent.message).collect();
        for message in returned.into_iter().rev() {
            broker.ready.push_front(message);
        }
        broker.unacked.clear();
        broker.buffer.clear();
        if lost {
            broker.lost = true;
        } else {
            broker.channel = 0;
        }
        if let Some(waker) = broker.waker.take() {
            waker.wake();
        }
    }

    fn note(&mut self, what: String) {
        let at = self.started.elapsed();
        self.trace.push(format!("{at:?} {what}"));
    }

    /// AMQP's basic.ack, checked against what the database committed.
    fn ack(&mut self, channel: u64, tag: u64, multiple: bool) -> bool {
        self.note(format!("channel {channel} ack {tag} multiple {multiple}"));
        if self.broker.channel != channel || self.broker.lost {
            return false;
        }
        if !self.broker.unacked.contains_key(&tag) {
            self.violations.push(format!(
                "ack of tag {tag}, which is not outstanding (the broker closes the channel)"
            ));
            return false;
        }
        let tags: Vec<u64> = if multiple {
            self.broker
                .unacked
                .range(..=tag)
                .map(|(tag, _)| *tag)
                .collect()
        } else {
            vec![tag]
        };
        for tag in tags {
            let Some(sent) = self.broker.unacked.remove(&tag) else {
                continue;
            };
            self.broker.buffer.retain(|buffered| *buffered != tag);
            if !self.database.settled.contains(&sent.delivery) {
                self.violations.push(format!(
                    "tag {tag} (message {}, {} failed attempts) acked{} before its outcome was committed: lost",
                    sent.message.index,
                    sent.message.failed_attempts,
                    if multiple { " by a multiple ack" } else { "" }
                ));
            }
        }
        self.pump();
        true
    }

    /// AMQP's basic.nack with requeue of one tag.
    fn requeue(&mut self, channel: u64, tag: u64) -> bool {
        self.note(format!("channel {channel} requeue {tag}"));
        if self.broker.channel != channel || self.broker.lost {
            return false;
        }
        let Some(sent) = self.broker.unacked.remove(&tag) else {
            self.violations
                .push(format!("nack of tag {tag}, which is not outstanding"));
            return false;
        };
        self.broker.buffer.retain(|buffered| *buffered != tag);
        self.broker.ready.push_front(sent.message);
        self.pump();
        true
    }

    fn incoming(&self, sent: Sent) -> Incoming {
        let event = &self.events[sent.message.index];
        let mut history = AttemptHistory::default();
        for _ in 0..sent.message.failed_attempts {
            history = history.with(record());
        }
        Incoming {
            body: event.to_json_bytes(),
            routing_key: "order.placed".to_owned(),
            // Names the delivery and the message, for the database double.
            properties: lapin::BasicProperties::default()
                .with_message_id(format!("{}/{}", sent.delivery, sent.message.index).into()),
            event: match self.kinds[sent.message.index] {
                Kind::Poison => Err(Refusal::Undecodable(DecodeError::NotJson(
                    "simulated".into(),
                ))),
                Kind::Valid | Kind::Transient(_) => Ok(event.clone()),
            },
            history,
            oversize: None,
        }
    }

    /// Commits `batch`'s outcomes, as the database would.
    fn commit(&mut self, batch: &[Incoming]) -> Vec<Outcome> {
        let names: Vec<(u64, usize)> = batch.iter().map(named).collect();
        self.note(format!("commit {names:?}"));
        batch
            .iter()
            .map(|incoming| {
                let (delivery, index) = named(incoming);
                let failed = incoming.history.records.len() as u32;
                let outcome = match self.kinds[index] {
                    Kind::Poison => Outcome::DeadLettered,
                    Kind::Transient(fails)
                        if failed < fails && !self.database.applied.contains_key(&index) =>
                    {
                        if failed + 1 >= MAX_ATTEMPTS {
                            Outcome::DeadLettered
                        } else {
                            Outcome::Retry(incoming.history.with(record()))
                        }
                    }
                    _ if self.database.dead.contains(&index) => Outcome::DeadLettered,
                    _ if self.database.applied.contains_key(&index) => Outcome::Duplicate,
                    _ => Outcome::Applied,
                };
                match outcome {
                    Outcome::Applied => {
                        *self.database.applied.entry(index).or_default() += 1;
                        self.database.settled.insert(delivery);
                    }
                    Outcome::DeadLettered => {
                        self.database.dead.insert(index);
                        self.database.settled.insert(delivery);
                    }
                    Outcome::Duplicate => {
                        self.database.settled.insert(delivery);
                    }
                    // Settled once the wait queue confirms it.
                    Outcome::Retry(_) => {}
                }
                outcome
            })
            .collect()
    }

    /// Every message applied or dead-lettered, and nothing left anywhere.
    fn finished(&self) -> bool {
        self.broker.ready.is_empty()
            && self.broker.unacked.is_empty()
            && self.broker.waiting == 0
            && (0..self.kinds.len()).all(|index| {
                self.database.applied.contains_key(&index) || self.database.dead.contains(&index)
            })
    }
}

/// The delivery and the message an [`Incoming`] of the simulation is.
fn named(incoming: &Incoming) -> (u64, usize) {
    let id = incoming.message_id().unwrap_or_default();
    let (delivery, index) = id.split_once('/').unwrap_or_default();
    (delivery.parse().unwrap_or(0), index.parse().unwrap_or(0))
}

fn record() -> AttemptRecord {
    AttemptRecord {
        at: chrono::DateTime::UNIX_EPOCH,
        worker: "simulated".into(),
        kind: "transient".into(),
        message: "simulated".into(),
    }
}

struct SimAcker {
    world: Shared,
    channel: u64,
    tag: u64,
}

impl Acknowledge for SimAcker {
    async fn ack(&self, multiple: bool) -> bool {
        lock(&self.world).ack(self.channel, self.tag, multiple)
    }

    async fn requeue(&self) -> bool {
        lock(&self.world).requeue(self.channel, self.tag)
    }
}

struct SimDeliveries {
    world: Shared,
    channel: u64,
}

impl Stream for SimDeliveries {
    type Item = Result<Received<SimAcker>, RuntimeError>;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut world = lock(&self.world);
        let broker = &mut world.broker;
        if broker.channel != self.channel {
            return Poll::Ready(None);
        }
        if broker.lost {
            if broker.error_reported {
                return Poll::Ready(None);
            }
            broker.error_reported = true;
            return Poll::Ready(Some(Err(RuntimeError::ConnectionLost {
                queue: "simulated".into(),
            })));
        }
        if let Some(tag) = broker.buffer.pop_front() {
            let sent = broker.unacked[&tag];
            let incoming = world.incoming(sent);
            return Poll::Ready(Some(Ok(Received {
                tag,
                acker: SimAcker {
                    world: Arc::clone(&self.world),
                    channel: self.channel,
                    tag,
                },
                incoming,
            })));
        }
        if broker.cancelled {
            return Poll::Ready(None);
        }
        broker.waker = Some(context.waker().clone());
        Poll::Pending
    }
}

struct SimChannel {
    world: Shared,
    channel: u64,
}

impl Channel for SimChannel {
    type Acker = SimAcker;

    async fn stop_deliveries(&self) -> bool {
        let mut world = lock(&self.world);
        if world.broker.channel != self.channel || world.broker.lost {
            return false;
        }
        let chaos = world.chaos / 4.0;
        if world.chance(chaos) {
            return false; // the cancel-ok did not come in time
        }
        world.broker.cancelled = true;
        if let Some(waker) = world.broker.waker.take() {
            waker.wake();
        }
        true
    }

    fn connected(&self) -> bool {
        let world = lock(&self.world);
        world.broker.channel == self.channel && !world.broker.lost
    }
}

struct SimStore {
    world: Shared,
}

/// What a try of a batch meets.
enum Try {
    Commits(Duration),
    Fails(Duration),
    /// Never answers: the worker's batch timeout gives up on it.
    Stalls,
    /// Commits, then the answer is lost.
    CommitsThenStalls,
    /// Never answers; the statement commits after the worker gave up.
    CommitsLate(Duration),
}

impl Store for SimStore {
    async fn apply(&mut self, batch: &[Incoming]) -> Result<Vec<Outcome>, BatchError> {
        let choice = {
            let mut world = lock(&self.world);
            let chaos = world.chaos;
            let delay = world.millis(30);
            if !world.chance(chaos) {
                Try::Commits(delay)
            } else {
                match world.rng.random_range(0..4) {
                    0 => Try::Fails(delay),
                    1 => Try::Stalls,
                    2 => Try::CommitsThenStalls,
                    _ => {
                        let late = world.millis(3_000);
                        Try::CommitsLate(late)
                    }
                }
            }
        };
        match choice {
            Try::Commits(delay) => {
                tokio::time::sleep(delay).await;
                Ok(lock(&self.world).commit(batch))
            }
            Try::Fails(delay) => {
                tokio::time::sleep(delay).await;
                Err(BatchError::DatabaseUnavailable(sqlx::Error::PoolTimedOut))
            }
            Try::Stalls => std::future::pending().await,
            Try::CommitsThenStalls => {
                lock(&self.world).commit(batch);
                std::future::pending().await
            }
            Try::CommitsLate(after) => {
                let (world, batch) = (Arc::clone(&self.world), batch.to_vec());
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    lock(&world).commit(&batch);
                });
                std::future::pending().await
            }
        }
    }

    fn discard_connection(&mut self) {}

    async fn responds(&self, _patience: Duration) -> bool {
        let mut world = lock(&self.world);
        let chaos = world.chaos;
        !world.chance(chaos)
    }

    async fn report(&mut self, _position: &mut Position, _force: bool) {}
}

struct SimRetries {
    world: Shared,
}

impl Retries for SimRetries {
    async fn schedule(
        &self,
        incoming: &Incoming,
        history: &AttemptHistory,
    ) -> Result<(), PublishError> {
        let delay = {
            let mut world = lock(&self.world);
            let chaos = world.chaos;
            if world.chance(chaos) {
                return Err(PublishError::BrokerUnavailable("simulated".into()));
            }
            let (delivery, _) = named(incoming);
            world.database.settled.insert(delivery);
            world.broker.waiting += 1;
            world.millis(500)
        };
        let (_, index) = named(incoming);
        let message = Message {
            index,
            failed_attempts: history.records.len() as u32,
        };
        let world = Arc::clone(&self.world);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut world = lock(&world);
            world.broker.waiting -= 1;
            world.broker.ready.push_back(message);
            world.pump();
        });
        Ok(())
    }
}

/// How one worker's life ends.
enum Ending {
    /// A stop request (shutdown, or the lease handed over) after this long.
    Stop(Duration),
    /// The connection is lost after this long.
    ConnectionLost(Duration),
    /// Runs until everything is finished.
    Calm,
}

fn context() -> BatchContext {
    BatchContext {
        group: ConsumerGroup::Orders,
        handlers: consumers::handlers::Store::shared(),
        worker: "simulated".into(),
        policy: RetryPolicy {
            max_attempts: MAX_ATTEMPTS,
            jitter: 0.0,
            ..RetryPolicy::default()
        },
        attempt_key: AttemptKey::from_bytes([1; 32]),
    }
}

/// Runs one seed: the violations found, if any, and what happened when.
fn run_seed(seed: u64) -> (Result<(), String>, Vec<String>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(simulate(seed))
}

async fn simulate(seed: u64) -> (Result<(), String>, Vec<String>) {
    let world: Shared = Arc::new(Mutex::new(World::new(seed)));
    {
        let mut world = lock(&world);
        let count = world.kinds.len();
        world.broker.ready = (0..count)
            .map(|index| Message {
                index,
                failed_attempts: 0,
            })
            .collect();
    }
    let context = context();
    let health = Health::default();
    let lives = { lock(&world).rng.random_range(0..8) };
    for life in 0..=lives {
        let channel = life + 1;
        let (batching, ending) = {
            let mut world = lock(&world);
            world.open_channel(channel);
            let batching = Batching {
                size: world.rng.random_range(1..=16),
                linger: world.millis(3),
                timeout: Duration::from_millis(world.rng.random_range(100..=1_000)),
            };
            let ending = if life == lives {
                world.chaos = 0.0;
                Ending::Calm
            } else if world.chance(0.5) {
                Ending::Stop(world.millis(2_000))
            } else {
                Ending::ConnectionLost(world.millis(2_000))
            };
            (batching, ending)
        };
        let shutdown = CancellationToken::new();
        let parts = Parts {
            context: &context,
            batching,
            health: &health,
            queue: "simulated",
        };
        let mut deliveries = SimDeliveries {
            world: Arc::clone(&world),
            channel,
        };
        let control = SimChannel {
            world: Arc::clone(&world),
            channel,
        };
        let store = SimStore {
            world: Arc::clone(&world),
        };
        let retries = SimRetries {
            world: Arc::clone(&world),
        };
        let chaos = {
            let (world, shutdown) = (Arc::clone(&world), shutdown.clone());
            async move {
                match ending {
                    Ending::Stop(after) => {
                        tokio::time::sleep(after).await;
                        shutdown.cancel();
                    }
                    Ending::ConnectionLost(after) => {
                        tokio::time::sleep(after).await;
                        lock(&world).close_channel(true);
                    }
                    Ending::Calm => loop {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if lock(&world).finished() {
                            shutdown.cancel();
                            break;
                        }
                    },
                }
                std::future::pending::<()>().await;
            }
        };
        let running = consume(parts, &mut deliveries, &control, store, &retries, &shutdown);
        let limit = Duration::from_secs(3_600);
        let ended = tokio::time::timeout(limit, async {
            tokio::select! {
                biased;
                result = running => result,
                () = chaos => unreachable!(),
            }
        })
        .await;
        if ended.is_err() {
            let trace = lock(&world).trace.clone();
            let stuck =
                format!("seed {seed}: life {life} did not end within an hour of simulated time");
            return (Err(stuck), trace);
        }
        // The worker's channel closes after the loop returns.
        lock(&world).close_channel(false);
    }
    // Late commits and scheduled retries land, then the last check.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let world = lock(&world);
    let mut problems = world.violations.clone();
    if !world.broker.ready.is_empty() || world.broker.waiting > 0 {
        problems.push(format!(
            "{} messages left in the queue, {} retries waiting",
            world.broker.ready.len(),
            world.broker.waiting
        ));
    }
    for (index, kind) in world.kinds.iter().enumerate() {
        let applied = world.database.applied.get(&index).copied().unwrap_or(0);
        let dead = world.database.dead.contains(&index);
        if applied > 1 {
            problems.push(format!(
                "message {index} ({kind:?}) applied {applied} times"
            ));
        }
        if applied == 0 && !dead {
            problems.push(format!(
                "message {index} ({kind:?}) neither applied nor dead-lettered"
            ));
        }
        if applied > 0 && dead {
            problems.push(format!(
                "message {index} ({kind:?}) both applied and dead-lettered"
            ));
        }
    }
    let result = if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("seed {seed}:\n  {}", problems.join("\n  ")))
    };
    (result, world.trace.clone())
}

fn seeds() -> std::ops::Range<u64> {
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    let first = number("SWITCHYARD_SIMULATION_FIRST_SEED", 1);
    first..first + number("SWITCHYARD_SIMULATION_SEEDS", 5_000)
}

#[test]
fn the_worker_loop_settles_every_delivery_by_its_own_committed_outcome_under_simulated_faults() {
    let started = std::time::Instant::now();
    let seeds = seeds();
    let count = seeds.end - seeds.start;
    let failures: Vec<String> = seeds.filter_map(|seed| run_seed(seed).0.err()).collect();
    eprintln!(
        "simulation: {count} seeds in {:.1} s, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed (replay one with SWITCHYARD_SIMULATION_FIRST_SEED=N SWITCHYARD_SIMULATION_SEEDS=1):\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_simulation_replays_a_seed_exactly() {
    for seed in [7, 42, 1_000] {
        let (first, first_trace) = run_seed(seed);
        let (second, second_trace) = run_seed(seed);
        assert_eq!(first, second);
        assert!(!first_trace.is_empty());
        assert_eq!(
            first_trace, second_trace,
            "seed {seed} replays step for step"
        );
    }
    assert_ne!(run_seed(42).1, run_seed(43).1);
}
