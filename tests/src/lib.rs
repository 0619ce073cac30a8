//! Harness for end-to-end tests: runs the real `runlens` binary (and example agents) as
//! separate processes on a free port with a temporary database, and reads the result
//! back with SQL.
//!
//! The binaries come from the workspace's target directory; `cargo test --workspace`
//! builds them before any test runs.

// A harness reports a broken environment by panicking: that is the test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
pub use tempfile::TempDir;

/// Builds the workspace binaries once per test process, so that `cargo test -p
/// runlens-e2e` never runs a stale `runlens` (cargo only rebuilds binaries of the package
/// under test). Under `cargo test --workspace` this is a no-op check.
fn ensure_built() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-p",
            "runlens-sidecar",
            "-p",
            "example-agent",
            "-p",
            "runlens-quickstart",
            "-p",
            "runlens-fake-nvml",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build of the runlens binaries failed"
        );
    });
}

/// The fake NVML library (`crates/fake-nvml`), built for this test run.
pub fn fake_nvml_lib() -> PathBuf {
    bin("librunlens_fake_nvml.so")
}

/// A scenario file for the fake NVML library that a test can rewrite while a sidecar
/// runs; each write replaces the file atomically so the library never reads half of it.
pub struct Scenario {
    /// The scenario file.
    pub path: PathBuf,
    _dir: TempDir,
}

impl Scenario {
    /// A scenario file holding `json`.
    pub fn new(json: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = Self {
            path: dir.path().join("scenario.json"),
            _dir: dir,
        };
        s.write(json);
        s
    }

    /// Replaces the scenario.
    pub fn write(&self, json: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, json).expect("write scenario");
        std::fs::rename(&tmp, &self.path).expect("replace scenario");
    }

    /// The environment variable that points the fake library at this file.
    pub fn env(&self) -> (&'static str, &OsStr) {
        ("RUNLENS_FAKE_NVML_SCENARIO", self.path.as_os_str())
    }
}

/// The repository's own directory of test fixtures.
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(path)
}

/// Path of a workspace binary (`runlens`, `example-agent`) next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    ensure_built();
    // Test executables live in target/<profile>/deps; binaries in target/<profile>.
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory layout");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build --workspace`) first",
        path.display()
    );
    path
}

/// A running `runlens serve` with its own temporary database.
pub struct Sidecar {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: String,
    /// Its OTLP/gRPC address (`host:port`), unless turned off.
    pub otlp_grpc: Option<String>,
    /// Its OTLP/HTTP address (`host:port`), unless turned off.
    pub otlp_http: Option<String>,
    /// Its Prometheus `/metrics` address (`host:port`), unless turned off.
    pub metrics: Option<String>,
    /// Its database file.
    pub db: PathBuf,
    /// Its stderr (logs), collected after it stops.
    stderr: Option<std::thread::JoinHandle<String>>,
    /// Whether clock warnings are expected (senders with a skewed clock).
    clock_warnings_expected: bool,
    _dir: Option<TempDir>,
}

