//! `consumers demo` as a binary: out-of-range flags are refused, a run
//! applies every delivery of what it published, and a run that misses its
//! deadline says so and fails.

use std::process::Stdio;

use shared::testing::Watchdog;

use crate::support::{QUICK_RETRY_ENVIRONMENT, Stack, TEST_LIMIT, output_of};

/// `consumers` against `stack`, with the retry delays its topology has.
fn consumers_binary(stack: &Stack) -> std::process::Command {
    let mut command = crate::support::consumers_binary(stack);
    command.envs(QUICK_RETRY_ENVIRONMENT).stdin(Stdio::null());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_applies_what_it_published_and_fails_when_its_deadline_passes() {
    let _watchdog = Watchdog::new(
        "the_demo_applies_what_it_published_and_fails_when_its_deadline_passes",
        TEST_LIMIT,
    );
    let stack = Stack::new().await;
    for (args, named) in [
        (&["--workers", "0"][..], "--workers"),
        (&["--max-seconds", "0"][..], "--max-seconds"),
    ] {
        let mut refused = consumers_binary(&stack);
        refused.arg("demo").args(args);
        let output = output_of(refused).await;
        shared::testing::assert_refused(&output, named, &args);
    }

    let mut demo = consumers_binary(&stack);
    demo.args([
        "demo",
        "--count",
        "300",
        "--seed",
        "3",
        "--workers",
        "2",
        "--max-seconds",
        "120",
    ]);
    let output = output_of(demo).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("published 300 (0 failed)"),
        "every event published: {stdout}"
    );
    let expected = stdout
        .lines()
        .next()
        .and_then(|line| line.split("→ ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no expected deliveries: {stdout}"));
    let applied = stack.number("SELECT count(*) FROM processed_events").await;
    let dead = stack.number("SELECT count(*) FROM dead_letters").await;
    assert_eq!(applied + dead, expected, "every delivery accounted for");

    // 300 more at 50 events/s take six seconds; the deadline is one.
    let mut late = consumers_binary(&stack);
    late.args([
        "demo",
        "--count",
        "300",
        "--rate",
        "50",
        "--seed",
        "4",
        "--max-seconds",
        "1",
    ]);
    let output = output_of(late).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a missed deadline fails the run");
    assert!(
        stderr.contains("the deadline (1 s) passed with"),
        "it says how much was left: {stderr}"
    );
}
