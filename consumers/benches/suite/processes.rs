//! The consumer processes a scenario runs: Switchyard's own `consumers run`
//! (the release binary Cargo built beside this bench), or this bench binary
//! again in a hand-written consumer role (see `roles`). Each runs against
//! the scenario's namespace and database and is stopped with SIGTERM.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::Scenario;

/// A running consumer process.
pub struct ConsumerProcess {
    child: std::process::Child,
    /// Its `/metrics` (Switchyard's processes).
    metrics_url: Option<String>,
    /// Deliveries it reported done (hand-written consumers).
    reported: Option<Arc<AtomicI64>>,
    /// The thread reading its output (hand-written consumers); it ends with
    /// the output and returns the p50, p90 and p99 lag (µs) the reference
    /// printed on its way out.
    reader: Option<std::thread::JoinHandle<Option<[f64; 3]>>>,
}

fn scenario_environment(command: &mut Command, scenario: &Scenario) {
    command
        .env(
            "SWITCHYARD_NAMESPACE",
            &scenario.isolated.settings.namespace,
        )
        .env(
            "DATABASE_URL",
            shared::testing::database_url(&scenario.database.settings),
        )
        .env("AMQP_URL", scenario.isolated.settings.expose_amqp_url())
        .env("RUST_LOG", "error")
        .stdin(Stdio::null());
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

impl ConsumerProcess {
    /// `consumers run` (every group, one worker each, default prefetch),
    /// with `batch_size` when given.
    pub fn switchyard(scenario: &Scenario, batch_size: Option<usize>) -> Self {
        let address = format!("127.0.0.1:{}", free_port());
        let binary = std::env::var_os("BENCH_CONSUMERS")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_consumers").into());
        let mut command = Command::new(binary);
        command.args(["run", "--http-address", &address]);
        if let Some(batch_size) = batch_size {
            command.args(["--batch-size", &batch_size.to_string()]);
        }
        scenario_environment(&mut command, scenario);
        let child = command.stdout(Stdio::null()).spawn().unwrap();
        Self {
            child,
            metrics_url: Some(format!("http://{address}")),
            reported: None,
            reader: None,
        }
    }

    /// This bench binary in `role` (`ceiling` or `reference`), on one
    /// runtime thread: it prints its running count of finished
    /// deliveries, one number a line.
    pub fn hand_written(scenario: &Scenario, role: &str) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.env(crate::roles::ROLE_VARIABLE, role);
        // One runtime thread, as `consumers run` has by default: the
        // baselines get the same saving in thread switches.
        command.env("TOKIO_WORKER_THREADS", "1");
        scenario_environment(&mut command, scenario);
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        // -1 until the consumer reports that it consumes.
        let reported = Arc::new(AtomicI64::new(-1));
        let stdout = child.stdout.take().unwrap();
        let counter = reported.clone();
        let reader = std::thread::spawn(move || {
            let mut lags = None;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(count) = line.trim().parse::<i64>() {
                    counter.store(count, Ordering::Relaxed);
                } else if let Some(values) = line.strip_prefix(crate::roles::LAG_LINE) {
                    let micros: Vec<f64> = values
                        .split_whitespace()
                        .filter_map(|value| value.parse().ok())
                        .collect();
                    if let [p50, p90, p99] = micros[..] {
                        lags = Some([p50, p90, p99]);
                    }
                }
            }
            lags
        });
        Self {
            child,
            metrics_url: None,
            reported: Some(reported),
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Switchyard's `/metrics`, or `None` while it does not answer yet.
    pub async fn metrics(&self, client: &reqwest::Client) -> Option<String> {
        let url = format!("{}/metrics", self.metrics_url.as_ref()?);
        let response = client.get(url).send().await.ok()?;
        response.text().await.ok()
    }

    /// Deliveries settled for good so far: committed (applied or
    /// duplicate) or dead-lettered; a retried event counts once it is.
    pub async fn settled(&self, client: &reqwest::Client) -> i64 {
        if let Some(reported) = &self.reported {
            return reported.load(Ordering::Relaxed).max(0);
        }
        self.metrics(client)
            .await
            .map_or(0, |text| settled_in(&text) as i64)
    }

    /// Waits until `/readyz` answers 200 (Switchyard) or the process
    /// reports that it consumes (hand-written).
    pub async fn ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match &self.metrics_url {
                Some(url) => {
                    if let Ok(response) = client.get(format!("{url}/readyz")).send().await
                        && response.status().is_success()
                    {
                        return;
                    }
                }
                None => {
                    if self
                        .reported
                        .as_ref()
                        .is_some_and(|reported| reported.load(Ordering::Relaxed) >= 0)
                    {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("a consumer process did not become ready within 60 s");
    }

    /// Stops it, then the p50, p90 and p99 publish→commit lag in
    /// milliseconds it printed on its way out (the hand-written reference).
    pub async fn stop_with_lags(mut self) -> Option<[f64; 3]> {
        let reader = self.reader.take()?;
        self.stop().await;
        let micros = tokio::task::spawn_blocking(move || reader.join())
            .await
            .ok()?
            .ok()??;
        Some(micros.map(|value| value / 1e3))
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 30 s).
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until every group is consumed: each one's lease
/// (`switchyard_group_lease`) held by one of the Switchyard `processes`
/// (they take no lease in their first second, so readiness alone would
/// start the clock before anyone consumes).
pub async fn wait_consuming(processes: &[ConsumerProcess]) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut held = std::collections::BTreeMap::<String, f64>::new();
        for process in processes {
            let Some(text) = process.metrics(&client).await else {
                continue;
            };
            for sample in shared::testing::prometheus_text::samples(&text, "switchyard_group_lease")
            {
                let group = sample.label("group").unwrap_or_default().to_owned();
                *held.entry(group).or_default() += sample.value;
            }
        }
        if held.len() == shared::groups::ConsumerGroup::ALL.len()
            && held.values().all(|holders| *holders == 1.0)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the groups were not all consumed within 60 s: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of `switchyard_events_total` over the final outcomes.
pub fn settled_in(metrics: &str) -> f64 {
    ["applied", "duplicate", "dead_lettered"]
        .iter()
        .map(|outcome| {
            shared::testing::prometheus_text::sum(
                metrics,
                "switchyard_events_total",
                &[("outcome", outcome)],
            )
        })
        .sum()
}

/// Polls until `processes` report `expected` settled deliveries; returns
/// when the first was seen settled and when the last. Panics after
/// `patience` with what was settled.
pub async fn wait_settled(
    processes: &[ConsumerProcess],
    expected: i64,
    patience: Duration,
) -> (Instant, Instant) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + patience;
    let mut first = None;
    loop {
        let mut settled = 0;
        for process in processes {
            settled += process.settled(&client).await;
        }
        if settled > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if settled >= expected {
            let now = Instant::now();
            return (first.unwrap_or(now), now);
        }
        assert!(
            Instant::now() < deadline,
            "{settled} of {expected} deliveries settled after {patience:?}"
        );
        // Every poll renders the processes' metrics (CPU they are charged
        // with): 40 a second costs about 1 %, and bounds the error on the
        // end time to 25 ms.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn stop_all(processes: Vec<ConsumerProcess>) {
    for process in processes {
        process.stop().await;
    }
}
