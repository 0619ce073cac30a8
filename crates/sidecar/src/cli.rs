//! Command-line definitions.
//!
//! Settings — where the database is, the output format, the NVML library and cgroup
//! directory, everything `serve` takes, the report's OOM threshold — each have a
//! `RUNLENS_*` environment variable, named in [`env`](mod@env); a flag given on the command line
//! wins over the variable, which wins over the default. Choices that belong to one
//! invocation — what a report covers (`--run`, `--since`, `--name`, `--out`), what
//! `doctor` checks (`--pid`, `--no-gpu`), benchmark and stress sizes, the SQL of `query` —
//! are flags only: a variable left in the environment must not silently narrow a report
//! or a check.

use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::net::ListenAddr;
use crate::net::parse_listen_addr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The environment variables behind the settings' flags.
pub mod env {
    /// `--db` of `serve`, `query`, `report` and `doctor`.
    pub const DB: &str = "RUNLENS_DB";
    /// `--format` of `snapshot`, `query` and `doctor`.
    pub const FORMAT: &str = "RUNLENS_FORMAT";
    /// `--nvml-lib` of every command that samples.
    pub const NVML_LIB: &str = "RUNLENS_NVML_LIB";
    /// `--cgroup-root` of every command that samples.
    pub const CGROUP_ROOT: &str = "RUNLENS_CGROUP_ROOT";
    /// `--gpus` of every command that samples.
    pub const GPUS: &str = "RUNLENS_GPUS";
    /// `serve --listen` (several addresses separated by commas).
    pub const LISTEN: &str = "RUNLENS_LISTEN";
    /// `serve --socket-mode`.
    pub const SOCKET_MODE: &str = "RUNLENS_SOCKET_MODE";
    /// `serve --sample-interval`.
    pub const SAMPLE_INTERVAL: &str = "RUNLENS_SAMPLE_INTERVAL";
    /// `serve --active-sample-interval`.
    pub const ACTIVE_SAMPLE_INTERVAL: &str = "RUNLENS_ACTIVE_SAMPLE_INTERVAL";
    /// Set (to anything): check the arguments and exit 0 without running the command (the
    /// docs' test uses it on every `runlens` command the book shows).
    pub const CHECK_ARGS: &str = "RUNLENS_CHECK_ARGS";
    /// `--max-inflight-mib` of `serve`.
    pub const MAX_INFLIGHT_MIB: &str = "RUNLENS_MAX_INFLIGHT_MIB";
    /// `--clock-skew-correction` of `serve`.
    pub const CLOCK_SKEW_CORRECTION: &str = "RUNLENS_CLOCK_SKEW_CORRECTION";
    /// `serve --durability`.
    pub const DURABILITY: &str = "RUNLENS_DURABILITY";
    /// `serve --max-db-mib`.
    pub const MAX_DB_MIB: &str = "RUNLENS_MAX_DB_MIB";
    /// `serve --retain`.
    pub const RETAIN: &str = "RUNLENS_RETAIN";
    /// `serve --retain-full`.
    pub const RETAIN_FULL: &str = "RUNLENS_RETAIN_FULL";
    /// `serve --token-file`.
    pub const TOKEN_FILE: &str = "RUNLENS_TOKEN_FILE";
    /// `top --endpoint`: the sidecar to watch (the clients' variable).
    pub const ENDPOINT: &str = "RUNLENS_ENDPOINT";
    /// `top --token`: the clients' variable.
    pub const TOKEN: &str = "RUNLENS_TOKEN";
    /// `top --ca-file`: the clients' variable.
    pub const CA_FILE: &str = "RUNLENS_CA_FILE";
    /// `serve --metrics-auth`.
    pub const METRICS_AUTH: &str = "RUNLENS_METRICS_AUTH";
    /// `serve --allow-insecure`.
    pub const ALLOW_INSECURE: &str = "RUNLENS_ALLOW_INSECURE";
    /// `serve --health-listen`.
    pub const HEALTH_LISTEN: &str = "RUNLENS_HEALTH_LISTEN";
    /// `serve --max-sessions`.
    pub const MAX_SESSIONS: &str = "RUNLENS_MAX_SESSIONS";
    /// `serve --worker-threads`.
    pub const WORKER_THREADS: &str = "RUNLENS_WORKER_THREADS";
    /// `serve --hello-timeout`.
    pub const HELLO_TIMEOUT: &str = "RUNLENS_HELLO_TIMEOUT";
    /// `serve --max-message-mib`.
    pub const MAX_MESSAGE_MIB: &str = "RUNLENS_MAX_MESSAGE_MIB";
    /// `serve --tls-cert`.
    pub const TLS_CERT: &str = "RUNLENS_TLS_CERT";
    /// `serve --tls-key`.
    pub const TLS_KEY: &str = "RUNLENS_TLS_KEY";
    /// `serve --tls-client-ca`.
    pub const TLS_CLIENT_CA: &str = "RUNLENS_TLS_CLIENT_CA";
    /// `serve --http-idle-timeout`.
    pub const HTTP_IDLE_TIMEOUT: &str = "RUNLENS_HTTP_IDLE_TIMEOUT";
    /// `serve --client-timeout`.
    pub const CLIENT_TIMEOUT: &str = "RUNLENS_CLIENT_TIMEOUT";
    /// `report --oom-threshold-mib`.
    pub const OOM_THRESHOLD_MIB: &str = "RUNLENS_OOM_THRESHOLD_MIB";
    /// `--log-format` of every command.
    pub const LOG_FORMAT: &str = "RUNLENS_LOG_FORMAT";
    /// `serve --otlp-grpc-listen`.
    pub const OTLP_GRPC_LISTEN: &str = "RUNLENS_OTLP_GRPC_LISTEN";
    /// `serve --otlp-http-listen`.
    pub const OTLP_HTTP_LISTEN: &str = "RUNLENS_OTLP_HTTP_LISTEN";
    /// `serve --otlp-root-timeout`.
    pub const OTLP_ROOT_TIMEOUT: &str = "RUNLENS_OTLP_ROOT_TIMEOUT";
    /// `serve --otlp-export`.
    pub const OTLP_EXPORT: &str = "RUNLENS_OTLP_EXPORT";
    /// `serve --otlp-export-protocol`.
    pub const OTLP_EXPORT_PROTOCOL: &str = "RUNLENS_OTLP_EXPORT_PROTOCOL";
    /// `serve --parquet-export`.
    pub const PARQUET_EXPORT: &str = "RUNLENS_PARQUET_EXPORT";
    /// `serve --parquet-export-interval`.
    pub const PARQUET_EXPORT_INTERVAL: &str = "RUNLENS_PARQUET_EXPORT_INTERVAL";
    /// `export parquet --source`.
    pub const SOURCE: &str = "RUNLENS_SOURCE";
    /// `serve --metrics-listen`.
    pub const METRICS_LISTEN: &str = "RUNLENS_METRICS_LISTEN";
    /// `serve --reflection`.
    pub const REFLECTION: &str = "RUNLENS_REFLECTION";
    /// The log filter (`RUNLENS_LOG=debug`, or per module: `runlens=debug,tonic=info`);
    /// an environment variable only.
    pub const LOG: &str = "RUNLENS_LOG";
}

