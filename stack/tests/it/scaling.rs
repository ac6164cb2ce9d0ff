//! `bench/scaling.sh`, the README's scaling measurement, run small with the
//! debug binaries: it must load a backlog, drain it with 1 and 2 worker
//! processes, and report every run and the medians.

#[test]
fn the_scaling_script_drains_a_small_backlog_with_one_and_two_processes() {
    let run = crate::bench_script("scaling.sh")
        .env("EVENTS", "300")
        .env("REPEAT", "1")
        .env("PROCESSES", "1 2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for line in ["1 processes, run 1:", "2 processes, run 1:"] {
        let report = stdout
            .lines()
            .find(|report| report.starts_with(line))
            .unwrap_or_else(|| panic!("no {line:?} in {stdout}"));
        assert!(report.contains(", 0 dead letters"), "{report}");
        assert!(report.contains("processing"), "{report}");
    }
    assert!(
        stdout.contains("1 processes: wall") && stdout.contains("(1.00x)"),
        "{stdout}"
    );
    assert!(stdout.contains("2 processes: wall"), "{stdout}");
}
