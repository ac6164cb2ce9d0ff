//! Running real binaries: stopping them, and checking what they did.

use std::process::{Child, ExitStatus};
use std::time::Duration;

/// Asserts that a command with `what` (its arguments, for the message)
/// was refused at start: exit status 2 (a usage error), the refusal
/// naming `named`, and no panic.
pub fn assert_refused(output: &std::process::Output, named: &str, what: &dyn std::fmt::Debug) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{what:?} is refused as a usage error: {stderr}"
    );
    assert!(
        stderr.contains(named),
        "{what:?}: the refusal names {named}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what:?}: {stderr}");
}

/// Sends SIGTERM to `child` (asserting that it was sent).
pub fn sigterm(child: &Child) {
    signal(child, "TERM");
}

/// Sends signal `name` (`TERM`, `STOP`, `CONT`…) to `child`.
pub fn signal(child: &Child, name: &str) {
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .is_ok_and(|status| status.success());
    assert!(sent, "SIG{name} sent to {pid}");
}

/// Sends SIGTERM to `child` and waits (at most `within`) for it to exit.
pub async fn sigterm_and_wait(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    sigterm(child);
    exit_within(child, within).await
}

/// Waits at most `within` for `child` to exit; its status, or `None`.
pub async fn exit_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