/// runlens: a GPU-aware resource sidecar for LLM agents.
///
/// Agents open runs and spans over gRPC; runlens attaches a resource snapshot (GPUs, CPU,
/// RAM) to every boundary and stores everything in SQLite for you to query.
#[derive(Debug, Parser)]
#[command(name = "runlens", version = crate::build_info::LONG, propagate_version = true)]
pub struct Cli {
    /// How log lines on stderr are written: `text` for people, `json` (one object a line:
    /// timestamp, level, target, message and every field) for log pipelines.
    #[arg(long, global = true, env = env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour on a terminal).
    Text,
    /// One JSON object a line, fields at the top level.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar: the gRPC server, the background sampler and the SQLite writer.
    Serve(Box<ServeArgs>),
    /// Take one resource sample and print it (like nvidia-smi and free together).
    Snapshot(SnapshotArgs),
    /// Run one read-only SQL statement against the database and print the rows.
    Query(QueryArgs),
    /// Check what runlens can see (NVML, GPUs, cgroup limits, agent PIDs) and say how to
    /// fix what it cannot. Exits non-zero when a check fails.
    Doctor(DoctorArgs),
    /// Measure runlens itself: the cost of one sample, or of an idle sidecar.
    Bench(BenchArgs),
    /// Put synthetic load on this machine (CPU or RAM) to check that snapshots see it.
    Stress(StressArgs),
    /// Explain slow and failed steps by resource pressure: latency by step, the machine
    /// at span start, correlations, pressure vs no pressure, OOM risk.
    Report(ReportArgs),
    /// Write the history as Parquet files for the engines a fleet already runs (DuckDB,
    /// Spark, ClickHouse, Trino/Athena, BigQuery), to a directory or a bucket.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Merge the databases of many sidecars (e.g. copied out of pods with `kubectl cp`)
    /// into one, keeping each row's origin, so SQL and reports run over a fleet's history.
    Merge(MergeArgs),
    /// Take a consistent copy of a database while `serve` writes to it (SQLite's online
    /// backup), checked with integrity_check before it is put in place.
    Backup(BackupArgs),
    /// The live view: GPUs and host, the agents, their open runs and steps with what each
    /// has cost so far, and the latest failures (q quits, ? helps). Not on a terminal, it
    /// prints one frame as text and exits.
    Top(TopArgs),
}

/// `runlens top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The sidecar to watch: http://HOST:PORT, https://HOST:PORT or unix:///path.
    #[arg(long, env = env::ENDPOINT, default_value = "http://127.0.0.1:50551")]
    pub endpoint: String,
    /// Sample this machine directly instead (no sidecar: GPUs and host only, like nvitop).
    #[arg(long)]
    pub local: bool,
    /// How often the screen is refreshed.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// The sidecar's token (`serve --token-file`), when it asks for one.
    #[arg(long, env = env::TOKEN, hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate that signed the sidecar's TLS certificate (https:// endpoints).
    #[arg(long, env = env::CA_FILE, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// GPU free memory below this marks a failed run likely OOM, as in `runlens report`.
    #[arg(long, env = env::OOM_THRESHOLD_MIB, value_name = "MIB",
          default_value_t = crate::store::DEFAULT_OOM_THRESHOLD_MIB)]
    pub oom_threshold_mib: u64,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

