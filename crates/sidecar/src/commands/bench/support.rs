//! What the benchmarks share: a `runlens serve` process of their own, percentiles of
//! timings, and figures read from /proc.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::exit::{FAILURE, Failure};
use crate::report::stats::sorted_percentile;

/// Median, p90, p99 and max of a set of durations, in microseconds.
pub fn summary(samples: Vec<Duration>) -> String {
    let us = sorted_in(&samples, 1e6);
    let pick = |q: f64| sorted_percentile(&us, q).unwrap_or(0.0);
    format!(
        "median {:>7.1} µs   p90 {:>7.1} µs   p99 {:>7.1} µs   max {:>7.1} µs   (n = {})",
        pick(0.5),
        pick(0.9),
        pick(0.99),
        pick(1.0),
        us.len()
    )
}

/// Durations in units of `1 / per_second` seconds (1e6: microseconds), sorted, ready for
/// the report's nearest-rank [`sorted_percentile`].
pub fn sorted_in(samples: &[Duration], per_second: f64) -> Vec<f64> {
    let mut v: Vec<f64> = samples
        .iter()
        .map(|d| d.as_secs_f64() * per_second)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// A `VmRSS:`-style line of `/proc/<pid>/status`, in bytes.
pub fn status_bytes(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A `runlens serve` started by a benchmark, on loopback with its own database.
pub struct ServeProcess {
    child: std::process::Child,
    /// Its process id.
    pub pid: u32,
    /// The address it listens on.
    pub addr: String,
    /// Its OTLP/gRPC address.
    pub otlp_grpc: Option<String>,
    /// Its /metrics address, when started with one.
    pub metrics: Option<String>,
}

/// A `runlens` binary the benchmarks start as the sidecar instead of their own: one build's
/// driver and client measuring another build's sidecar.
pub const SERVE_BINARY_ENV: &str = "RUNLENS_BENCH_SERVE";

impl ServeProcess {
    /// Starts `runlens serve` (this same binary) with `db` and extra arguments, and waits
    /// for its address.
    pub fn start(db: &std::path::Path, extra: &[String]) -> Result<Self, Failure> {
        Self::start_with(db, extra, &[], false)
    }

    /// Like [`ServeProcess::start`], with environment variables and, with `metrics`, a
    /// /metrics listener on a free port.
    pub fn start_with(
        db: &std::path::Path,
        extra: &[String],
        env: &[(&str, &std::ffi::OsStr)],
        metrics: bool,
    ) -> Result<Self, Failure> {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| Failure::new(FAILURE, format!("{what}: {e}"));
        // Another build's sidecar, measured by this build's driver (A/B comparisons).
        let exe = match std::env::var_os(SERVE_BINARY_ENV) {
            Some(path) => std::path::PathBuf::from(path),
            None => {
                std::env::current_exe().map_err(|e| fail("cannot find the runlens binary", &e))?
            }
        };
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args([
                "--otlp-grpc-listen",
                "127.0.0.1:0",
                "--otlp-http-listen",
                "off",
                "--metrics-listen",
                if metrics { "127.0.0.1:0" } else { "off" },
            ])
            .args(extra)
            .env("RUNLENS_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| fail("cannot start runlens serve", &e))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| Failure::new(FAILURE, format!("runlens serve did not start: {line}")))?
            .to_owned();
        let otlp_grpc = line
            .split("OTLP: gRPC ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .filter(|a| *a != "off")
            .map(str::to_owned);
        let metrics = line
            .split("; metrics ")
            .nth(1)
            .and_then(|rest| rest.split([';', ' ', '\n']).next())
            .filter(|a| *a != "off")
            .map(str::to_owned);
        Ok(Self {
            pid: child.id(),
            child,
            addr,
            otlp_grpc,
            metrics,
        })
    }

    /// SIGINT, then waits for the exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Bytes as MiB with one decimal, or `?`.
pub fn mib(v: Option<u64>) -> String {
    v.map_or_else(
        || "?".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / 1048576.0),
    )
}

/// Fails the benchmark unless `where_` holds exactly the `expected` spans it was sent: a
/// figure measured while data was lost would be a false one.
pub fn require_all_stored(stored: i64, expected: u64, where_: &str) -> Result<(), Failure> {
    if u64::try_from(stored).ok() == Some(expected) {
        Ok(())
    } else {
        Err(Failure::new(
            FAILURE,
            format!("{where_} does not hold exactly what was sent ({stored} of {expected} spans)"),
        ))
    }
}

/// The database a benchmark reads its figures back from (what was stored, verified).
pub struct StoredDb(crate::store::read::Reader);

impl StoredDb {
    /// Opens the database at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self, Failure> {
        crate::store::read::Reader::open(path)
            .map(Self)
            .map_err(|e| Failure::new(FAILURE, format!("cannot read {}: {e}", path.display())))
    }

    /// How far each run and span boundary, metric and event lies from the sample it refers
    /// to, ns, for those from `since_ns` on that have one.
    pub fn sample_offsets(&self, since_ns: i64) -> Result<Vec<i64>, Failure> {
        self.0
            .sample_offsets(since_ns)
            .map_err(|e| Failure::new(FAILURE, format!("cannot read the database: {e}")))
    }

    /// The single integer a `SELECT count(*) …` returns.
    pub fn count(&self, sql: &str) -> Result<i64, Failure> {
        self.0
            .single_integer(sql)
            .map_err(|e| Failure::new(FAILURE, format!("cannot read the database: {e}")))
    }
}

/// A temporary directory, removed when the benchmark ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `<tmp>/runlens-bench-<what>-<pid>`.
    pub fn new(what: &str) -> Result<Self, Failure> {
        let dir = std::env::temp_dir().join(format!("runlens-bench-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| {
            Failure::new(FAILURE, format!("cannot create a temporary directory: {e}"))
        })?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_picks_the_right_quantiles() {
        let samples = (1..=100).map(Duration::from_micros).collect();
        let text = summary(samples);
        assert!(
            text.starts_with("median    50.0 µs   p90    90.0 µs   p99    99.0 µs"),
            "{text}"
        );
        assert!(text.ends_with("(n = 100)"), "{text}");
    }

    #[test]
    fn memory_of_this_process_is_readable() {
        assert!(status_bytes(std::process::id(), "VmRSS:").is_some_and(|b| b > 0));
        assert!(status_bytes(std::process::id(), "VmHWM:").is_some_and(|b| b > 0));
    }
}
