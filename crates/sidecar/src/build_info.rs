//! What this binary is: its version, the commit it was built from, and when (set by
//! `build.rs`: `RUNLENS_GIT_COMMIT`, 12 hex digits or `unknown` outside a git checkout,
//! and `RUNLENS_BUILD_DATE`, `YYYY-MM-DD` UTC).

/// `0.1.0 (commit 0123456789ab, built 2026-12-01)`: what `--version`, `doctor` and the
/// session welcome say.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RUNLENS_GIT_COMMIT"),
    ", built ",
    env!("RUNLENS_BUILD_DATE"),
    ")"
);