/// `runlens backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The database to copy.
    #[arg(long, env = env::DB, default_value = "./runlens.db")]
    pub db: PathBuf,
    /// Where the copy goes (must not exist).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

/// `runlens export`.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Write runs, spans (with the machine at their start and end), snapshots, GPU and
    /// process samples, events and agents as hive-partitioned Parquet files:
    /// `<table>/date=YYYY-MM-DD/source=<pod>/part-….parquet`. Exporting the same window
    /// again replaces the same files.
    Parquet(ParquetExportArgs),
}

/// `runlens export parquet`.
#[derive(Debug, Args)]
pub struct ParquetExportArgs {
    /// The database to export.
    #[arg(long, env = env::DB, default_value = "./runlens.db")]
    pub db: PathBuf,
    /// Where: a directory, file:///dir, s3://bucket/prefix, gs://bucket/prefix or
    /// az://container/prefix (credentials from the cloud's standard environment variables;
    /// AWS_ENDPOINT and AWS_ALLOW_HTTP=true for S3-compatible stores).
    #[arg(long, value_name = "URL")]
    pub out: String,
    /// Only the last stretch of time, e.g. 1h, 30m, 7d [default: everything].
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Only up to this long ago, or up to this moment (RFC 3339) [default: now].
    #[arg(long, value_parser = parse_until, value_name = "AGO|TIME")]
    pub until: Option<Until>,
    /// The `source=` partition of rows this database's own sidecar wrote [default: the
    /// pod or service its latest start recorded (OTEL_RESOURCE_ATTRIBUTES), else the host
    /// name]. Rows merged from other pods keep their own.
    #[arg(long, env = env::SOURCE, value_name = "NAME")]
    pub source: Option<String>,
}

/// `runlens merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The merged database (created if missing; more inputs can be merged into it later).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// The databases to merge, each at this runlens's schema version.
    #[arg(required = true, value_name = "DB")]
    pub inputs: Vec<PathBuf>,
}

/// `runlens report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// SQLite database to read.
    #[arg(long, env = env::DB, default_value = "./runlens.db")]
    pub db: PathBuf,
    /// Read Parquet files written by `runlens export parquet` or `serve --parquet-export`
    /// instead of a database: a directory or a bucket URL (s3://, gs://, az://), any
    /// number of pods; each pod is a `--by source` group.
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    pub from: Option<String>,
    /// Only this run.
    #[arg(long)]
    pub run: Option<String>,
    /// Only the last stretch of time, e.g. 1h, 30m, 7d [default: everything].
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Only up to this long ago (e.g. 1h: everything but the last hour), or up to this
    /// moment (an RFC 3339 time such as 2026-12-01T12:00:00Z) [default: now].
    #[arg(long, value_parser = parse_until, value_name = "AGO|TIME")]
    pub until: Option<Until>,
    /// List every run in the JSON's OOM section (each GPU's `runs_below`,
    /// `likely_oom_runs`, `likely_oom_killed_runs`); by default the first 100 of each are
    /// listed and a `…_count` says how many there are.
    #[arg(long)]
    pub all_ids: bool,
    /// Every section per agent (`client`) or per pod of a merged database (`source`),
    /// busiest first.
    #[arg(long, value_enum, value_name = "client|source")]
    pub by: Option<ReportBy>,
    /// Only spans of this name.
    #[arg(long)]
    pub name: Option<String>,
    /// GPU free memory below this many MiB counts as pressure ("OOM soon").
    #[arg(long, env = env::OOM_THRESHOLD_MIB,
          default_value_t = crate::store::DEFAULT_OOM_THRESHOLD_MIB)]
    pub oom_threshold_mib: u64,
    /// Output format: table, json or html.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What `report --by` splits by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportBy {
    /// Per agent (client).
    Client,
    /// Per pod (`runlens merge` source).
    Source,
}

/// Report output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Text for a 100-column terminal.
    Table,
    /// Stable JSON for scripts and CI.
    Json,
    /// One self-contained HTML page with SVG charts.
    Html,
}

/// The end of a report's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// This long before now.
    Ago(Duration),
    /// This moment, Unix nanoseconds.
    At(i64),
}

fn parse_until(text: &str) -> Result<Until, String> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(Until::Ago(d));
    }
    let at = humantime::parse_rfc3339_weak(text).map_err(|_| {
        format!("{text:?} is neither a duration (1h, 30m) nor a time (2026-12-01T12:00:00Z)")
    })?;
    let ns = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{text} is before 1970"))?
        .as_nanos();
    Ok(Until::At(i64::try_from(ns).unwrap_or(i64::MAX)))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as 1h, 30m or 7d"))
}

/// `runlens stress`.
#[derive(Debug, Args)]
pub struct StressArgs {
    /// Which load.
    #[command(subcommand)]
    pub command: StressCommand,
}

