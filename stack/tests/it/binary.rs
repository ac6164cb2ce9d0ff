//! The README's main command, `switchyard`, as a binary: its flags are
//! bounded (refused at start, naming the flag) and a short run ends with
//! the summary checked against the database and exit status 0.

use std::process::{Command, Stdio};

use shared::testing::{IsolatedTopology, TestDatabase, database_url};

fn switchyard() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command.stdin(Stdio::null()).env("RUST_LOG", "warn");
    command
}

#[test]
fn out_of_range_flags_are_refused_naming_the_flag() {
    for (args, named) in [
        (&["--invalid-share", "1.5"][..], "--invalid-share"),
        (&["--invalid-share", "NaN"][..], "--invalid-share"),
        (&["--outbox-share=-0.1"][..], "--outbox-share"),
        (&["--rate", "0"][..], "--rate"),
        (&["--workers", "0"][..], "--workers"),
    ] {
        let output = switchyard().args(args).output().expect("run switchyard");
        shared::testing::assert_refused(&output, named, &args);
    }
}

/// Three seconds of traffic at 200 events/s, a twentieth of it invalid
/// and a third of the aggregates through the outbox: every flag shows in
/// the summary, whose totals match the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_of_the_binary_ends_with_totals_that_match_the_database() {
    let isolated = IsolatedTopology::declare().await;
    let database = TestDatabase::create_with(isolated.settings.clone()).await;
    let mut run = switchyard();
    run.args([
        "--duration-secs",
        "3",
        "--rate",
        "200",
        "--seed",
        "3",
        "--invalid-share",
        "0.05",
        "--outbox-share",
        "0.3",
        "--workers",
        "2",
        "--drain-secs",
        "90",
        "--gateway-listen",
        "127.0.0.1:0",
    ])
    .env("SWITCHYARD_NAMESPACE", &isolated.settings.namespace)
    .env("DATABASE_URL", database_url(&database.settings));
    let output = tokio::task::spawn_blocking(move || run.output())
        .await
        .unwrap()
        .expect("run switchyard");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("totals match the database"),
        "the summary is checked: {stdout}"
    );
    // The terminal keeps the display: the log goes to the file it names.
    let log = stderr
        .lines()
        .find_map(|line| line.strip_prefix("log: "))
        .and_then(|rest| rest.split(" (").next())
        .unwrap_or_else(|| panic!("the log's path is printed: {stderr}"));
    assert!(std::path::Path::new(log).is_file(), "{log}");
    assert!(
        !stderr.contains(" INFO ") && !stderr.contains(" WARN "),
        "no log line on the terminal: {stderr}"
    );
    let figure = |label: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|line| line.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line: {stdout}"));
        line.trim_start()[label.len()..]
            .split_whitespace()
            .next()
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no figure on {line:?}"))
    };
    let sent = figure("sent");
    // The rate caps what is sent (the default, 1,000/s, would send ~3,000).
    assert!(sent > 0 && sent <= 2 * 200 * 3, "sent {sent}: {stdout}");
    assert!(figure("invalid") > 0, "invalid events were sent: {stdout}");
    let through_outbox = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("accepted"))
        .and_then(|line| line.split(',').nth(1))
        .and_then(|part| part.split_whitespace().next())
        .and_then(|number| number.parse::<u64>().ok());
    assert!(
        through_outbox.is_some_and(|count| count > 0),
        "some went through the outbox: {stdout}"
    );
    let processed: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert!(
        processed > 0,
        "the events were applied in the run's database"
    );
}

/// `--stop-services` stops the private services of `SWITCHYARD_SERVICES_DIR`
/// (here a directory where none ever ran) and exits.
#[test]
fn stop_services_says_when_no_private_service_runs() {
    let dir = std::env::temp_dir().join(format!("switchyard-services-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = switchyard()
        .arg("--stop-services")
        .env("SWITCHYARD_SERVICES_DIR", &dir)
        .output()
        .expect("run switchyard");
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(stdout.trim(), "no private service was running");
}