impl Sidecar {
    /// Starts a sidecar on a free port with a fresh database, sampling every 100 ms.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("runlens.db");
        let mut s = Self::start_on(&db, &["--sample-interval", "100ms"]);
        s._dir = Some(dir);
        s
    }

    /// Starts a sidecar on a free port writing to `db`, with extra arguments.
    pub fn start_on(db: &Path, extra: &[&str]) -> Self {
        Self::start_at("127.0.0.1:0", db, extra)
    }

    /// Starts a sidecar listening on `listen` writing to `db`, with extra arguments.
    pub fn start_at(listen: &str, db: &Path, extra: &[&str]) -> Self {
        Self::launch(listen, db, extra, &[])
    }

    /// Starts a sidecar on a free port with extra arguments and environment variables
    /// (e.g. `--nvml-lib` and the fake library's scenario).
    pub fn start_with_env(db: &Path, extra: &[&str], env: &[(&str, &OsStr)]) -> Self {
        Self::launch("127.0.0.1:0", db, extra, env)
    }

    /// Starts a sidecar on a free port writing to `db`, sampling every 100 ms, with the
    /// fake NVML library (`crates/fake-nvml`) playing `scenario`.
    pub fn start_with_fake_nvml(db: &Path, scenario: &Scenario) -> Self {
        let lib = fake_nvml_lib();
        let (key, value) = scenario.env();
        Self::start_with_env(
            db,
            &[
                "--sample-interval",
                "100ms",
                "--nvml-lib",
                lib.to_str().expect("library path is UTF-8"),
            ],
            &[(key, value)],
        )
    }

    fn launch(listen: &str, db: &Path, extra: &[&str], env: &[(&str, &OsStr)]) -> Self {
        // Tests run side by side: OTLP and metrics on free ports unless a test chooses.
        let mut otlp = Vec::new();
        for flag in [
            "--otlp-grpc-listen",
            "--otlp-http-listen",
            "--metrics-listen",
        ] {
            if !extra.contains(&flag) {
                otlp.extend([flag, "127.0.0.1:0"]);
            }
        }
        let mut child = Command::new(bin("runlens"))
            .args(["serve", "--listen", listen, "--db"])
            .arg(db)
            .args(otlp)
            .args(extra)
            // No real NVML in tests unless a test asks for one (a flag wins over this).
            .env("RUNLENS_NVML_LIB", "none")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn runlens serve");
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("runlens serve printed its address");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        let otlp = |label: &str| {
            line.split(label)
                .nth(1)
                .and_then(|rest| rest.split([',', ' ', ';']).next())
                .filter(|a| *a != "off")
                .map(str::to_owned)
        };
        Self {
            child: Some(child),
            addr,
            otlp_grpc: otlp("OTLP: gRPC "),
            otlp_http: otlp(", HTTP "),
            metrics: otlp("; metrics "),
            db: db.to_owned(),
            stderr: Some(stderr),
            clock_warnings_expected: false,
            _dir: None,
        }
    }

    /// Its process id (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Runs `example-agent` against this sidecar (`runs` runs, 1 ms steps, every third
    /// run failing) as a separate process, and checks it succeeded.
    pub fn run_example_agent(&self, runs: u32) {
        let (status, stdout, stderr) = run_bin(
            "example-agent",
            &[
                "--endpoint",
                &self.endpoint(),
                "--runs",
                &runs.to_string(),
                "--step-ms",
                "1",
            ],
            Duration::from_secs(60),
        );
        assert!(
            status.success(),
            "example-agent failed:\n{stdout}\n{stderr}"
        );
    }

    /// The gRPC endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A read-only connection to the database.
    pub fn sql(&self) -> Connection {
        let conn = Connection::open_with_flags(&self.db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open database");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        conn
    }

    /// One integer from a query.
    pub fn count(&self, sql: &str) -> i64 {
        self.sql()
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Sends a signal (`INT`, `TERM`, `KILL`) and waits for the exit; returns the status
    /// and the logs. The database stays readable afterwards.
    pub fn stop_with(&mut self, signal: &str) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{signal} failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar did not exit after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let logs = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        // Every agent in these tests shares the sidecar's clock: a clock warning would be
        // a false one (tests of skewed clocks say they expect it).
        if !self.clock_warnings_expected {
            let false_alarm = logs.lines().find(|l| l.contains("clock runs"));
            assert!(
                false_alarm.is_none(),
                "a clock warning for an agent on this machine's clock: {false_alarm:?}"
            );
        }
        (status, logs)
    }

    /// Says this test's senders stamp times off the sidecar's clock on purpose, so the
    /// sidecar's clock warnings are expected (see [`Sidecar::stop_with`]).
    pub fn expect_clock_warnings(&mut self) {
        self.clock_warnings_expected = true;
    }

    /// SIGINT, and checks the exit was clean. The database stays readable afterwards.
    pub fn stop(&mut self) -> String {
        let (status, logs) = self.stop_with("INT");
        assert!(
            status.success(),
            "sidecar exited with {status}; logs:\n{logs}"
        );
        logs
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a workspace binary to completion with a timeout; returns (status, stdout, stderr).
/// Output is read while the program runs, so large outputs cannot fill a pipe and stall it.
pub fn run_bin(name: &str, args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
    let child = Command::new(bin(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => {
            let out = out.expect("collect output");
            (
                out.status,
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{name} {args:?} did not finish within {timeout:?}");
        }
    }
}

/// `runlens report --format json` over `db` (plus `extra` arguments), parsed.
pub fn report_json(db: &Path, extra: &[&str]) -> serde_json::Value {
    let db = db.to_str().expect("database path is UTF-8");
    let mut args = vec!["report", "--db", db, "--format", "json"];
    args.extend_from_slice(extra);
    let (status, stdout, stderr) = run_bin("runlens", &args, Duration::from_secs(60));
    assert!(status.success(), "runlens report failed: {stderr}");
    serde_json::from_str(&stdout).expect("report JSON")
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

/// An HTTP/1.1 answer: status, headers (lowercase names) and body.
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// POSTs `body` to `http://{addr}{path}` over a plain TCP connection (no client library:
/// the request is exactly what is written here), with the given extra headers.
pub fn http_post(addr: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpAnswer {
    http_request("POST", addr, path, headers, body)
}

/// GETs `http://{addr}{path}` likewise.
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    http_request("GET", addr, path, headers, b"")
}

fn http_request(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write head");
    // A server may answer (413) before reading all of a large body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    HttpAnswer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
}