/// The loads.
#[derive(Debug, Subcommand)]
pub enum StressCommand {
    /// Keep CPU threads busy computing primes.
    Cpu {
        /// Busy threads [default: one per CPU].
        #[arg(long)]
        threads: Option<usize>,
        /// How long, in seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Allocate memory, touch every page so it is resident, and hold it.
    Ram {
        /// How much, in MiB.
        #[arg(long)]
        mib: usize,
        /// How long to hold it, in seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

/// `runlens bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time one sample, periodic (every figure read) and fresh (3 ms after another, as at
    /// a run's end): host only, then host + GPUs (use --nvml-lib with the fake library and
    /// a scenario to measure GPU sampling without a GPU).
    Sample(SampleBenchArgs),
    /// Run `runlens serve` with no clients and report its CPU and resident memory.
    Idle(IdleArgs),
    /// Start `runlens serve` on loopback with a fresh database, drive it with the real
    /// client, and report throughput, acknowledgement latency, client cost and memory.
    Ingest(IngestArgs),
    /// Build a synthetic history (with or without a planted effect) and time
    /// `runlens report` on it.
    Report(ReportBenchArgs),
    /// Start `runlens serve` with a fresh database, send it OpenTelemetry traces over
    /// OTLP/gRPC in batches, and report spans/s stored with both samples, and memory.
    Otlp(OtlpBenchArgs),
    /// Drive `runlens serve` with the example agent's shape at a steady rate and report the
    /// CPU per span of the sidecar and of the agent's process, wake-ups, fresh samples and
    /// acknowledgement latency.
    Agent(AgentBenchArgs),
    /// Time a Prometheus scrape: the exposition of many GPUs and span names.
    Metrics(MetricsBenchArgs),
    /// Drain an OTLP export outbox of a synthetic history to a local receiver.
    Export(ExportBenchArgs),
    /// Time what the Rust client's `tracing` layer adds to a span, against a bare
    /// `tracing-subscriber` registry, with the spans stored by a real sidecar.
    Tracing(TracingBenchArgs),
    /// Leave `runlens serve` running with eight fake GPUs at 100 ms sampling, runlens.v1 and
    /// OTLP clients and small retention windows, printing memory, database size and
    /// acknowledgement latency over time, and check that nothing was lost.
    Soak(SoakBenchArgs),
}

/// `runlens bench soak`.
#[derive(Debug, Args)]
pub struct SoakBenchArgs {
    /// How long to run, in minutes (fractions allowed: 0.5 is 30 s).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Senders: the even-numbered ones are runlens.v1 clients, the odd ones OTLP/gRPC senders.
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// Spans per second, all senders together.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Fake GPUs sampled.
    #[arg(long, default_value_t = 8)]
    pub gpus: u32,
    /// `serve --retain` during the soak (small, so that pruning runs all the time).
    #[arg(long, default_value = "1m")]
    pub retain: String,
    /// `serve --retain-full` during the soak.
    #[arg(long, default_value = "20s")]
    pub retain_full: String,
    /// How often to print a line of figures (at least six lines are printed).
    #[arg(long, default_value = "30s", value_parser = parse_client_timeout)]
    pub report_every: Duration,
    /// The fake NVML library (default: librunlens_fake_nvml.so beside this binary).
    #[arg(long, value_name = "PATH")]
    pub nvml_lib: Option<PathBuf>,
}

/// `runlens bench tracing`.
#[derive(Debug, Args)]
pub struct TracingBenchArgs {
    /// Spans a round (tasks of one task span and 99 step spans).
    #[arg(long, default_value_t = 100_000)]
    pub spans: u64,
    /// Rounds of each (bare and with the layer, alternating); the median is printed.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
}

/// `runlens bench export`.
#[derive(Debug, Args)]
pub struct ExportBenchArgs {
    /// Spans in the synthetic history (runs of 10 spans).
    #[arg(long, default_value_t = 200_000)]
    pub spans: u64,
}

/// `runlens bench metrics`.
#[derive(Debug, Args)]
pub struct MetricsBenchArgs {
    /// GPUs in the sample.
    #[arg(long, default_value_t = 8)]
    pub gpus: u32,
    /// Distinct span names counted (names beyond 200 are counted as `other`).
    #[arg(long, default_value_t = 1000)]
    pub names: u32,
    /// Scrapes to time.
    #[arg(long, default_value_t = 200)]
    pub scrapes: usize,
}

/// `runlens bench agent`.
#[derive(Debug, Args)]
pub struct AgentBenchArgs {
    /// Spans per second (a task is three spans); several, separated by commas, are measured
    /// one after the other, each against a fresh sidecar.
    #[arg(long, value_delimiter = ',', default_value = "400")]
    pub rate: Vec<u64>,
    /// Seconds to measure at each rate.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// The client's linger, ms (default: the client's, RUNLENS_LINGER_MS or 500).
    #[arg(long, value_name = "MS")]
    pub linger_ms: Option<u64>,
    /// The sidecar's --active-sample-interval (default: its own).
    #[arg(long, value_parser = parse_interval)]
    pub active_sample_interval: Option<Duration>,
    /// Each task's llm_call asks for fresh samples at its start and end (the example agent
    /// does; off by default, as in most agents).
    #[arg(long)]
    pub fresh: bool,
    /// Also run the seed's psutil + JSON-lines emitter at the same rate with this Python
    /// (it needs psutil), for comparison.
    #[arg(long, value_name = "PYTHON")]
    pub seed_python: Option<PathBuf>,
    /// How the agent reaches the sidecar: `unix` (a Unix socket, as in the agent's pod:
    /// `unix:///run/runlens/runlens.sock`) or `tcp` (loopback, as on a laptop's default
    /// `127.0.0.1:50551`).
    #[arg(long, value_enum, default_value_t = BenchTransport::Tcp)]
    pub transport: BenchTransport,
    /// Start each sidecar with this many ended runs (ten spans each) waiting in its OTLP
    /// export outbox and `--otlp-export` to a second `runlens serve`: acknowledgements are
    /// measured while the exporter drains the backlog.
    #[arg(long, value_name = "RUNS")]
    pub export_backlog: Option<u64>,
}

/// How `runlens bench agent` connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchTransport {
    /// A Unix socket in the benchmark's temporary directory.
    Unix,
    /// TCP on loopback.
    Tcp,
}

/// `runlens bench otlp`.
#[derive(Debug, Args)]
pub struct OtlpBenchArgs {
    /// Spans to send.
    #[arg(long, default_value_t = 500_000)]
    pub spans: u64,
    /// Spans per export (the OpenTelemetry SDKs' default batch is 512).
    #[arg(long, default_value_t = 512)]
    pub batch: u64,
    /// Spans per trace (one root, the rest its children; every fourth child an LLM call
    /// with token counts).
    #[arg(long, default_value_t = 16)]
    pub trace_spans: u64,
    /// Exports in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

/// `runlens bench report`.
#[derive(Debug, Args)]
pub struct ReportBenchArgs {
    /// Spans in the generated history.
    #[arg(long, default_value_t = 1_000_000)]
    pub spans: u64,
    /// Where to build it [default: a temporary file]; must not exist. Kept afterwards.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// `planted`: llm_call is slower when GPU free memory is low, and runs that end out of
    /// GPU memory fail; `none`: durations and failures independent of resources.
    #[arg(long, value_enum, default_value_t = Effect::Planted)]
    pub effect: Effect,
    /// Only build the database; do not time the report.
    #[arg(long)]
    pub build_only: bool,
    /// Also export the history as Parquet (`runlens export parquet`, timed, to a
    /// temporary directory) and time `runlens report --from` on the files, alternating
    /// with the report over the database; their JSON must be equal.
    #[arg(long, conflicts_with = "build_only")]
    pub parquet: bool,
}

/// Whether the generated history hides a resource effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Effect {
    /// llm_call slower with less GPU free memory; OOM failures.
    Planted,
    /// No relation between resources and durations or failures.
    None,
}

/// `runlens bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Spans to send at full speed (each a start and an end).
    #[arg(long, default_value_t = 1_000_000)]
    pub spans: u64,
    /// Concurrent clients (each its own session), sharing the spans.
    #[arg(long, default_value_t = 1)]
    pub clients: u64,
    /// Database to create [default: a temporary file]; must not exist.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Spans per second for the steady phase that measures acknowledgement latency.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seconds of the steady phase (0 skips it).
    #[arg(long, default_value_t = 5)]
    pub steady_seconds: u64,
}

