//! Checks on what a real binary did.

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
