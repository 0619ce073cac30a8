//! The example agent's command line, as a user meets it.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn help_lists_the_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_example-agent"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--endpoint", "--runs", "--fail-every"] {
        assert!(text.contains(flag), "missing {flag} in:\n{text}");
    }
}

#[test]
fn bad_endpoint_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_example-agent"))
        .args(["--endpoint", "not a url", "--runs", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("invalid endpoint"), "{text}");
}