/// `runlens bench sample`.
#[derive(Debug, Args)]
pub struct SampleBenchArgs {
    /// Samples to time per configuration (each 205 ms apart; a fresh one 3 ms after an
    /// untimed one).
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

/// `runlens bench idle`.
#[derive(Debug, Args)]
pub struct IdleArgs {
    /// How long to measure, in seconds (after 2 s of start-up).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// The sidecar's sample interval.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub sample_interval: Duration,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

/// `runlens doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Output format: table or json.
    #[arg(long, env = env::FORMAT, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Check that this agent process is visible (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// This machine is not expected to have a GPU: a missing NVML is a warning, not a failure.
    #[arg(long)]
    pub no_gpu: bool,
    /// The sidecar's database, for the export check (skipped when there is none).
    #[arg(long, env = env::DB, default_value = "./runlens.db")]
    pub db: PathBuf,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

/// The `--nvml-lib` value that turns GPU sampling off.
pub const NVML_OFF: &str = "none";

/// Where resource figures come from.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Path of the NVML library to load [default: the system's libnvidia-ml.so.1], or
    /// `none` to sample without GPUs. A path that does not exist is refused (exit 64) by
    /// `serve` and `snapshot`; `doctor` explains it instead.
    #[arg(long, env = env::NVML_LIB, value_name = "PATH")]
    pub nvml_lib: Option<PathBuf>,
    /// Read container limits from this cgroup directory instead of this process's own
    /// (a v2 directory, or a v1 mount holding memory/ and cpu/).
    #[arg(long, env = env::CGROUP_ROOT, value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,
    /// Sample and store only these GPUs: indexes or UUIDs, comma-separated (e.g. the pod's
    /// own, as NVIDIA_VISIBLE_DEVICES lists them) [default: all].
    #[arg(long, env = env::GPUS, value_name = "LIST", value_delimiter = ',',
          value_parser = parse_gpu)]
    pub gpus: Vec<String>,
}

impl ProbeArgs {
    /// The GPUs `--gpus` selects.
    pub fn gpu_selection(&self) -> probe_core::GpuSelection {
        // Each item already passed `parse_gpu`, so the list parses; "all" is what an
        // empty list means anyway.
        probe_core::GpuSelection::parse(&self.gpus).unwrap_or_default()
    }
}

/// One item of `--gpus`, checked at once (an index, a `GPU-` UUID, or `all`).
fn parse_gpu(text: &str) -> Result<String, String> {
    probe_core::GpuSelection::parse(&[text]).map(|_| text.trim().to_owned())
}

/// An address to listen on, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Listen here (port 0: any free port, printed at start).
    On(SocketAddr),
    /// Do not listen.
    Off,
}

