//! CPU time (user + system) from `/proc`: the broker (`beam.smp`),
//! PostgreSQL (every `postgres` process), the consumer processes a scenario
//! started (Switchyard's or the hand-written one) and this bench process
//! (the publisher, and whatever a scenario runs in process). Linux only;
//! zero elsewhere. A process that exits between two readings is not counted,
//! so consumers are read before they are stopped.

use serde::Serialize;

/// CPU seconds, or milliseconds per 1,000 deliveries once divided.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cpu {
    pub broker: f64,
    pub postgres: f64,
    pub consumer: f64,
    pub bench: f64,
}

impl Cpu {
    /// CPU seconds used so far; `consumers` are the pids of the scenario's
    /// consumer processes.
    pub fn now(consumers: &[u32]) -> Self {
        // USER_HZ: 100 on every mainstream Linux (reading sysconf needs unsafe).
        const TICKS_PER_SECOND: f64 = 100.0;
        let own = std::process::id();
        let mut times = Cpu::default();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return times;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let command = &stat[open + 1..close];
            let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
            let ticks = |index: usize| {
                fields
                    .get(index)
                    .and_then(|value| value.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let seconds = (ticks(11) + ticks(12)) / TICKS_PER_SECOND;
            if pid == own {
                times.bench += seconds;
            } else if consumers.contains(&pid) {
                times.consumer += seconds;
            } else if command == "beam.smp" {
                times.broker += seconds;
            } else if command.starts_with("postgres") {
                times.postgres += seconds;
            }
        }
        times
    }

    /// Milliseconds per 1,000 deliveries used since `earlier`.
    pub fn per_thousand_since(self, earlier: Cpu, deliveries: i64) -> Cpu {
        let scale = 1e6 / deliveries.max(1) as f64; // seconds → ms per 1,000
        Cpu {
            broker: (self.broker - earlier.broker) * scale,
            postgres: (self.postgres - earlier.postgres) * scale,
            consumer: (self.consumer - earlier.consumer) * scale,
            bench: (self.bench - earlier.bench) * scale,
        }
    }

    /// The component-wise median of `values`.
    pub fn median(values: &[Cpu]) -> Cpu {
        let pick = |field: fn(&Cpu) -> f64| crate::median(values.iter().map(field).collect());
        Cpu {
            broker: pick(|cpu| cpu.broker),
            postgres: pick(|cpu| cpu.postgres),
            consumer: pick(|cpu| cpu.consumer),
            bench: pick(|cpu| cpu.bench),
        }
    }
}
