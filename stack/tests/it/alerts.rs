//! The Prometheus alerting rules shipped in `deploy/prometheus/`: they
//! load, each fires on what it is about and stays quiet otherwise
//! (`promtool test rules`, Debian's `prometheus` package, which `.ci/run`
//! installs), and every metric they read is one the binaries export.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(workspace().join("deploy/prometheus"))
        .output()
        .unwrap_or_else(|error| {
            panic!("promtool did not run ({error}): install Debian's prometheus package")
        })
}

#[test]
fn the_alert_rules_load_and_fire_on_what_they_are_about() {
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts.test.yml"],
    ] {
        let output = promtool(args);
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Metric names in `text` (`switchyard_…`, suffixes of histograms aside).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("switchyard_") {
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

#[test]
fn every_metric_an_alert_reads_is_exported_by_the_binaries_and_documented() {
    let rules = std::fs::read_to_string(workspace().join("deploy/prometheus/alerts.yml")).unwrap();
    let mut sources = String::new();
    for file in [
        "runtime/src/metrics.rs",
        "consumers/src/stats.rs",
        "runtime/src/leases.rs",
        "shared/src/broker.rs",
    ] {
        sources.push_str(&std::fs::read_to_string(workspace().join(file)).unwrap());
    }
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let read = metric_names(&rules);
    assert!(read.len() >= 6, "{read:?}");
    for name in &read {
        assert!(
            sources.contains(&format!("\"{name}\"")),
            "{name} is read by an alert but exported by no binary"
        );
        assert!(
            readme.contains(name.as_str()),
            "{name} is not in the README"
        );
    }
    assert!(
        readme.contains("deploy/prometheus/alerts.yml"),
        "the README points operators at the rules"
    );
}