fn parse_listener(text: &str) -> Result<Listener, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(Listener::Off);
    }
    text.parse()
        .map(Listener::On)
        .map_err(|e| format!("{e}; write host:port such as 127.0.0.1:4317, or off"))
}

fn parse_socket_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err("write permission bits in octal, e.g. 0660 or 0600".into()),
    }
}

/// OTLP transports for export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportProtocol {
    /// OTLP/gRPC (the receiver's port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (the receiver's port 4318, `/v1/traces`).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// A feature turned on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// How hard each commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Commits survive a crash of runlens; an OS crash or power loss may take the last
    /// second of commits (SQLite WAL, synchronous=NORMAL). Fast.
    Normal,
    /// Every commit is synced to disk before it is acknowledged (synchronous=FULL).
    Full,
}

/// `runlens serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where agents reach runlens.v1: host:port (port 0 picks a free port, printed at
    /// start) or unix:///path/to.sock (a Unix socket, e.g. in a pod's shared emptyDir).
    /// Repeat the flag (or separate with commas) to listen on several, e.g. TCP for the
    /// probes and a socket for the agent.
    #[arg(long, env = env::LISTEN, default_value = "127.0.0.1:50551",
          value_parser = parse_listen_addr, value_delimiter = ',')]
    pub listen: Vec<ListenAddr>,
    /// Permissions of the Unix sockets of --listen, in octal (0660: the owner and its group,
    /// so an agent container sharing the group can connect).
    #[arg(long, env = env::SOCKET_MODE, default_value = "0660", value_parser = parse_socket_mode)]
    pub socket_mode: u32,
    /// SQLite database to write (created if missing).
    #[arg(long, env = env::DB, default_value = "./runlens.db")]
    pub db: PathBuf,
    /// How often to store a background snapshot when nothing is going on, e.g. 1s, 500ms,
    /// 1m (at least 50ms). Twice this is the matching window: a run or span boundary, metric
    /// or event gets the stored sample nearest its own time if one is at most that far.
    #[arg(long, env = env::SAMPLE_INTERVAL, default_value = "1s", value_parser = parse_interval)]
    pub sample_interval: Duration,
    /// How often to store a snapshot while work is in flight (runs open, or data received in
    /// the last 10 s), so boundaries find a sample near their own time; at most
    /// --sample-interval.
    #[arg(long, env = env::ACTIVE_SAMPLE_INTERVAL, default_value = "250ms",
        value_parser = parse_interval)]
    pub active_sample_interval: Duration,
    /// Match the boundaries of a client whose clock is known to be off by more than the
    /// matching window (estimated from its messages' times against their arrival) at its
    /// times corrected by that offset. Without it they get no snapshots, never another
    /// moment's; either way the sidecar warns once per such client and the stored times
    /// are the client's own.
    #[arg(long, env = env::CLOCK_SKEW_CORRECTION)]
    pub clock_skew_correction: bool,
    /// Memory the front doors may hold in flight, MiB: each request is charged about four
    /// times its size until its rows are committed. Over it, OTLP answers 503 with
    /// Retry-After (HTTP) or UNAVAILABLE (gRPC), which senders retry, and runlens.v1
    /// sessions wait; nothing accepted is lost. The default keeps a sidecar under the
    /// manifests' 256 MiB limit.
    #[arg(long, env = env::MAX_INFLIGHT_MIB, default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4095))]
    pub max_inflight_mib: u32,
    /// How hard each commit is pushed to disk.
    #[arg(long, env = env::DURABILITY, value_enum, default_value_t = Durability::Normal)]
    pub durability: Durability,
    /// Keep the database under this many MiB. Above 90% of it the oldest runs and samples
    /// are pruned, whatever --retain says, until it is under 80% (a `storage.pruned`
    /// system event records it). Only when nothing more can go does runlens stop taking
    /// new data (clients keep it in their buffers) and report NOT_SERVING. The write-ahead
    /// log beside the database (about 8 MiB at most) is not counted.
    #[arg(long, env = env::MAX_DB_MIB, value_name = "MIB")]
    pub max_db_mib: Option<u64>,
    /// Keep runs, their spans and events, and samples this long after they end, e.g. 14d,
    /// 30d, 12h (at least 10s). Older data is pruned at start and then continuously, in small
    /// steps between writes.
    #[arg(long, env = env::RETAIN, default_value = "14d", value_parser = parse_retention)]
    pub retain: Duration,
    /// Keep every periodic sample this long; older ones are thinned to each minute's worst
    /// (least GPU free memory per GPU, busiest CPU, least RAM and cgroup headroom), so peaks
    /// and dips survive. At least 10s, at most --retain.
    #[arg(long, env = env::RETAIN_FULL, default_value = "1h", value_parser = parse_retention)]
    pub retain_full: Duration,
    /// Runs a session client left open are ended as failed when the client is gone: at
    /// once when its process exits (PID visible here), else after its session has stayed
    /// closed this long, e.g. 10m, 1h.
    #[arg(long, env = env::CLIENT_TIMEOUT, default_value = "10m", value_parser = parse_client_timeout)]
    pub client_timeout: Duration,
    /// Address for OpenTelemetry traces over gRPC (OTLP `TraceService/Export`; also served
    /// on --listen), or `off`.
    #[arg(long, env = env::OTLP_GRPC_LISTEN, default_value = "127.0.0.1:4317", value_parser = parse_listener)]
    pub otlp_grpc_listen: Listener,
    /// Address for OpenTelemetry traces over HTTP (`POST /v1/traces`, protobuf or JSON,
    /// gzip or not), or `off`.
    #[arg(long, env = env::OTLP_HTTP_LISTEN, default_value = "127.0.0.1:4318", value_parser = parse_listener)]
    pub otlp_http_listen: Listener,
    /// An OpenTelemetry trace whose root span has not arrived this long after its last span
    /// ended gets its run ended as failed ("root span never received"), e.g. 10m, 1h.
    #[arg(long, env = env::OTLP_ROOT_TIMEOUT, default_value = "10m", value_parser = parse_client_timeout)]
    pub otlp_root_timeout: Duration,
    /// Export every ended run as an OpenTelemetry trace to this OTLP/gRPC receiver (a
    /// Collector, Jaeger, Tempo, Phoenix, another runlens), e.g. http://collector:4317,
    /// from a durable outbox: nothing is lost while it is down.
    #[arg(long, env = env::OTLP_EXPORT, value_name = "URL")]
    pub otlp_export: Option<String>,
    /// How `--otlp-export` reaches its receiver.
    #[arg(long, env = env::OTLP_EXPORT_PROTOCOL, value_enum, default_value_t = ExportProtocol::Grpc)]
    pub otlp_export_protocol: ExportProtocol,
    /// Write the history as Parquet files to this directory or bucket (s3://, gs://,
    /// az://), as `runlens export parquet` does, every --parquet-export-interval: what is
    /// new since the last export, from a cursor kept in the database (retention keeps
    /// what is not written yet; a retried interval replaces its own files).
    #[arg(long, env = env::PARQUET_EXPORT, value_name = "URL")]
    pub parquet_export: Option<String>,
    /// How often --parquet-export writes.
    #[arg(long, env = env::PARQUET_EXPORT_INTERVAL, default_value = "60s",
          value_parser = parse_client_timeout)]
    pub parquet_export_interval: Duration,
    /// Address for Prometheus `/metrics` (OpenMetrics or text 0.0.4), or `off`.
    #[arg(long, env = env::METRICS_LISTEN, default_value = "127.0.0.1:9464", value_parser = parse_listener)]
    pub metrics_listen: Listener,
    /// Serve gRPC server reflection (v1 and v1alpha) beside runlens.v1, so that grpcurl
    /// and other tools list, describe and call every rpc without the .proto files.
    #[arg(long, env = env::REFLECTION, value_enum, default_value_t = Switch::On)]
    pub reflection: Switch,
    /// A file holding the bearer token every caller must send (`authorization: Bearer
    /// <token>`) to runlens.v1, OTLP gRPC and HTTP, and /metrics with --metrics-auth.
    /// Health checks stay open. At least 16 printable characters; surrounding white space
    /// is ignored.
    #[arg(long, env = env::TOKEN_FILE, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain for TLS on every TCP listener except --health-listen
    /// (Kubernetes gRPC probes speak plain HTTP/2). Reloaded when the file changes (cert-manager
    /// rotations), without a restart. Needs --tls-key.
    #[arg(long, env = env::TLS_CERT, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = env::TLS_KEY, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates for mutual TLS: clients must present a certificate signed by one
    /// of them. Reloaded like --tls-cert.
    #[arg(long, env = env::TLS_CLIENT_CA, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Ask /metrics scrapes for the token too (Prometheus: `authorization: {credentials_file:
    /// ...}`). Off by default: metrics are read-only.
    #[arg(long, env = env::METRICS_AUTH, value_enum, default_value_t = Switch::Off)]
    pub metrics_auth: Switch,
    /// Accept data on a TCP address other than loopback with neither a token (--token-file)
    /// nor TLS (--tls-cert).
    /// Without it, such a listener is refused: anyone who can reach it could write and read.
    #[arg(long, env = env::ALLOW_INSECURE)]
    pub allow_insecure: bool,
    /// Address serving only the gRPC health service (grpc.health.v1), never behind the
    /// token: for Kubernetes probes when runlens.v1 listens on a socket or loopback only.
    /// `off` by default.
    #[arg(long, env = env::HEALTH_LISTEN, default_value = "off", value_parser = parse_listener)]
    pub health_listen: Listener,
    /// Most runlens.v1 sessions open at once; the next is refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = env::MAX_SESSIONS, default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_sessions: u32,
    /// A session that sends no hello this long after opening is closed, e.g. 10s.
    #[arg(long, env = env::HELLO_TIMEOUT, default_value = "10s", value_parser = parse_client_timeout)]
    pub hello_timeout: Duration,
    /// An HTTP connection (OTLP/HTTP, /metrics) that sends no request, or not a request's
    /// headers, for this long is closed, e.g. 30s, 2m.
    #[arg(long, env = env::HTTP_IDLE_TIMEOUT, default_value = "30s", value_parser = parse_client_timeout)]
    pub http_idle_timeout: Duration,
    /// Largest message accepted, in MiB: a runlens.v1 or OTLP/gRPC message after
    /// decompression, and an OTLP/HTTP body.
    #[arg(long, env = env::MAX_MESSAGE_MIB, default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_message_mib: u32,
    /// Threads of the async runtime (gRPC, OTLP, sessions; the database writer and the
    /// sampler have their own). Default: 1 on machines of up to 2 CPUs, else 2. One thread
    /// saves a third of the wake-ups at agent rates; more help only many clients at
    /// saturation on a large machine.
    #[arg(long, env = env::WORKER_THREADS,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub worker_threads: Option<u16>,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

