//! The suite's results: medians, the targets they are held to, the
//! machine and versions they were measured on, as a table, Markdown and JSON.

use serde::Serialize;

use crate::cpu::Cpu;
use crate::scenarios::{Latency, Throughput};
use crate::{Config, Workload, median};

#[derive(Debug, Serialize)]
pub struct ThroughputRow {
    pub scenario: String,
    pub workload: Workload,
    /// Consumer processes (Switchyard's scenarios).
    pub processes: Option<usize>,
    /// Deliveries per second, one per run.
    pub runs: Vec<f64>,
    pub median: f64,
    /// Median CPU milliseconds per 1,000 deliveries.
    pub cpu_ms_per_1000: Cpu,
}

impl ThroughputRow {
    pub fn new(
        scenario: String,
        workload: Workload,
        processes: Option<usize>,
        runs: Vec<Throughput>,
    ) -> Self {
        let cpu: Vec<Cpu> = runs.iter().map(|run| run.cpu).collect();
        let rates: Vec<f64> = runs.iter().map(|run| run.rate).collect();
        Self {
            scenario,
            workload,
            processes,
            median: median(rates.clone()),
            runs: rates,
            cpu_ms_per_1000: Cpu::median(&cpu),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LatencyRow {
    pub system: String,
    pub workload: Workload,
    /// Events per second offered.
    pub offered: u64,
    pub runs: Vec<Latency>,
    /// Medians over the runs.
    pub achieved: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub cpu_ms_per_1000: Cpu,
}

impl LatencyRow {
    pub fn new(system: String, workload: Workload, offered: u64, runs: Vec<Latency>) -> Self {
        let pick = |field: fn(&Latency) -> f64| median(runs.iter().map(field).collect());
        let cpu: Vec<Cpu> = runs.iter().map(|run| run.cpu).collect();
        Self {
            system,
            workload,
            offered,
            achieved: pick(|run| run.achieved),
            p50_ms: pick(|run| run.p50_ms),
            p90_ms: pick(|run| run.p90_ms),
            p99_ms: pick(|run| run.p99_ms),
            cpu_ms_per_1000: Cpu::median(&cpu),
            runs,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub value: f64,
    pub target: String,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

#[derive(Debug, Serialize)]
pub struct Versions {
    pub switchyard: String,
    pub rustc: String,
    pub rabbitmq: String,
    pub postgresql: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub versions: Versions,
    pub config: Config,
    pub throughput: Vec<ThroughputRow>,
    pub latency: Vec<LatencyRow>,
    pub targets: Vec<Target>,
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split(':').nth(1))
            .map(|value| value.trim().to_owned())
            .unwrap_or_default()
    };
    let memory_kib: f64 = field(&meminfo, "MemTotal")
        .trim_end_matches(" kB")
        .parse()
        .unwrap_or(0.0);
    Machine {
        cpu: field(&cpuinfo, "model name"),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel: command_output("uname", &["-r"]),
    }
}

async fn versions() -> Versions {
    // A scenario's database: the one in DATABASE_URL need not exist.
    let scenario = crate::Scenario::new(Workload::StoreMix).await;
    let postgresql = sqlx::query_scalar::<_, String>("SHOW server_version")
        .fetch_one(&scenario.database.pool)
        .await
        .unwrap_or_else(|_| "unknown".to_owned());
    drop(scenario);
    let dirty =
        !command_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    Versions {
        switchyard: format!(
            "{}{}",
            command_output("git", &["rev-parse", "--short", "HEAD"]),
            if dirty { " (uncommitted changes)" } else { "" }
        ),
        rustc: command_output("rustc", &["--version"]),
        rabbitmq: command_output("rabbitmqctl", &["version"]),
        postgresql,
    }
}

fn ratio_target(what: String, value: f64, at_least: f64) -> Target {
    Target {
        what,
        value,
        target: format!("≥ {at_least}"),
        met: value >= at_least,
    }
}

impl Report {
    pub async fn new(
        config: &Config,
        throughput: Vec<ThroughputRow>,
        latency: Vec<LatencyRow>,
    ) -> Self {
        let mut report = Report {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            command: "cargo bench -p consumers --bench suite".to_owned(),
            machine: machine(),
            versions: versions().await,
            config: config.clone(),
            throughput,
            latency,
            targets: Vec::new(),
        };
        report.targets = report.targets();
        report
    }

    fn rate(
        &self,
        scenario: &str,
        workload: Workload,
        processes: Option<usize>,
    ) -> Option<&ThroughputRow> {
        self.throughput.iter().find(|row| {
            row.scenario == scenario && row.workload == workload && row.processes == processes
        })
    }

    fn latency(&self, system: &str, workload: Workload, offered: u64) -> Option<&LatencyRow> {
        self.latency
            .iter()
            .find(|row| row.system == system && row.workload == workload && row.offered == offered)
    }

    fn targets(&self) -> Vec<Target> {
        use Workload::{OrderPlaced, StoreMix};
        let mut targets = Vec::new();
        let e2e =
            |workload, processes| self.rate("switchyard end to end", workload, Some(processes));
        if let (Some(mix), Some(ceiling)) = (
            e2e(StoreMix, 1),
            self.rate("broker ceiling", StoreMix, None),
        ) {
            targets.push(ratio_target(
                "store mix end to end (1 process) / broker ceiling (store mix)".into(),
                mix.median / ceiling.median,
                0.6,
            ));
            let (switchyard, hand_written) = (
                mix.cpu_ms_per_1000.consumer,
                ceiling.cpu_ms_per_1000.consumer,
            );
            targets.push(Target {
                what: "store mix: Switchyard's CPU per delivery / the ceiling consumer's".into(),
                value: switchyard / hand_written,
                target: "≤ 1.5".into(),
                met: switchyard / hand_written <= 1.5,
            });
        }
        if let (Some(mix), Some(placed)) = (e2e(StoreMix, 1), e2e(OrderPlaced, 1)) {
            targets.push(ratio_target(
                "store mix end to end / order.placed end to end (1 process)".into(),
                mix.median / placed.median,
                0.8,
            ));
        }
        if let Some(drain) = self.rate("switchyard backlog drain", StoreMix, Some(1)) {
            targets.push(ratio_target(
                "store mix backlog drain (1 process), deliveries/s".into(),
                drain.median.round(),
                14_800.0,
            ));
        }
        if let Some(placed) = e2e(OrderPlaced, 1) {
            if let Some(ceiling) = self.rate("broker ceiling", OrderPlaced, None) {
                targets.push(ratio_target(
                    "order.placed end to end / broker ceiling".into(),
                    placed.median / ceiling.median,
                    0.75,
                ));
            }
            if let Some(reference) = self.rate("hand-written reference", OrderPlaced, None) {
                targets.push(ratio_target(
                    "order.placed end to end / hand-written reference".into(),
                    placed.median / reference.median,
                    0.95,
                ));
            }
        }
        for (scenario, workload) in [
            ("switchyard end to end", StoreMix),
            ("switchyard end to end", OrderPlaced),
            ("switchyard backlog drain", StoreMix),
        ] {
            let Some(one) = self.rate(scenario, workload, Some(1)) else {
                continue;
            };
            for row in self.throughput.iter().filter(|row| {
                row.scenario == scenario && row.workload == workload && row.processes > Some(1)
            }) {
                targets.push(ratio_target(
                    format!(
                        "{scenario}, {}: {} processes / 1",
                        workload.label(),
                        row.processes.unwrap_or(0)
                    ),
                    row.median / one.median,
                    1.0,
                ));
            }
        }
        for workload in Workload::ALL {
            if let (Some(switchyard), Some(broker)) = (
                self.latency("switchyard", workload, 2_000),
                self.latency("broker alone", workload, 2_000),
            ) {
                targets.push(Target {
                    what: format!(
                        "{}: p99 publish→commit at 2,000/s / broker-alone p99",
                        workload.label()
                    ),
                    value: switchyard.p99_ms / broker.p99_ms,
                    target: "≤ 2".into(),
                    met: switchyard.p99_ms / broker.p99_ms <= 2.0,
                });
            }
        }
        for target in &mut targets {
            target.value = (target.value * 100.0).round() / 100.0;
        }
        targets
    }

    fn header(&self) -> Vec<String> {
        vec![
            format!("date: {}", self.date),
            format!("command: {}", self.command),
            format!(
                "machine: {}, {} cores, {} GiB, Linux {} (broker, database, workers and publisher share it)",
                self.machine.cpu, self.machine.cores, self.machine.memory_gib, self.machine.kernel
            ),
            format!(
                "versions: switchyard {}, {}, RabbitMQ {}, PostgreSQL {}",
                self.versions.switchyard,
                self.versions.rustc,
                self.versions.rabbitmq,
                self.versions.postgresql
            ),
            format!(
                "runs: {} (medians), {} events per throughput scenario, latency {} s per rate",
                self.config.repeat, self.config.events, self.config.latency_seconds
            ),
        ]
    }

    /// A throughput row's cells, for the terminal table and Markdown alike.
    fn throughput_cells(row: &ThroughputRow) -> Vec<String> {
        let runs: Vec<String> = row.runs.iter().map(|rate| format!("{rate:.0}")).collect();
        let mut cells = vec![
            row.scenario.clone(),
            row.workload.label().to_owned(),
            row.processes
                .map_or("-".to_owned(), |processes| processes.to_string()),
            format!("{:.0}", row.median),
            runs.join(", "),
        ];
        cells.extend(cpu_cells(row.cpu_ms_per_1000));
        cells
    }

    /// A latency row's cells.
    fn latency_cells(row: &LatencyRow) -> Vec<String> {
        let mut cells = vec![
            row.system.clone(),
            row.workload.label().to_owned(),
            row.offered.to_string(),
            format!("{:.0}", row.achieved),
            format!("{:.2}", row.p50_ms),
            format!("{:.2}", row.p90_ms),
            format!("{:.2}", row.p99_ms),
        ];
        cells.extend(cpu_cells(row.cpu_ms_per_1000));
        cells
    }

    pub fn print_table(&self) {
        println!();
        for line in self.header() {
            println!("{line}");
        }
        println!();
        let throughput_widths: [i32; 9] = [-38, -13, 5, 12, 24, 6, 8, 8, 6];
        println!(
            "{}",
            aligned(&THROUGHPUT_COLUMNS.map(str::to_owned), &throughput_widths)
        );
        for row in &self.throughput {
            println!(
                "{}",
                aligned(&Self::throughput_cells(row), &throughput_widths)
            );
        }
        println!();
        let latency_widths: [i32; 11] = [-13, -13, 8, 8, 8, 8, 8, 6, 8, 8, 6];
        println!(
            "{}",
            aligned(&LATENCY_COLUMNS.map(str::to_owned), &latency_widths)
        );
        for row in &self.latency {
            println!("{}", aligned(&Self::latency_cells(row), &latency_widths));
        }
        println!();
        for target in &self.targets {
            println!(
                "{} {}: {} (target {})",
                if target.met { "met   " } else { "MISSED" },
                target.what,
                target.value,
                target.target
            );
        }
        println!();
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for line in self.header() {
            out.push_str(&format!("- {line}\n"));
        }
        out.push('\n');
        out.push_str(&markdown_row(&THROUGHPUT_COLUMNS.map(str::to_owned)));
        out.push_str(&format!("|{}\n", "---|".repeat(THROUGHPUT_COLUMNS.len())));
        for row in &self.throughput {
            out.push_str(&markdown_row(&Self::throughput_cells(row)));
        }
        out.push('\n');
        out.push_str(&markdown_row(&LATENCY_COLUMNS.map(str::to_owned)));
        out.push_str(&format!("|{}\n", "---|".repeat(LATENCY_COLUMNS.len())));
        for row in &self.latency {
            out.push_str(&markdown_row(&Self::latency_cells(row)));
        }
        out.push_str("\n| target | value | wanted | met |\n|---|---|---|---|\n");
        for target in &self.targets {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                target.what,
                target.value,
                target.target,
                if target.met { "yes" } else { "**no**" }
            ));
        }
        out
    }
}

const THROUGHPUT_COLUMNS: [&str; 9] = [
    "scenario",
    "workload",
    "processes",
    "deliveries/s (median)",
    "runs",
    "CPU ms / 1,000 deliveries: broker",
    "postgres",
    "consumer",
    "bench",
];

const LATENCY_COLUMNS: [&str; 11] = [
    "latency",
    "workload",
    "offered events/s",
    "through events/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "CPU ms / 1,000: broker",
    "postgres",
    "consumer",
    "bench",
];

fn cpu_cells(cpu: Cpu) -> [String; 4] {
    [cpu.broker, cpu.postgres, cpu.consumer, cpu.bench].map(|ms| format!("{ms:.0}"))
}

/// Cells padded to `widths` (negative: left-aligned), one space apart.
fn aligned(cells: &[String], widths: &[i32]) -> String {
    cells
        .iter()
        .zip(widths)
        .map(|(cell, &width)| {
            let pad = width.unsigned_abs() as usize;
            if width < 0 {
                format!("{cell:<pad$}")
            } else {
                format!("{cell:>pad$}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn markdown_row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}
