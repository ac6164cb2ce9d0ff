//! The whole stack end to end: the main job, and the README's examples
//! applied by real workers behind the real gateway and broker, and
//! docker-compose.yml read against both binaries' command lines.

#![allow(clippy::unwrap_used)]

mod alerts;
mod binary;
mod compose;
mod functions;
mod readme;
mod run;
mod scaling;

use std::path::Path;
use std::process::Command;

/// `bash bench/<script>` from the workspace, told to use the debug
/// `consumers` and `producers` beside this test's binary (in
/// <target>/debug; `cargo test --workspace`, the README's test command,
/// builds them there for the other crates' tests).
fn bench_script(script: &str) -> Command {
    // This test's own binary is in <target>/debug/deps.
    let debug = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    for binary in ["consumers", "producers"] {
        assert!(
            debug.join(binary).exists(),
            "{} is missing: run the whole workspace's tests (cargo test --workspace)",
            debug.join(binary).display()
        );
    }
    let mut command = Command::new("bash");
    command
        .arg(Path::new("bench").join(script))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("BIN_DIR", debug);
    command
}