impl ServeArgs {
    /// The TLS files, when TLS is on.
    pub fn tls_files(&self) -> Option<crate::net::tls::TlsFiles> {
        Some(crate::net::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }
}

/// Output format for data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
    /// Comma-separated values (`query` only).
    Csv,
}

/// `runlens snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Output format: table or json.
    #[arg(long, env = env::FORMAT, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

/// `runlens query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// SQLite database to read.
    #[arg(long, env = env::DB, default_value = "./runlens.db")]
    pub db: PathBuf,
    /// Output format.
    #[arg(long, env = env::FORMAT, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Widest table cell, in characters; longer values are cut with `…` and the row count
    /// says so. 0 never cuts. CSV and JSON always print whole values.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub max_width: usize,
    /// One SQL statement that only reads, e.g. "select * from span_resources limit 5".
    /// May start with a `--` comment.
    #[arg(allow_hyphen_values = true, value_parser = parse_sql)]
    pub sql: String,
    /// Words after the statement (unquoted SQL, or what a misspelt flag left behind): taken
    /// here so that the statement itself is judged first, then refused with a hint.
    #[arg(hide = true, num_args = 0..)]
    pub extra: Vec<String>,
}

/// The flags of `runlens query`, for the message when one is misspelt.
const QUERY_FLAGS: [&str; 3] = ["--db", "--format", "--max-width"];

/// The statement of `runlens query`: SQL may start with a `--` comment, so a word such as
/// `--fromat` (a misspelt flag, one word, no space after the dashes) would otherwise be
/// taken for the statement and the real SQL refused as an extra argument.
fn parse_sql(text: &str) -> Result<String, String> {
    let word = text.split('=').next().unwrap_or(text);
    let looks_like_flag = word.len() > 2
        && word.starts_with("--")
        && word[2..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !looks_like_flag {
        return Ok(text.to_owned());
    }
    let nearest = QUERY_FLAGS
        .iter()
        .min_by_key(|flag| edit_distance(flag, word))
        .filter(|flag| edit_distance(flag, word) <= 2);
    let hint = nearest.map_or_else(String::new, |flag| format!(" (did you mean {flag}?)"));
    Err(format!(
        "{word} is not a flag of runlens query{hint}; its flags are {}, and the SQL comes \
         last, in quotes",
        QUERY_FLAGS.join(", ")
    ))
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// The shortest background sampling interval accepted.
pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as 1s, 500ms or 2m"))?;
    if d < MIN_SAMPLE_INTERVAL {
        return Err(format!(
            "{text} is shorter than the minimum of {}ms",
            MIN_SAMPLE_INTERVAL.as_millis()
        ));
    }
    Ok(d)
}

/// A retention window: at least ten seconds (shorter would prune samples that spans
/// starting now are about to be given). Below a minute it is only useful for tests and
/// `bench soak`.
fn parse_retention(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as 14d, 12h or 30m"))?;
    if d < Duration::from_secs(10) {
        return Err(format!("{text} is shorter than the minimum of 10s"));
    }
    Ok(d)
}

/// A client timeout: any duration of at least a second (shorter would end the runs of
/// clients that are only reconnecting).
fn parse_client_timeout(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as 30s, 10m or 1h"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("{text} is shorter than the minimum of 1s"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn listen_addresses_are_tcp_or_unix_sockets() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:0"),
            Ok(ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))
        );
        assert_eq!(
            parse_listen_addr("unix:///run/runlens/r.sock"),
            Ok(ListenAddr::Unix("/run/runlens/r.sock".into()))
        );
        assert_eq!(
            parse_listen_addr("unix:r.sock"),
            Ok(ListenAddr::Unix("r.sock".into()))
        );
        assert!(
            parse_listen_addr("unix://")
                .unwrap_err()
                .contains("needs a path")
        );
        assert!(parse_listen_addr("50551").unwrap_err().contains("unix:///"));
        assert_eq!(
            ListenAddr::Unix("/run/r.sock".into()).to_string(),
            "unix:///run/r.sock"
        );
        assert_eq!(parse_socket_mode("0660"), Ok(0o660));
        assert_eq!(parse_socket_mode("600"), Ok(0o600));
        assert!(parse_socket_mode("0999").is_err());
        assert!(parse_socket_mode("1777").is_err());
    }

    #[test]
    fn listeners_are_addresses_or_off() {
        assert_eq!(parse_listener("off"), Ok(Listener::Off));
        assert_eq!(
            parse_listener("0.0.0.0:4317"),
            Ok(Listener::On("0.0.0.0:4317".parse().unwrap()))
        );
        assert!(parse_listener("4317").unwrap_err().contains("or off"));
    }

    #[test]
    fn sample_interval_parses_human_durations() {
        assert_eq!(parse_interval("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_interval("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_interval("10ms").unwrap_err().contains("minimum"));
        assert!(parse_interval("soon").unwrap_err().contains("such as 1s"));
    }
}
